"""The classic (non-RL) exit rules, each with one knob swept to trace an accuracy-cost curve.

Every rule reads the ``"features+logits"`` observation: the layer-fraction feature tells it when
a new episode starts (:class:`~exitgym.agents.base.LayerTracker`) and the logits give the
prediction and its confidence. Confidence statistics are recomputed from the logits (not read
from the features) so the rules do not depend on how an env normalises its features.

| rule      | knob        | exits when                                                        |
|-----------|-------------|-------------------------------------------------------------------|
| static    | ``k``       | layer >= k                                                        |
| random    | ``p``       | a coin with P(exit) = p lands (independently per layer)           |
| entropy   | ``theta``   | entropy / log C < theta (DeeBERT, normalised so theta is in [0,1])|
| maxprob   | ``theta``   | max softmax probability > theta (RightTool)                       |
| patience  | ``t``       | the prediction was unchanged for t consecutive layers (PABEE)     |
| oracle    | (none)      | layer >= earliest correct layer (reads the cache: the bound)      |

Every rule exits at the last layer regardless (the env ends the episode there anyway).
PABEE patience follows the original PABEE code: the counter increments when the prediction equals
the previous layer's and resets otherwise, and the rule exits when it reaches ``t`` — so ``t + 1``
consecutive heads agree (``t = 0`` exits at layer 1). BERxiT and PALBERT live in their own
modules (they are trained on the cache).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from exitgym.agents.base import LayerTracker, ObsLayout, logit_stats
from exitgym.backbones.layer_cache import LayerCache


class ExitRule:
    """Base class: per-slot layer tracking + a vectorised ``exit_mask`` decided by subclasses."""

    name: ClassVar[str] = "rule"
    knob: ClassVar[str | None] = None
    """Name of the swept hyper-parameter (an attribute of the rule)."""
    required_observation: str = "features+logits"

    def __init__(self) -> None:
        self.tracker = LayerTracker()
        self._layout: ObsLayout | None = None

    # ----- knob & sweeps -------------------------------------------------------------------
    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        """Knob values tracing the rule's curve for a backbone with ``num_layers`` layers."""
        return ()

    def with_knob(self, value: float) -> ExitRule:
        """A fresh copy of this rule with its knob set to ``value``."""
        if self.knob is None:
            raise ValueError(f"rule {self.name!r} has no knob to set")
        clone = self._clone()
        setattr(clone, self.knob, type(getattr(self, self.knob))(value))
        clone._validate()
        return clone

    def sweep(self, num_layers: int) -> list[ExitRule]:
        """One rule per value of :meth:`default_grid` (just ``[self]`` for knob-less rules)."""
        grid = self.default_grid(num_layers)
        return [self.with_knob(v) for v in grid] if grid else [self]

    def describe(self) -> dict[str, Any]:
        """Name and knob value (for run records and tables)."""
        return {"method": self.name, **({self.knob: getattr(self, self.knob)} if self.knob else {})}

    def _clone(self) -> ExitRule:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.tracker = LayerTracker()
        clone._layout = None
        return clone

    def _validate(self) -> None:
        """Raise ValueError on an invalid knob value."""

    # ----- Policy protocol -----------------------------------------------------------------
    def reset(self, num_envs: int) -> None:
        self.tracker.reset(num_envs)
        self._reset_state(num_envs)

    def act(
        self, obs: np.ndarray, infos: dict[str, Any] | None = None, deterministic: bool = True
    ) -> np.ndarray:
        obs = np.atleast_2d(np.asarray(obs))
        if self.tracker.layer.shape[0] != obs.shape[0]:
            self.reset(obs.shape[0])
        if self._layout is None:
            self._layout = ObsLayout.from_spec(self.required_observation, obs.shape[-1])
        feats = self._layout.get(obs, "features")
        new = self.tracker.update(feats[:, 0])
        logits = self._layout.get(obs, "logits") if "logits" in self._layout.slices else None
        last = feats[:, 0] >= 1.0 - 1e-6
        exit_now = self.exit_mask(self.tracker.layer, new, logits, infos) | last
        return exit_now.astype(np.int64)

    def _reset_state(self, num_envs: int) -> None:
        """Subclasses with per-slot state reset it here."""

    def exit_mask(
        self, layer: np.ndarray, new: np.ndarray, logits: np.ndarray | None,
        infos: dict[str, Any] | None,
    ) -> np.ndarray:
        """Bool ``[B]``: exit now. ``layer`` is 1-based, ``new`` marks episode starts."""
        raise NotImplementedError


class StaticExit(ExitRule):
    """Exit at a fixed layer ``k`` (the static-depth baseline)."""

    name = "static"
    knob = "k"

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        self.k = int(k)
        self._validate()

    def _validate(self) -> None:
        if self.k < 1:
            raise ValueError(f"StaticExit.k must be >= 1 (a 1-based layer), got {self.k}")

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        return tuple(range(1, num_layers + 1))

    def exit_mask(self, layer, new, logits, infos):  # noqa: D102
        return layer >= self.k


class RandomExit(ExitRule):
    """Exit with probability ``p`` at every layer: the no-information baseline."""

    name = "random"
    knob = "p"

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.p = float(p)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self._validate()

    def _validate(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"RandomExit.p must be in [0, 1], got {self.p}")
        self._rng = np.random.default_rng(self.seed)

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        return (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)

    def exit_mask(self, layer, new, logits, infos):  # noqa: D102
        return self._rng.random(layer.shape[0]) < self.p


class EntropyExit(ExitRule):
    """DeeBERT: exit when the normalised prediction entropy drops below ``theta``."""

    name = "entropy"
    knob = "theta"

    def __init__(self, theta: float = 0.3) -> None:
        super().__init__()
        self.theta = float(theta)

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        # Up to 1.0 (every head exits): the cheap end of the curve must be reachable, as it is
        # for max-probability (theta 0.5), or the AUC would count that rule as 0 there.
        return (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)

    def exit_mask(self, layer, new, logits, infos):  # noqa: D102
        return logit_stats(logits)["norm_entropy"] < self.theta


class MaxProbExit(ExitRule):
    """RightTool: exit when the maximum softmax probability exceeds ``theta``."""

    name = "maxprob"
    knob = "theta"

    def __init__(self, theta: float = 0.9) -> None:
        super().__init__()
        self.theta = float(theta)

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        return (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995)

    def exit_mask(self, layer, new, logits, infos):  # noqa: D102
        return logit_stats(logits)["max_prob"] > self.theta


class PatienceExit(ExitRule):
    """PABEE: exit once the prediction stayed unchanged for ``t`` consecutive layers."""

    name = "patience"
    knob = "t"

    def __init__(self, t: int = 2) -> None:
        super().__init__()
        self.t = int(t)
        self._prev_pred = np.zeros(0, dtype=np.int64)
        self._count = np.zeros(0, dtype=np.int64)
        self._validate()

    def _validate(self) -> None:
        if self.t < 0:
            raise ValueError(f"PatienceExit.t must be >= 0, got {self.t}")

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        return tuple(range(0, num_layers))

    def _reset_state(self, num_envs: int) -> None:
        self._prev_pred = np.full(num_envs, -1, dtype=np.int64)
        self._count = np.zeros(num_envs, dtype=np.int64)

    def _clone(self) -> ExitRule:
        clone = super()._clone()
        assert isinstance(clone, PatienceExit)
        clone._reset_state(0)
        return clone

    def exit_mask(self, layer, new, logits, infos):  # noqa: D102
        pred = logit_stats(logits)["prediction"]
        same = (pred == self._prev_pred) & ~new
        self._count = np.where(same, self._count + 1, 0)
        self._prev_pred = pred
        return self._count >= self.t


class OracleExit(ExitRule):
    """Exit at each sample's earliest correct layer: the bound no exit policy can beat.

    It cheats by design: it reads the cache and the sample id :func:`evaluate` puts in
    ``infos["sample_id"]`` (or the ``sample_id`` key of a vector env's info dict).
    """

    name = "oracle"
    required_observation = "features+logits"

    def __init__(self, cache: LayerCache) -> None:
        super().__init__()
        self.cache = cache

    def exit_mask(self, layer, new, logits, infos):  # noqa: D102
        if not infos or "sample_id" not in infos:
            raise ValueError("OracleExit needs infos['sample_id'] (run it through evaluate())")
        sid = np.asarray(infos["sample_id"], dtype=np.int64)
        return layer >= self.cache.oracle[sid]


RULES: dict[str, Callable[..., ExitRule]] = {
    cls.name: cls
    for cls in (StaticExit, RandomExit, EntropyExit, MaxProbExit, PatienceExit, OracleExit)
}
"""Registry: rule name -> constructor (``RULES["entropy"](theta=0.2)``)."""


def make_rule(name: str, **kwargs: Any) -> ExitRule:
    """Build a rule by registry name with a clear error for unknown names."""
    if name not in RULES:
        raise KeyError(f"unknown exit rule {name!r}; known: {sorted(RULES)}")
    return RULES[name](**kwargs)


__all__ = [
    "ExitRule", "StaticExit", "RandomExit", "EntropyExit", "MaxProbExit", "PatienceExit",
    "OracleExit", "RULES", "make_rule",
]
