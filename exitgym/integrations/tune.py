"""``exitgym compare --engine tune``: every trained agent of a comparison is a Ray Tune trial.

Each (agent, reward, α, seed) of :func:`exitgym.experiments.compare.train_jobs` becomes one
trial that runs the very same :func:`exitgym.experiments.training.train` into
``<out>/runs/<name>`` as the local engine does, on one torch thread, from caches loaded by path in
the worker. REINFORCE is deterministic per seed, so the rows, ``summary.json`` and report equal
the local engine's for the same seeds; the exit rules and the report run in the driver as before.

Resuming. A comparison killed midway is continued by running the same command again, as with the
local engine (:mod:`exitgym.experiments.compare_runs`): trials whose run directory is complete
are not submitted again; a trial killed mid-training resumes from its checkpoint
(``train(resume=True)``), bit-identical to an uninterrupted run. The stored ``config.json`` must
equal the new flags.

Where trials run: a local Ray (``num_cpus``, no dashboard) or the cluster at ``address``. Every
node must see ``out`` and the prepared caches at the same paths (a shared filesystem; see the
README's multi-node recipe).
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

from exitgym.experiments.compare import CompareResult, TrainJob, compare
from exitgym.experiments.compare_runs import read_back, run_complete
from exitgym.experiments.configs import CompareConfig, TrainConfig
from exitgym.experiments.runs import STATE_FILE, RunError
from exitgym.experiments.training import TrainResult
from exitgym.integrations.ray import ray_session, trial_resources, worker_cache_path
from exitgym.utils.atomic import jsonable
from exitgym.utils.configs import flatten, from_dict

CACHE_COPY_DIR = "tune-cache"
"""Where caches given as objects (tests) are saved for the trials, inside ``out``."""


def compare_tune(config: CompareConfig, out: str | Path, *, address: str | None = None,
                 num_cpus: int = 2, max_concurrent: int = 2,
                 caches: dict[str, Any] | None = None, progress: bool = True,
                 sections: tuple[str, ...] = (), overwrite: bool = False,
                 resume: bool = False, gpus_per_trial: float | None = None) -> CompareResult:
    """:func:`~exitgym.experiments.compare.compare` with the agents trained as Tune trials.

    Args:
        config: the comparison.
        out: output directory; an interrupted Tune comparison there is resumed.
        address: Ray cluster to join; None starts a local Ray with ``num_cpus`` CPUs.
        num_cpus: CPUs of a local Ray.
        max_concurrent: trials running at once (each takes one CPU).
        caches: split -> LayerCache instead of the prepared ones (tests).
        progress: progress bars in the driver.
        sections: optional report sections, as for ``compare``.
        overwrite: replace the comparison in ``out`` once the new one is complete.
        resume: insist on continuing an unfinished comparison in ``out`` (the same call without
            it continues one too).
        gpus_per_trial: GPU share each trial reserves; None: 1 when the trials train on CUDA
            (their ``device`` resolved here), else none
            (:func:`~exitgym.integrations.ray.trial_resources`).
    """
    trainer = functools.partial(_tune_train_all, address=address, num_cpus=num_cpus,
                                max_concurrent=max_concurrent, gpus_per_trial=gpus_per_trial)
    return compare(config, Path(out).absolute(), caches=caches, progress=progress,
                   sections=sections, train_all=trainer, overwrite=overwrite, resume=resume)


def _tune_train_all(jobs: list[TrainJob], out: Path, caches: dict[str, Any], progress: bool,
                    *, address: str | None, num_cpus: int, max_concurrent: int,
                    gpus_per_trial: float | None = None) -> list[TrainResult]:
    """Train the pending jobs as Tune trials; every job's result, read back from its run."""
    from exitgym.utils.devices import resolve_device

    first = jobs[0].config
    resources = trial_resources([str(resolve_device(j.config.device)) for j in jobs],
                                gpus_per_trial)
    paths = {split: worker_cache_path(caches[split], out / CACHE_COPY_DIR / split)
             for split in (first.train_split, first.eval_split)}
    pending = [j for j in jobs if not run_complete(out / "runs" / j.name)]
    if pending:
        _run_trials([{"name": j.name, "config": jsonable(flatten(j.config)),
                      "out": str(out / "runs" / j.name), "caches": paths,
                      "cache_dir": os.environ.get("EXITGYM_CACHE")} for j in pending],
                    out, address, num_cpus, max_concurrent, progress, resources)
    return [read_back(out / "runs" / j.name, j.config, caches) for j in jobs]


def _run_trials(params: list[dict[str, Any]], out: Path, address: str | None, num_cpus: int,
                max_concurrent: int, progress: bool,
                resources: dict[str, float] | None = None) -> None:
    from ray import tune

    with ray_session(address, num_cpus):
        tuner = tune.Tuner(
            tune.with_resources(_trial, resources or {"cpu": 1}),
            param_space={"job": tune.grid_search(params)},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=str(out / "tune"),
                                      verbose=1 if progress else 0))
        grid = tuner.fit()
        failed = [r.error for r in grid if r.error is not None]
        if failed:
            raise RunError(f"{len(failed)} Tune trial(s) failed; first error: {failed[0]}")


def _trial(params: dict[str, Any]) -> None:
    """One Tune trial: ``train`` one job into its run directory (resuming a killed one)."""
    job = params["job"]
    if job.get("cache_dir"):
        os.environ["EXITGYM_CACHE"] = job["cache_dir"]
    from exitgym.backbones.cache import load_cache
    from exitgym.experiments.training import train
    from exitgym.utils.threads import one_torch_thread

    cfg = from_dict(TrainConfig, job["config"])
    caches = {split: load_cache(path) for split, path in job["caches"].items()}
    run_dir = Path(job["out"])
    resume = (run_dir / STATE_FILE).is_file()
    with one_torch_thread():
        result = train(cfg, run_dir, resume=resume, caches=caches, progress=False, plots=False)
    from ray import tune

    tune.report({"accuracy": float(result.eval.accuracy), "cost": float(result.eval.cost)})


__all__ = ["compare_tune"]
