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


def inference_section(cfg: BenchConfig, run: str) -> dict[str, Any]:
    """Deploy the run's policy on ``cfg.inference_split``: batch 1 and batched with compaction."""
    import json

    from exitgym.bench.config import GOALS
    from exitgym.bench.measure import inference_speed
    from exitgym.data.tasks import load_task
    from exitgym.inference import ExitInference

    tic = time.perf_counter()
    engine = ExitInference.from_run(run)
    load_s = time.perf_counter() - tic
    data = bench_data(cfg)
    task = load_task(data.task, max_samples=data.max_samples)
    split = task.split(cfg.inference_split)
    count = min(8 if cfg.quick else (cfg.num_texts or len(split)), len(split))
    texts = list(split["text"][:count])
    pairs = list(split["text_pair"][:count]) if task.has_pair else None
    labels = np.asarray(split["label"][:count], dtype=np.int64)
    modes = {"batch1": 1, "batched": 4 if cfg.quick else cfg.batch_size}
    rows = inference_speed(engine, texts, labels, modes, 1 if cfg.quick else cfg.repeats, pairs)
    for row in rows:
        row["goal"] = GOALS[row["mode"]]
        row["goal_met"] = bool(row["realised_fraction"] >= row["goal"])
    config = json.loads((Path(run) / "config.json").read_text()).get("config", {})
    policy = {key: config.get(key) for key in ("agent", "reward", "alpha", "observation",
                                               "steps", "seed")}
    return {"run": run, "load_s": load_s, "policy": policy, "split": cfg.inference_split,
            "policy_flops": engine.policy_flops, "rows": rows}
