"""The user pipeline the benchmark times: prepare -> ``exitgym train`` -> deploy with ``infer``.

The inference benchmark deploys a policy trained the way a user trains one (a run directory of
:func:`exitgym.experiments.training.train`), loaded the way a user loads one
(:meth:`ExitInference.from_run`), on texts it was not trained on (the validation split). The
same steps give the prepare and training times, so every number in ``bench.json`` comes from
one run of the real code paths.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exitgym.data.config import DataConfig

if TYPE_CHECKING:
    from collections.abc import Iterator

    from exitgym.bench.config import BenchConfig

QUICK_SAMPLES = 60
"""Rows per split in ``--quick`` mode (tests of the benchmark itself)."""
TRAIN_RUN = "train-run"
"""Folder under ``--out`` holding the benchmark's own training run (replaced on every bench)."""


def bench_data(cfg: BenchConfig) -> DataConfig:
    """The cache the benchmark deploys: ``cfg.data``, cut to the first rows in ``--quick`` mode."""
    return replace(cfg.data, max_samples=QUICK_SAMPLES) if cfg.quick else cfg.data


def timed_prepare(cfg: BenchConfig) -> dict[str, Any]:
    """``prepare`` of the benchmark's task in the user's cache: built now, or reused."""
    from exitgym.data.prepare import PrepareConfig, prepare, prepared_dir
    from exitgym.data.tasks import load_task

    config = PrepareConfig(**asdict(bench_data(cfg)))
    task = load_task(config.task, seed=config.seed, max_samples=config.max_samples)
    existed = (prepared_dir(config, task) / "heads.json").is_file()
    tic = time.perf_counter()
    prepared = prepare(config, progress=False, verbose=False)
    return {"prepare_s": time.perf_counter() - tic, "prepare_built": not existed,
            "prepare_phases_s": dict(prepared.timings)}


@contextmanager
def _scratch_cache() -> Iterator[Path]:
    """A temporary ``$EXITGYM_CACHE`` that shares the downloaded data of the real one."""
    from exitgym.utils.paths import CACHE_ENV_VAR, cache_dir

    real = cache_dir()
    scratch = Path(tempfile.mkdtemp(prefix="exitgym-bench-cache-"))
    for shared in ("downloads", "tasks"):
        if (real / shared).is_dir():
            (scratch / shared).symlink_to(real / shared, target_is_directory=True)
    before = os.environ.get(CACHE_ENV_VAR)
    os.environ[CACHE_ENV_VAR] = str(scratch)
    try:
        yield scratch
    finally:
        if before is None:
            os.environ.pop(CACHE_ENV_VAR, None)
        else:
            os.environ[CACHE_ENV_VAR] = before
        shutil.rmtree(scratch, ignore_errors=True)


def fresh_prepare(cfg: BenchConfig) -> dict[str, Any]:
    """A from-scratch ``prepare`` (heads trained, three caches built) on the first rows."""
    rows = QUICK_SAMPLES if cfg.quick else cfg.prepare_fresh_rows
    if rows <= 0:
        return {"prepare_fresh_s": None, "prepare_fresh_rows": 0}
    from exitgym.data.prepare import PrepareConfig, prepare

    with _scratch_cache():
        tic = time.perf_counter()
        prepare(PrepareConfig(**asdict(cfg.data)), max_samples=rows, progress=False,
                verbose=False)
        seconds = time.perf_counter() - tic
    return {"prepare_fresh_s": seconds, "prepare_fresh_rows": rows}


def train_policy(cfg: BenchConfig) -> dict[str, Any]:
    """``exitgym train`` (REINFORCE, features view) of each policy to deploy, timed."""
    if cfg.run is not None:
        return {"runs": [str(cfg.run)], "train_s": None, "train_steps": None}
    from exitgym.experiments.configs import TrainConfig
    from exitgym.experiments.training import train

    steps = 3 if cfg.quick else cfg.train_steps
    runs, seconds = [], []
    for alpha in cfg.alphas:
        config = TrainConfig(data=bench_data(cfg), reward=cfg.reward, alpha=alpha,
                             observation="features", steps=steps,
                             checkpoint_every=max(steps, 1))
        out = Path(cfg.out) / f"{TRAIN_RUN}-alpha{alpha:g}"
        if out.exists():
            shutil.rmtree(out)  # the benchmark's own run of a previous bench
        tic = time.perf_counter()
        train(config, out, progress=False)
        seconds.append(time.perf_counter() - tic)
        runs.append(str(out))
    return {"runs": runs, "train_s": seconds, "train_steps": steps}


DEMO_TOTAL = re.compile(r"total\s+([0-9]+(?:\.[0-9]+)?)\s*s")
"""The demo's ``report.md`` ends its wall-time paragraph with ``total <seconds> s``."""


def demo_seconds(runs_root: Path) -> tuple[float | None, str | None]:
    """Wall time of the newest complete demo under ``runs_root`` (the demo takes minutes, so the
    benchmark reads it instead of re-running it); ``(None, None)`` when there is none."""
    if not runs_root.is_dir():
        return None, None
    reports = sorted((p for p in runs_root.glob("*demo*/report.md") if p.is_file()),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for report in reports:
        wall = report.read_text(encoding="utf-8").split("## Wall time", 1)
        found = DEMO_TOTAL.findall(wall[1]) if len(wall) == 2 else []
        if found:
            return float(found[-1]), str(report.parent)
    return None, None


BENCH_RULES: tuple[str, ...] = ("entropy", "maxprob", "patience")
"""Rules whose validation-chosen point the bench deploys beside the trained policy."""


def inference_section(cfg: BenchConfig, run: str) -> list[dict[str, Any]]:
    """Deploy the run's policy and the best rule, each at its operating point chosen on
    validation (the cheapest reading within ``cfg.max_loss`` of full depth's validation
    accuracy), on ``cfg.inference_split``: batch 1 and batched with compaction."""
    import json

    from exitgym.data.tasks import load_task
    from exitgym.experiments.operating import operating_point
    from exitgym.inference import ExitInference

    tic = time.perf_counter()
    point = operating_point(run, max_loss=cfg.max_loss, num_envs=16 if cfg.quick else 64)
    engine = ExitInference.from_run(run, policy=point.policy)
    load_s = time.perf_counter() - tic
    data = bench_data(cfg)
    task = load_task(data.task, max_samples=data.max_samples)
    split = task.split(cfg.inference_split)
    count = min(8 if cfg.quick else (cfg.num_texts or len(split)), len(split))
    texts = list(split["text"][:count])
    pairs = list(split["text_pair"][:count]) if task.has_pair else None
    labels = np.asarray(split["label"][:count], dtype=np.int64)
    config = json.loads((Path(run) / "config.json").read_text()).get("config", {})
    policy = {key: config.get(key) for key in ("agent", "reward", "alpha", "observation",
                                               "steps", "seed")}
    rule, rule_point = _best_rule(cfg, run)
    rule_engine = ExitInference(rule, engine.backbone, engine.heads,
                                observation=rule.required_observation, policy_flops=0.0,
                                max_length=engine.max_length)
    out = []
    for name, eng, chosen, flops in (("rl", engine, point.record, engine.policy_flops),
                                     ("rule", rule_engine, rule_point, 0.0)):
        rows = _rows(cfg, eng, texts, labels, pairs)
        entry_policy = policy if name == "rl" else {"agent": rule_point["rule"]}
        out.append({"run": run, "load_s": load_s, "category": name, "policy": entry_policy,
                    "operating_point": chosen, "split": cfg.inference_split,
                    "policy_flops": flops, "rows": rows})
    return out


def _rows(cfg: BenchConfig, engine: Any, texts: list[str], labels: np.ndarray,
          pairs: list[str] | None) -> list[dict[str, Any]]:
    from exitgym.bench.config import GOALS
    from exitgym.bench.measure import inference_speed

    modes = {"batch1": 1, "batched": 4 if cfg.quick else cfg.batch_size}
    rows = inference_speed(engine, texts, labels, modes, 1 if cfg.quick else cfg.repeats, pairs)
    for row in rows:
        row["goal"] = GOALS[row["mode"]]
        row["goal_met"] = bool(row["realised_fraction"] >= row["goal"])
    return rows


def _best_rule(cfg: BenchConfig, run: str) -> tuple[Any, dict[str, Any]]:
    """The cheapest rule reading within ``cfg.max_loss`` of full depth on validation, over every
    knob of :data:`BENCH_RULES` (the rules' own grids, as ``compare`` sweeps them)."""
    from exitgym.agents.registry import lookup
    from exitgym.experiments.binding import bound_cache
    from exitgym.experiments.operating import choose
    from exitgym.experiments.policies import open_training_run, run_env_spec

    spec = run_env_spec(open_training_run(run)).with_split("validation")
    cache = bound_cache(run, spec)
    candidates = []
    for name in BENCH_RULES:
        sweep = lookup(name, "rule").sweep
        assert sweep is not None
        for rule, knob in sweep(cache, cache, 0):
            rule_spec = spec.with_kwargs(observation=rule.required_observation, policy_flops=0.0)
            candidates.append(((name, knob, rule), rule_spec))
    wrapped = [(_Named(*c), s) for c, s in candidates]
    pick, record = choose(wrapped, cache, 16 if cfg.quick else 64, 0, max_loss=cfg.max_loss,
                          what="the rules")
    return pick.policy, {**record, "rule": pick.name, "knob": pick.knob}


class _Named:
    """A rule reading with its name and knob (``choose`` evaluates ``.policy``)."""

    def __init__(self, name: str, knob: Any, policy: Any) -> None:
        self.name, self.knob, self.policy = name, knob, policy
