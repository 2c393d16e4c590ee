"""``compare``: train the RL agents over reward shapes × α × seeds, sweep the exit rules, report.

Layout of the output directory::

    runs/<agent>-<reward>-a<α>-s<seed>/   one complete training run each (experiments.training)
    trajectories/<method>-k<knob>-s<seed>.parquet   every rule / baseline evaluation episode
    summary.json  pareto.png  report.md    (exitgym.reports.comparison)
    run_state.json                        status; ``complete`` only when everything is written

Everything is evaluated greedily on the evaluation split (``test``) with every episode recorded, so
``exitgym replay <out> --verify`` re-executes the whole comparison. Rules whose outcome does not
depend on a seed (``SEEDLESS_RULES``: the registry entries with ``seeded=False``, e.g. entropy or
patience) are evaluated once, with the first seed; the others (random exits, the fitted
baselines PALBERT Q-exit and BERxiT) once per seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitgym.agents.registry import lookup
from exitgym.experiments.configs import SEEDLESS_RULES, CompareConfig
from exitgym.experiments.runs import RunDir, write_config
from exitgym.experiments.training import train
from exitgym.experiments.trajectories import evaluate_and_record
from exitgym.reports.comparison import FULL_DEPTH, ORACLE, make_row, row_from_eval, write_report
from exitgym.utils.atomic import jsonable
from exitgym.utils.configs import flatten
from exitgym.utils.threads import one_torch_thread


@dataclass(frozen=True)
class CompareResult:
    """What :func:`compare` wrote."""

    out: Path
    """Output directory."""
    summary: dict[str, Any]
    """The ``summary.json`` payload."""
    timings: dict[str, float]
    """Seconds per phase."""


def _slug_knob(knob: float | None) -> str:
    return "none" if knob is None else f"{knob:g}"


def compare(config: CompareConfig, out: str | Path, *, caches: dict[str, Any] | None = None,
            progress: bool = True, sections: tuple[str, ...] = ()) -> CompareResult:
    """Train and evaluate everything in ``config``; write the report into ``out``."""
    out = Path(out)
    state = RunDir.create(out)
    timings: dict[str, float] = {}
    tic = time.perf_counter()
    with state.status_on_error():
        caches = dict(caches or {})
        for split in (config.train_split, config.eval_split):
            if split not in caches:
                caches[split] = config.train_config("vanilla", 0.2, 0).env_spec(split).cache(
                    progress=progress)
        write_config(state, jsonable(flatten(config)), caches=caches, extra={"command": "compare"})
        timings["caches"] = time.perf_counter() - tic
        with one_torch_thread():  # small MLPs: one thread is faster on a busy CPU
            rows = _train_agents(config, out, caches, progress, timings)
            rows += _baselines(config, out, caches, progress, timings)
        test = caches[config.eval_split]
        rows.append(make_row(FULL_DEPTH, None, config.seeds[0],
                             float(test.correct[:, -1].mean()), 1.0, float(test.num_layers)))
        tic = time.perf_counter()
        data = config.data
        title = (f"{data.task} × {data.backbone} ({data.heads} heads): "
                 f"accuracy vs cost on {config.eval_split}")
        meta = {"task": data.task, "backbone": data.backbone, "heads": data.heads,
                "split": config.eval_split, "samples": test.num_samples,
                "layers": test.num_layers, "seeds": list(config.seeds),
                "updates_per_agent": config.steps}
        summary = write_report(out, rows, title, meta, sections,
                               extra=_heads_summary(config, caches, progress))
        timings["report"] = time.perf_counter() - tic
        state.mark_complete(timings=timings)
        return CompareResult(out, summary, timings)


def _heads_summary(config: CompareConfig, caches: dict[str, Any],
                   progress: bool) -> dict[str, Any]:
    """The recipe and every exit head's accuracy on validation and test (summary.json keys)."""
    per_layer = {}
    for split in ("validation", "test"):
        cache = caches.get(split) or config.train_config("vanilla", 0.2, 0).env_spec(
            split).cache(progress=progress)
        per_layer[split] = [float(a) for a in cache.correct.mean(axis=0)]
    return {"heads": config.data.heads, "per_layer_accuracy": per_layer}


def _bar(total: int, desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress)


def _train_agents(config: CompareConfig, out: Path, caches: dict[str, Any], progress: bool,
                  timings: dict[str, float]) -> list[dict[str, Any]]:
    tic = time.perf_counter()
    rows = []
    jobs = [(r, a, s) for r in config.rewards for a in config.alphas for s in config.seeds]
    with _bar(len(jobs), f"train {config.agent}", progress) as bar:
        for reward, alpha, seed in jobs:
            cfg = config.train_config(reward, alpha, seed)
            name = f"{config.agent}-{reward}-a{alpha:g}-s{seed}"
            bar.set_postfix_str(name)
            result = train(cfg, out / "runs" / name, caches=caches, progress=False,
                           plots=False)
            rows.append(row_from_eval(f"{config.agent}-{reward}", alpha, seed, result.eval))
            bar.update(1)
    timings["train"] = time.perf_counter() - tic
    return rows


def _baselines(config: CompareConfig, out: Path, caches: dict[str, Any], progress: bool,
               timings: dict[str, float]) -> list[dict[str, Any]]:
    tic = time.perf_counter()
    train_cache, test = caches[config.train_split], caches[config.eval_split]
    jobs: list[tuple[str, int]] = []
    for name in config.rules:
        if name == "oracle":
            continue
        seeds = config.seeds[:1] if name in SEEDLESS_RULES else config.seeds
        jobs += [(name, s) for s in seeds]
    rows = []
    with _bar(len(jobs) + 1, "baselines", progress) as bar:
        for name, seed in [*jobs, (ORACLE, config.seeds[0])]:
            bar.set_postfix_str(f"{name} seed {seed}")
            sweep = lookup(name, "rule", "fitted").sweep
            assert sweep is not None
            for policy, knob in sweep(train_cache, test, seed):
                spec = config.rule_spec(policy.required_observation)
                result = evaluate_and_record(
                    policy, spec, out, f"{name}-k{_slug_knob(knob)}-s{seed}", method=name,
                    knob=knob, seed=seed, num_envs=config.num_envs, cache=test)
                rows.append(row_from_eval(name, knob, seed, result))
            bar.update(1)
    timings["baselines"] = time.perf_counter() - tic
    return rows
