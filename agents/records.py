"""Records of evaluation episodes: one frozen :class:`EpisodeRecord` per episode, one
:class:`EvalResult` per evaluation.

Every method (rule, REINFORCE, SB3, PALBERT, ...) is evaluated by :func:`exitgym.agents.evaluate`,
which produces these records; replay, reports and the CLI read them, so the fields and the metric
definitions live here once (docs/design.md "Metrics"). numpy only, JSON-serialisable, no pickle.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EpisodeRecord:
    """What happened in one evaluation episode.

    Equality (``==``) compares what identifies the behaviour: the sample, the decisions taken
    and their outcome (exit layer, prediction, correctness, hardness layers). Floating-point
    quantities (rewards, cost, FLOPs) and the seed are excluded from ``==`` so that a cached and a
    live replay of the same decisions compare equal despite float noise; use :meth:`close_to` to
    also compare them within a tolerance.
    """

    sample_id: int
    """Index of the input in its split."""
    actions: tuple[Any, ...]
    """The action taken at each step (ints; tuples of ints for MultiDiscrete spaces)."""
    exit_layer: int
    """1-based layer whose head produced the prediction (L when the episode ran to the end)."""
    prediction: int
    """Predicted label id."""
    label: int
    """Gold label id."""
    correct: bool
    """``prediction == label``."""
    memorized_layer: int = -1
    """ConsistentEE memorized layer of the sample (1-based); -1 when the env does not know it."""
    oracle_layer: int = -1
    """Earliest correct layer of the sample (1-based); -1 when the env does not know it."""
    decisions: tuple[Any, ...] = ()
    """Skip environments: the block / token decisions actually applied (empty for early exit)."""
    rewards: tuple[float, ...] = field(default=(), compare=False)
    """Reward received at each step."""
    cost: float = field(default=math.nan, compare=False)
    """FLOPs fraction ``c_t`` of the episode, overheads included."""
    flops: float = field(default=math.nan, compare=False)
    """Absolute FLOPs of the episode."""
    seed: int | None = field(default=None, compare=False)
    """Seed the evaluation ran with (sampled policies and random rules depend on it)."""

    @property
    def episode_return(self) -> float:
        """Undiscounted sum of the rewards."""
        return float(sum(self.rewards))

    def close_to(self, other: EpisodeRecord, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
        """``==`` plus rewards, cost and FLOPs equal within a tolerance."""
        if self != other or len(self.rewards) != len(other.rewards):
            return False
        pairs = [(self.cost, other.cost), (self.flops, other.flops)]
        pairs += list(zip(self.rewards, other.rewards, strict=True))
        return all(
            (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
            for a, b in pairs
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpisodeRecord:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they signal a format change)."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(
                f"unknown EpisodeRecord fields {sorted(unknown)}; known: {sorted(names)}"
            )
        kw = dict(data)
        for key in ("actions", "decisions"):
            if key in kw:
                kw[key] = tuple(_tupled(a) for a in kw[key])
        if "rewards" in kw:
            kw["rewards"] = tuple(float(r) for r in kw["rewards"])
        return cls(**kw)


@dataclass(frozen=True)
class EvalResult:
    """Summary of one greedy evaluation over a set of samples (docs/design.md "Metrics").

    It names the split it ran on (:attr:`split`, first in its ``repr`` and ``str``): an env made
    without ``split=`` reads the ``policy`` split, rows a learned policy trains on, whose
    numbers are not the test numbers a paper or the CLI reports.
    """

    accuracy: float
    """Fraction of episodes whose prediction is correct."""
    cost: float
    """Mean FLOPs fraction (overheads included); 1.0 = full depth without overhead. The name
    the CLI, ``summary.json`` and the env's ``info`` use."""
    speedup: float
    """``1 / cost``."""
    mean_exit_layer: float
    """Mean 1-based exit layer."""
    exit_histogram: tuple[int, ...]
    """Number of episodes that exited at layer 1..L."""
    mean_return: float
    """Mean undiscounted episode return under the env's reward."""
    records: tuple[EpisodeRecord, ...] = field(repr=False)
    """Every episode, in the order of the evaluated sample ids."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Provenance: policy name and knobs, seed, wall time."""
    split: str | None = None
    """The data split the episodes came from (``train``, ``policy``, ``validation``, ``test``);
    None when the env does not say (e.g. a cache without a recorded split)."""

    @property
    def mean_cost(self) -> float:
        """Deprecated name of :attr:`cost` (kept so code written against it runs)."""
        warnings.warn("EvalResult.mean_cost is deprecated; use EvalResult.cost (the name the "
                      "CLI, summary.json and info use)", DeprecationWarning, stacklevel=2)
        return self.cost

    @property
    def num_layers(self) -> int:
        return len(self.exit_histogram)

    @property
    def correctness(self) -> np.ndarray:
        """Bool ``[N]``: each episode's correctness in sample-id order (paired comparisons of two
        methods on the same inputs, e.g. the budget table's bootstrap)."""
        order = np.argsort([r.sample_id for r in self.records], kind="stable")
        return np.array([self.records[i].correct for i in order], dtype=bool)

    @property
    def flops_saved(self) -> float:
        """``1 - cost``: fraction of the full model's FLOPs saved."""
        return 1.0 - self.cost

    def __repr__(self) -> str:
        return (f"EvalResult(split={self.split!r}, accuracy={self.accuracy:.4f}, "
                f"cost={self.cost:.4f}, speedup={self.speedup:.2f}, "
                f"mean_exit_layer={self.mean_exit_layer:.2f}, episodes={len(self.records)})")

    def __str__(self) -> str:
        """One line naming the split; a split other than ``test`` says where test numbers are."""
        where = "an unnamed split" if self.split is None else f"the {self.split!r} split"
        line = (f"accuracy {self.accuracy:.4f}, cost {self.cost:.4f} (speed-up "
                f"{self.speedup:.2f}x), mean exit layer {self.mean_exit_layer:.2f} on {where} "
                f"({len(self.records)} episodes)")
        if self.split != "test":
            line += "; test numbers come from an env made with split='test'"
        return line

    @classmethod
    def from_records(
        cls, records: list[EpisodeRecord] | tuple[EpisodeRecord, ...], num_layers: int,
        meta: dict[str, Any] | None = None, split: str | None = None,
    ) -> EvalResult:
        """Compute every metric from the records (the single definition of the metrics)."""
        if not records:
            raise ValueError("EvalResult.from_records needs at least one EpisodeRecord")
        exits = np.array([r.exit_layer for r in records], dtype=np.int64)
        if exits.min() < 1 or exits.max() > num_layers:
            raise ValueError(
                f"exit layers must lie in 1..{num_layers}, got {exits.min()}..{exits.max()}"
            )
        cost = float(np.mean([r.cost for r in records]))
        hist = np.bincount(exits - 1, minlength=num_layers)
        return cls(
            accuracy=float(np.mean([r.correct for r in records])),
            cost=cost,
            speedup=1.0 / cost if cost > 0 else math.inf,
            mean_exit_layer=float(exits.mean()),
            exit_histogram=tuple(int(h) for h in hist),
            mean_return=float(np.mean([r.episode_return for r in records])),
            records=tuple(records),
            meta=dict(meta or {}),
            split=split,
        )

    def summary(self) -> dict[str, Any]:
        """The scalar metrics and histogram as a JSON-friendly dict (no records)."""
        return _jsonable({
            "split": self.split, "accuracy": self.accuracy, "cost": self.cost,
            "speedup": self.speedup,
            "flops_saved": self.flops_saved, "mean_exit_layer": self.mean_exit_layer,
            "exit_histogram": list(self.exit_histogram), "mean_return": self.mean_return,
            "num_episodes": len(self.records), "meta": self.meta,
        })

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write summary + records as JSON atomically (tmp file + ``os.replace``)."""
        path = Path(path)
        payload = {**self.summary(), "records": [r.to_dict() for r in self.records]}
        from exitgym.utils.atomic import write_json

        return write_json(path, payload, indent=None)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvalResult:
        """Read a file written by :meth:`save`; metrics are recomputed from the records."""
        data = json.loads(Path(path).read_text())
        records = [EpisodeRecord.from_dict(r) for r in data["records"]]
        return cls.from_records(records, len(data["exit_histogram"]), data.get("meta"),
                                data.get("split"))


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def _jsonable(value: Any) -> Any:
    """Recursively convert numpy scalars / arrays and tuples into JSON types."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
