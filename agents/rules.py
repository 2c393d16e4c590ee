"""The classic (non-RL) exit rules, each with one knob swept to trace an accuracy-cost curve.

Every rule reads the ``"features+logits"`` observation: the layer-fraction feature tells it when
a new episode starts (:class:`~exitgym.agents.base.TrackedPolicy`) and the logits give the
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
modules (they are trained on the cache). Every rule is listed, by name, in
:mod:`exitgym.agents.registry` (``make_rule("entropy", theta=0.2)``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from exitgym.agents.base import TrackedPolicy, softmax_stats
from exitgym.backbones.layer_cache import LayerCache
from exitgym.envs.observations import FEATURE_NAMES


class ExitRule(TrackedPolicy):
    """Base class: per-slot layer tracking + a vectorised ``exit_mask`` decided by subclasses."""

    name: ClassVar[str] = "rule"
    knob: ClassVar[str | None] = None
    """Name of the swept hyper-parameter (an attribute of the rule)."""
    knob_type: ClassVar[type] = float
    """What the knob is converted to (``int`` for layer counts)."""
    knob_bounds: ClassVar[tuple[float | None, float | None]] = (None, None)
    """Allowed ``(low, high)`` of the knob (None: unbounded), checked whenever it is set."""
    knob_hint: ClassVar[str] = ""
    """Said after the bound when a knob is refused (what the knob means)."""
    required_observation: str = "features+logits"

    def __init__(self, value: float | None = None) -> None:
        """Set the knob to ``value`` (rules with a knob) and clear the per-slot state."""
        super().__init__()
        self._reset_state(0)
        if self.knob is not None:
            self._set_knob(value)

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
        clone._set_knob(value)
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
        TrackedPolicy.__init__(clone)  # fresh per-slot state
        clone._reset_state(0)
        return clone

    def _set_knob(self, value: Any) -> None:
        assert self.knob is not None
        setattr(self, self.knob, self.knob_type(value))
        self._validate()

    def _validate(self) -> None:
        """Raise ValueError when the knob lies outside :attr:`knob_bounds`."""
        if self.knob is None:
            return
        low, high = self.knob_bounds
        value = getattr(self, self.knob)
        if (low is None or value >= low) and (high is None or value <= high):
            return
        if low is not None and high is not None:
            bound = f"in [{low:g}, {high:g}]"
        else:
            bound = f">= {low:g}" if low is not None else f"<= {high:g}"
        raise ValueError(f"{type(self).__name__}.{self.knob} must be {bound}{self.knob_hint}, "
                         f"got {value}")

    # ----- Policy protocol -----------------------------------------------------------------
    def reset(self, num_envs: int) -> None:
        super().reset(num_envs)
        self._reset_state(num_envs)

    def act(
        self, obs: np.ndarray, infos: dict[str, Any] | None = None, deterministic: bool = True
    ) -> np.ndarray:
        obs, frac, new = self._track(obs)
        logits = self._part(obs, "logits", optional=True)
        self._features = self._part(obs, "features", optional=True)
        return self._actions(self.exit_mask(self.tracker.layer, new, logits, infos), frac)

    def reading(self, observation: str) -> ExitRule:
        """A copy of this rule that reads ``observation`` instead of ``"features+logits"``.

        ``"features"``: the confidence rules take their statistics from the features view (the
        same :func:`softmax_stats`, stored as float32) instead of the logits: a decoder's
        vocabulary-wide logits are too large to tabulate. ``"depth"``: rules that read no
        confidence (static, random, oracle) without a head charged per layer.
        """
        clone = self._clone()
        clone.required_observation = observation
        return clone

    def _features_column(self, name: str) -> np.ndarray:
        """Column ``name`` of the features part of the current batch (when there are no logits).

        Raises:
            ValueError: the observation has neither logits nor features.
        """
        if getattr(self, "_features", None) is None:
            raise ValueError(f"rule {self.name!r} reads the logits or the features view; the "
                             f"observation {self.required_observation!r} has neither")
        return self._features[:, FEATURE_NAMES.index(name)].astype(np.float64)

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
    knob_type = int
    knob_bounds = (1, None)
    knob_hint = " (a 1-based layer)"

    def __init__(self, k: int = 1) -> None:
        super().__init__(k)

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        return tuple(range(1, num_layers + 1))

    def exit_mask(self, layer, new, logits, infos):  # noqa: D102
        return layer >= self.k


class RandomExit(ExitRule):
    """Exit with probability ``p`` at every layer: the no-information baseline."""

    name = "random"
    knob = "p"
    knob_bounds = (0.0, 1.0)

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        self.seed = int(seed)
        super().__init__(p)

    def _validate(self) -> None:
        """Also restart the coin flips: every copy of the rule draws the same sequence."""
        super()._validate()
        self._rng = np.random.default_rng(self.seed)

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        return (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)

    def exit_mask(self, layer, new, logits, infos):  # noqa: D102
        return self._rng.random(layer.shape[0]) < self.p


class ThresholdExit(ExitRule):
    """Exit when one confidence statistic of the head (:class:`SoftmaxStats`) crosses ``theta``."""

    knob = "theta"
    statistic: ClassVar[str] = "max_prob"
    """The :class:`~exitgym.envs.observations.SoftmaxStats` field compared with ``theta``."""
    below: ClassVar[bool] = False
    """Exit while the statistic is below ``theta`` (uncertainty) instead of above (confidence)."""
    grid: ClassVar[tuple[float, ...]] = ()
    """The knob values of :meth:`default_grid` (they do not depend on the depth)."""

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        return cls.grid

    def exit_mask(self, layer, new, logits, infos):  # noqa: D102
        value = (getattr(softmax_stats(logits), self.statistic) if logits is not None
                 else self._features_column(self.statistic))
        return value < self.theta if self.below else value > self.theta


class EntropyExit(ThresholdExit):
    """DeeBERT: exit when the normalised prediction entropy drops below ``theta``."""

    name = "entropy"
    statistic = "norm_entropy"
    below = True
    # Up to 1.0 (every head exits): the cheap end of the curve must be reachable, as it is
    # for max-probability (theta 0.5), or the AUC would count that rule as 0 there.
    grid = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)

    def __init__(self, theta: float = 0.3) -> None:
        super().__init__(theta)


class MaxProbExit(ThresholdExit):
    """RightTool: exit when the maximum softmax probability exceeds ``theta``."""

    name = "maxprob"
    statistic = "max_prob"
    grid = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995)

    def __init__(self, theta: float = 0.9) -> None:
        super().__init__(theta)


class PatienceExit(ExitRule):
    """PABEE: exit once the prediction stayed unchanged for ``t`` consecutive layers."""

    name = "patience"
    knob = "t"
    knob_type = int
    knob_bounds = (0, None)

    def __init__(self, t: int = 2) -> None:
        super().__init__(t)

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        return tuple(range(0, num_layers))

    def _reset_state(self, num_envs: int) -> None:
        self._prev_pred = np.full(num_envs, -1, dtype=np.int64)
        self._count = np.zeros(num_envs, dtype=np.int64)

    def exit_mask(self, layer, new, logits, infos):  # noqa: D102
        if logits is None:  # the features' run length already counts the unchanged heads
            run = np.rint(self._features_column("patience_fraction") * layer
                          / self._features_column("layer_fraction"))
            return run - 1 >= self.t
        pred = softmax_stats(logits).prediction
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


__all__ = [
    "ExitRule", "StaticExit", "RandomExit", "ThresholdExit", "EntropyExit", "MaxProbExit",
    "PatienceExit", "OracleExit",
]
