"""Recorded episodes as Farama Minari datasets (``exitgym export RUN --format minari``).

Minari is the field's offline-RL dataset standard (torchrl, d3rlpy and AgileRL read it). A run's
Parquet trajectories hold actions and rewards per episode but not observations, so the export
re-executes every episode in its environment (the cache checked against the run, as
``replay --verify`` does), collects the observations and per-step ``info`` (``layer``, ``cost``,
``sample_id``), and refuses a file whose replayed rewards differ from the recorded ones.

The dataset's environment spec is ``exitgym/EarlyExit-v0`` with JSON keyword arguments only
(task, backbone, split, heads, ``prepare_options``, reward, observation, ...), so
``minari.load_dataset(id).recover_environment()`` rebuilds the same environment with
``gym.make``. Reference scores follow Minari's convention: ``ref_min_score`` is the mean return of
a uniformly random policy and ``ref_max_score`` the mean of each input's best achievable return
(the exit layer chosen with hindsight), both over the inputs of the exported episodes.

Only the cached exit environment is exported: the live skip and token environments cost a
backbone pass per episode and their episodes are one to L layers of a live model, which their
Parquet files already hold with the decisions.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from exitgym.experiments.env_spec import EnvSpec
from exitgym.experiments.replay import ReplayMismatch, replay_env
from exitgym.experiments.trajectories import TrajectorySet, load_trajectories, trajectory_files

SUPPORTED = ("exitgym/EarlyExit-v0",)
"""Environment ids whose episodes export to Minari."""
INFO_KEYS = ("layer", "cost", "sample_id")
"""Per-step ``info`` entries stored (present on reset and every step, same types throughout,
as Minari requires)."""


def _minari() -> Any:
    try:
        import minari
        from minari.data_collector.episode_buffer import EpisodeBuffer  # noqa: F401
    except ImportError as err:
        raise ImportError("exporting to Minari needs the minari package: "
                          "pip install 'exitgym[minari]'") from err
    return minari


def gym_spec(spec: EnvSpec) -> Any:
    """The Gymnasium ``EnvSpec`` of ``spec`` with JSON keyword arguments only (no cache object),
    which Minari stores and ``recover_environment`` makes again."""
    import gymnasium as gym

    import exitgym  # noqa: F401  (registers the ids)

    if spec.env_id not in SUPPORTED:
        raise ValueError(f"Minari export supports {', '.join(SUPPORTED)}; these episodes ran in "
                         f"{spec.env_id} (its trajectories stay Parquet files)")
    if spec.heads_file is not None:
        raise ValueError(f"these episodes read exit heads from the run's {spec.heads_file} "
                         "(ConsistentEE's retrained heads), which gym.make keyword arguments "
                         "cannot name; export the runs that use prepared heads")
    kwargs: dict[str, Any] = {**spec.kwargs, "task": spec.task, "backbone": spec.backbone,
                              "split": spec.split, "heads": spec.heads}
    if spec.prepare:
        kwargs["prepare_options"] = dict(spec.prepare)
    json.dumps(kwargs)  # a value that is not JSON fails here, not in Minari
    return dataclasses.replace(gym.spec(spec.env_id), kwargs=kwargs)


def _run(env: Any, sample_id: int, seed: int | None, actions: Sequence[Any]) -> dict[str, Any]:
    """One episode: observations (reset + each step), rewards, flags and the stored infos."""
    obs, info = env.reset(seed=seed, options={"sample_id": sample_id})
    observations, infos = [obs], [info]
    rewards: list[float] = []
    terminations: list[bool] = []
    truncations: list[bool] = []
    for action in actions:
        obs, reward, term, trunc, info = env.step(action)
        observations.append(obs)
        infos.append(info)
        rewards.append(float(reward))
        terminations.append(bool(term))
        truncations.append(bool(trunc))
        if term or trunc:
            break
    return {"observations": observations, "rewards": rewards, "terminations": terminations,
            "truncations": truncations,
            "infos": {k: [type(infos[0][k])(i[k]) for i in infos] for k in INFO_KEYS}}


def reference_scores(env: Any, sample_ids: Sequence[int], seed: int = 0) -> tuple[float, float]:
    """``(ref_min_score, ref_max_score)`` over ``sample_ids``: a uniformly random policy's mean
    return, and the mean of each input's best return (exit at the hindsight-best layer)."""
    rng = np.random.default_rng(seed)
    layers = int(env.unwrapped.num_layers)
    random_returns, best_returns = [], []
    for sid in sample_ids:
        actions = rng.integers(0, 2, size=layers).tolist()
        random_returns.append(sum(_run(env, int(sid), None, actions)["rewards"]))
        best_returns.append(max(
            sum(_run(env, int(sid), None, [0] * (exit_at - 1) + [1])["rewards"])
            for exit_at in range(1, layers + 1)))
    return float(np.mean(random_returns)), float(np.mean(best_returns))


def dataset_id(run: str | Path, file: Path) -> str:
    """``exitgym-<run>/<file stem>-v0`` with characters Minari's ids refuse replaced by ``_``."""
    def clean(text: str) -> str:
        return re.sub(r"[^-\w]", "_", text)

    return f"exitgym-{clean(Path(run).resolve().name)}/{clean(file.stem)}-v0"


def export_file(path: Path, dataset: str, *, description: str | None = None,
                replace: bool = False, **provenance: Any) -> Any:
    """Export one trajectory file as the Minari dataset ``dataset``; returns the dataset.

    Every episode is re-executed and checked before anything is written; with ``replace`` an
    existing dataset of that id is deleted only then, so a file that fails to replay loses
    nothing. ``provenance``: Minari's ``author``, ``author_email``, ``code_permalink``.
    """
    import exitgym

    minari = _minari()
    from minari.data_collector.episode_buffer import EpisodeBuffer

    ts: TrajectorySet = load_trajectories(path)
    spec = EnvSpec.from_json(ts.meta["env_spec"])
    target = gym_spec(spec)
    env = replay_env(path, ts)
    try:
        buffers = []
        for i, rec in enumerate(ts.records):
            episode = _run(env, rec.sample_id, rec.seed, list(rec.actions))
            if len(episode["rewards"]) != len(rec.rewards) or not np.allclose(
                    episode["rewards"], rec.rewards, rtol=1e-6, atol=1e-9):
                raise ReplayMismatch(str(path), i, rec.sample_id, len(episode["rewards"]) - 1,
                                     "rewards", list(rec.rewards), episode["rewards"])
            buffers.append(EpisodeBuffer(
                id=i, seed=rec.seed, options={"sample_id": int(rec.sample_id)},
                observations=episode["observations"], actions=list(rec.actions),
                rewards=episode["rewards"], terminations=episode["terminations"],
                truncations=episode["truncations"], infos=episode["infos"]))
        ref_min, ref_max = reference_scores(
            env, sorted({int(r.sample_id) for r in ts.records}))
        method = ts.meta.get("method")
        if replace and dataset in minari.list_local_datasets():
            minari.delete_dataset(dataset)
        return minari.create_dataset_from_buffers(
            dataset_id=dataset, buffer=buffers, env=target, algorithm_name=str(method),
            ref_min_score=ref_min, ref_max_score=ref_max, data_format="arrow",
            requirements=[f"exitgym=={exitgym.__version__}"], **provenance,
            description=description or (
                f"exitgym episodes of {method} (knob {ts.meta.get('knob')}) on {spec.task} "
                f"x {spec.backbone}, split {spec.split}, exported from {path}"))
    finally:
        env.close()


def export_minari(run: str | Path, *, select: str | None = None, overwrite: bool = False,
                  **provenance: Any) -> list[str]:
    """Export every trajectory file of ``run`` (a run, comparison or ``.parquet`` file) whose
    path contains ``select``; returns the dataset ids (one dataset per file: Minari holds one
    environment spec per dataset, and a comparison's files differ in reward and knob)."""
    minari = _minari()
    files = [f for f in trajectory_files(run) if select is None or select in str(f)]
    if not files:
        raise FileNotFoundError(f"no trajectory files under {run}"
                                + (f" matching {select!r}" if select else ""))
    ids = [dataset_id(run, f) for f in files]
    existing = set(minari.list_local_datasets())
    taken = [i for i in ids if i in existing]
    if taken and not overwrite:
        raise ValueError(f"Minari datasets {', '.join(taken)} exist already; pass --overwrite "
                         "to replace them")
    for path, name in zip(files, ids, strict=True):
        export_file(path, name, replace=overwrite, **provenance)
    return ids


__all__ = ["INFO_KEYS", "SUPPORTED", "dataset_id", "export_file", "export_minari", "gym_spec",
           "reference_scores"]
