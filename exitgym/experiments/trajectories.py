"""Recorded evaluation episodes on disk: one Parquet file per evaluation.

Format: Apache Parquet (via pyarrow), one row per episode, with the fields of
:class:`~exitgym.agents.records.EpisodeRecord` as columns (``sample_id``, ``seed``, ``actions`` and
``rewards`` as lists, ``exit_layer``, ``prediction``, ``label``, ``correct``, ``memorized_layer``,
``oracle_layer``, ``decisions``, ``cost``, ``flops``) plus ``episode`` (row index) and ``text``
(the input, for analysis). The file's schema metadata (key ``exitgym``) holds a JSON object with
the environment id and keyword arguments that reproduce the episodes (what ``replay --verify``
re-executes), the method and knob, and the format version.

Why Parquet, and Minari as an export: our episodes are short (1..L steps) with rich per-episode
outcomes, which a flat table holds directly, and Parquet opens in pandas, polars, DuckDB and
``datasets`` with no exitgym code. ``exitgym export RUN --format minari``
(:mod:`exitgym.experiments.minari_export`) writes the same episodes as Farama Minari datasets,
with observations, for the offline-RL libraries that read Minari.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exitgym.agents.records import EpisodeRecord
from exitgym.experiments.env_spec import EnvSpec
from exitgym.experiments.runs import TRAJECTORY_DIR
from exitgym.utils.atomic import atomic_write, jsonable

FORMAT_VERSION = 1
"""Bump when columns change meaning; readers refuse other versions."""
META_KEY = b"exitgym"
SUFFIX = ".parquet"


@dataclass(frozen=True)
class TrajectorySet:
    """The episodes of one evaluation and how to reproduce them."""

    records: tuple[EpisodeRecord, ...]
    """One record per episode, in recorded order."""
    env_id: str
    """Gymnasium id of the environment the episodes ran in."""
    env_kwargs: dict[str, Any]
    """Keyword arguments of ``gym.make`` (JSON values only; no cache objects)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Method, knob, policy seed, split, num_layers, label names, ... (free-form, JSON)."""
    texts: tuple[str | None, ...] | None = None
    """Input text of each episode (None when the cache had no texts)."""
    episodes: tuple[int, ...] | None = None
    """The ``episode`` column as read (row numbers; ``replay --verify`` checks them)."""

    @property
    def num_layers(self) -> int | None:
        value = self.meta.get("num_layers")
        return int(value) if value is not None else None


def _pa() -> Any:
    import pyarrow as pa

    return pa


def save_trajectories(
    path: str | os.PathLike[str],
    records: Sequence[EpisodeRecord],
    env_id: str,
    env_kwargs: dict[str, Any],
    meta: dict[str, Any] | None = None,
    texts: Sequence[str | None] | None = None,
) -> Path:
    """Write ``records`` as a Parquet file (atomically).

    Args:
        path: target file (``.parquet`` is appended when missing).
        records: the episodes.
        env_id: environment id to re-make for replay.
        env_kwargs: JSON-serialisable ``gym.make`` kwargs (a ``cache=`` object is not allowed:
            replay must be able to rebuild the env from the file alone).
        meta: extra provenance (method, knob, seed, split, num_layers, label_names).
        texts: per-episode input text (same length as ``records``).
    """
    import pyarrow.parquet as pq

    pa = _pa()
    path = Path(path)
    if path.suffix != SUFFIX:
        path = path.with_name(path.name + SUFFIX)
    if "cache" in env_kwargs:
        raise ValueError("env_kwargs must not hold a cache object; record task/backbone/split")
    if texts is not None and len(texts) != len(records):
        raise ValueError(f"got {len(texts)} texts for {len(records)} records")
    multi = any(isinstance(a, tuple) for r in records for a in r.actions)
    columns: dict[str, Any] = {
        "episode": pa.array(range(len(records)), pa.int64()),
        "sample_id": pa.array([r.sample_id for r in records], pa.int64()),
        "seed": pa.array([r.seed for r in records], pa.int64()),
        "actions": pa.array([[list(a) if multi else int(a) for a in r.actions] for r in records],
                            pa.list_(pa.list_(pa.int64())) if multi else pa.list_(pa.int64())),
        "rewards": pa.array([list(r.rewards) for r in records], pa.list_(pa.float64())),
        "exit_layer": pa.array([r.exit_layer for r in records], pa.int64()),
        "prediction": pa.array([r.prediction for r in records], pa.int64()),
        "label": pa.array([r.label for r in records], pa.int64()),
        "correct": pa.array([bool(r.correct) for r in records], pa.bool_()),
        "memorized_layer": pa.array([r.memorized_layer for r in records], pa.int64()),
        "oracle_layer": pa.array([r.oracle_layer for r in records], pa.int64()),
        "decisions": pa.array([[int(d) for d in r.decisions] for r in records],
                              pa.list_(pa.int64())),
        "cost": pa.array([r.cost for r in records], pa.float64()),
        "flops": pa.array([r.flops for r in records], pa.float64()),
        "text": pa.array(list(texts) if texts is not None else [None] * len(records), pa.string()),
    }
    info = {"format_version": FORMAT_VERSION, "env_id": env_id, "env_kwargs": env_kwargs,
            "multi_discrete": multi, "meta": meta or {}, "has_text": texts is not None}
    table = pa.table(columns).replace_schema_metadata({META_KEY: json.dumps(info).encode()})
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def load_trajectories(path: str | os.PathLike[str]) -> TrajectorySet:
    """Read a file written by :func:`save_trajectories` (clear errors for foreign files)."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable Parquet trajectory file ({err})") from err
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(f"{path}: no exitgym metadata; not written by "
                         "exitgym.experiments.trajectories")
    info = json.loads(raw)
    if info.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: trajectory format {info.get('format_version')} is not the "
                         f"supported version {FORMAT_VERSION}")
    cols = table.to_pydict()
    records = []
    for i in range(table.num_rows):
        actions = tuple(tuple(a) if info["multi_discrete"] else int(a) for a in cols["actions"][i])
        seed = cols["seed"][i]
        records.append(EpisodeRecord(
            sample_id=int(cols["sample_id"][i]), actions=actions,
            exit_layer=int(cols["exit_layer"][i]), prediction=int(cols["prediction"][i]),
            label=int(cols["label"][i]), correct=bool(cols["correct"][i]),
            memorized_layer=int(cols["memorized_layer"][i]),
            oracle_layer=int(cols["oracle_layer"][i]),
            decisions=tuple(int(d) for d in cols["decisions"][i]),
            rewards=tuple(float(r) for r in cols["rewards"][i]),
            cost=_float(cols["cost"][i]), flops=_float(cols["flops"][i]),
            seed=None if seed is None else int(seed),
        ))
    texts = tuple(cols["text"]) if info.get("has_text") else None
    return TrajectorySet(tuple(records), info["env_id"], dict(info["env_kwargs"]),
                         dict(info.get("meta", {})), texts,
                         tuple(-1 if e is None else int(e) for e in cols["episode"]))


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def trajectories_frame(ts: TrajectorySet) -> Any:
    """One row per episode as a pandas DataFrame (with ``num_steps`` and ``episode_return``)."""
    import pandas as pd

    rows = []
    for i, r in enumerate(ts.records):
        rows.append({
            "episode": i, "sample_id": r.sample_id, "seed": r.seed, "exit_layer": r.exit_layer,
            "prediction": r.prediction, "label": r.label, "correct": r.correct,
            "memorized_layer": r.memorized_layer, "oracle_layer": r.oracle_layer,
            "cost": r.cost, "flops": r.flops, "num_steps": len(r.actions),
            "episode_return": r.episode_return,
            "text": ts.texts[i] if ts.texts is not None else None,
        })
    return pd.DataFrame(rows)


def trajectory_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every trajectory file under a run or compare directory (or the file itself), sorted."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run directory or trajectory file")
    return sorted(p for p in root.rglob(f"*{SUFFIX}") if p.parent.name == TRAJECTORY_DIR)


def evaluate_and_record(policy: Any, spec: EnvSpec, out: str | Path, name: str, *,
                        method: str, knob: float | None, seed: int, num_envs: int = 64,
                        cache: Any | None = None, evaluate_fn: Callable[..., Any] | None = None,
                        meta: dict[str, Any] | None = None) -> Any:
    """Greedy evaluation on ``spec`` with every episode saved to ``out/trajectories/<name>``.

    The file's metadata holds ``spec`` (and the kwargs as JSON), so ``replay --verify`` re-makes
    the very env the episodes ran in.
    """
    if evaluate_fn is None:
        from exitgym.agents.rollout import evaluate as evaluate_fn
    if cache is None and spec.uses_cache:
        cache = spec.cache()
    env = spec.make(num_envs, cache)
    try:
        result = evaluate_fn(policy, env, seed=seed)
    finally:
        env.close()
    texts = None
    if cache is not None and cache.texts is not None:
        texts = [cache.texts[r.sample_id] for r in result.records]
    info = {"method": method, "knob": knob, "seed": seed, "split": spec.split,
            "num_layers": result.num_layers, "env_spec": spec.to_json(),
            "label_names": list(getattr(cache, "label_names", ()) or ()), **(meta or {})}
    save_trajectories(Path(out) / TRAJECTORY_DIR / name, result.records, spec.env_id,
                      jsonable(spec.kwargs), info, texts)
    return result
