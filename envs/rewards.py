"""Reward shapes for the exit environments: a registry of small objects, users can add their own.

Every shape writes the episode return as ``quality(exit layer) − w · c_t``: a quality term read at
the exit layer ``t`` and a cost term, the cost fraction ``c_t`` (docs/design.md) times a per-sample
cost weight ``w``. Splitting a shape into these two pieces is what lets one object serve both
delivery modes of the environments:

- *terminal*: the whole return arrives at the exit step;
- *dense*: each step pays ``−w · Δcost`` for the layers it ran, and the exit step adds the quality.

Both give the same episode return (exactly, up to float rounding), so an agent can be trained on
either without changing what it optimizes.

Shapes are vectorized over numpy arrays so the native vector env evaluates a whole batch at once.
The cost weight is read on every step, so changing it at run time (``shape.alpha = …`` or, for the
``flops`` shape, ``shape.lam = …``, as the lexicographic optimizer does) takes effect on the next
step; in dense mode, change it between episodes if the dense and terminal returns must agree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np

from exitgym.utils.plugins import GROUPS, failed_note, load_entry_points
from exitgym.utils.registry import registering

__all__ = [
    "DEFAULT_ALPHA",
    "REWARDS",
    "AccuracyReward",
    "FlopsReward",
    "HardnessReward",
    "RewardShape",
    "VanillaReward",
    "cross_entropy",
    "make_reward",
    "register_reward",
]

DEFAULT_ALPHA: float = 0.2
"""Default cost weight α.

Chosen from the prepared ``rt-polarity`` × ``minilm-l6`` frozen-head cache (train split): the
per-sample best exit under ``vanilla`` (knowing the label, so an upper bound for a policy) costs
0.55 of the model at α = 0.05, 0.41 at α = 0.2 and 0.29 at α = 0.5, keeping 91.8 / 91.7 / 90.3 %
accuracy (oracle exit: 0.29 cost, 91.8 %). α = 0.2 sits in the middle of that useful range.
Sweep α to trace a quality–cost curve.
"""


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-layer cross-entropy ``CE_l(y) = −log softmax(logits_l)[y]`` in float64.

    Args:
        logits: ``[N, L, C]`` head logits.
        labels: ``[N]`` gold label ids.

    Returns:
        ``[N, L]`` float64, computed with a stable log-sum-exp.
    """
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(axis=-1)) + top[..., 0]
    idx = np.asarray(labels, dtype=np.int64)[:, None, None]
    gold = np.take_along_axis(z, np.broadcast_to(idx, (*z.shape[:2], 1)), axis=-1)[..., 0]
    return lse - gold


class RewardShape(ABC):
    """One reward shape: ``R = quality(t) − w · c_t`` with a per-sample cost weight ``w``.

    Subclasses set :attr:`name` and implement :meth:`quality` and :meth:`cost_weight`; both take
    numpy arrays (any shape) so single and vector environments share the code. Environments
    tabulate :meth:`quality` over the whole cache once (when the shape is set), so it must not
    depend on run-time parameters; :meth:`cost_weight` is read on every step and may.
    """

    name: ClassVar[str] = ""
    """Registry key (set by :func:`register_reward`)."""

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        """Create the shape.

        Args:
            alpha: Cost weight α (>= 0, finite); settable later through the attribute.
        """
        self.alpha = alpha

    @property
    def alpha(self) -> float:
        """Cost weight α; validated on every assignment so a bad value fails where it is set."""
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        value = float(value)
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"reward alpha must be a finite number >= 0, got {value!r}")
        self._alpha = value

    @abstractmethod
    def quality(self, ce: np.ndarray, correct: np.ndarray) -> np.ndarray:
        """Quality of exiting at a layer, from that head's cross-entropy and correctness."""

    @abstractmethod
    def cost_weight(self, memorized: np.ndarray, num_layers: int) -> np.ndarray | float:
        """Weight ``w`` of the cost fraction for samples with memorized layers ``memorized``."""

    def terminal(
        self,
        ce: np.ndarray,
        correct: np.ndarray,
        cost: np.ndarray,
        memorized: np.ndarray,
        num_layers: int,
    ) -> np.ndarray:
        """Whole-episode return of exiting with the given CE, correctness and cost fraction."""
        return self.quality(ce, correct) - self.cost_weight(memorized, num_layers) * cost

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha!r})"


_REWARD_T = TypeVar("_REWARD_T", bound=type[RewardShape])

REWARDS: dict[str, type[RewardShape]] = {}
"""Registered reward shapes by name (``vanilla``, ``hardness``, ``accuracy``, ``flops``, ...)."""


def register_reward(name: str) -> Callable[[_REWARD_T], _REWARD_T]:
    """Class decorator adding a :class:`RewardShape` subclass to :data:`REWARDS` under ``name``.

    Example::

        @register_reward("cheap-depth")
        class CheapDepth(VanillaReward):
            def cost_weight(self, memorized, num_layers):
                return 0.5 * self.alpha

    Raises:
        ValueError: ``name`` is empty or already registered (re-registering the same class is
            allowed, so module reloads do not fail).
    """
    return registering(REWARDS, RewardShape, "reward", name)


def load_reward_plugins() -> None:
    """Register the reward shapes of installed plug-ins (entry-point group ``exitgym.rewards``)."""
    load_entry_points(GROUPS["rewards"], lambda name, cls: register_reward(name)(cls))


def make_reward(name: str | RewardShape, alpha: float | None = None, **kwargs: Any) -> RewardShape:
    """Build a registered reward shape (or pass an instance through unchanged).

    Args:
        name: Registered name, or an existing :class:`RewardShape` (returned as is; then ``alpha``
            and ``kwargs`` must be empty).
        alpha: Cost weight; ``None`` uses :data:`DEFAULT_ALPHA` (or the shape's own default).
        **kwargs: Extra constructor arguments of the shape (e.g. ``lam`` for ``flops``).

    Raises:
        ValueError: Unknown name (the message lists the registered ones) or bad arguments.
    """
    if isinstance(name, RewardShape):
        if alpha is not None or kwargs:
            raise ValueError("pass alpha / reward kwargs to the shape itself, not with an instance")
        return name
    if name not in REWARDS:
        load_reward_plugins()
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; registered rewards: {sorted(REWARDS)}"
                         f"{failed_note(GROUPS['rewards'], [name])}")
    if alpha is not None:
        kwargs["alpha"] = alpha
    try:
        return REWARDS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad arguments for reward {name!r}: {err}") from err


@register_reward("vanilla")
class VanillaReward(RewardShape):
    """ConsistentEE Eq. 3 with the FLOPs fraction: ``R = −CE_t(y) − α · c_t``."""

    def quality(self, ce: np.ndarray, correct: np.ndarray) -> np.ndarray:
        return -ce

    def cost_weight(self, memorized: np.ndarray, num_layers: int) -> np.ndarray | float:
        return self.alpha


@register_reward("hardness")
class HardnessReward(VanillaReward):
    """ConsistentEE Eq. 4: ``R = −CE_t(y) − α · (1 − m/L) · c_t``.

    Easy inputs (small memorized layer ``m``) pay more for depth; inputs only the last head gets
    right (``m = L``) pay nothing, so the policy learns to let them run.
    """

    def cost_weight(self, memorized: np.ndarray, num_layers: int) -> np.ndarray | float:
        return self.alpha * (1.0 - np.asarray(memorized, dtype=np.float64) / num_layers)


@register_reward("accuracy")
class AccuracyReward(RewardShape):
    """``R = 1[correct at t] − α · c_t``: optimizes accuracy directly (sparse, high variance)."""

    def quality(self, ce: np.ndarray, correct: np.ndarray) -> np.ndarray:
        return np.asarray(correct, dtype=np.float64)

    def cost_weight(self, memorized: np.ndarray, num_layers: int) -> np.ndarray | float:
        return self.alpha


@register_reward("flops")
class FlopsReward(VanillaReward):
    """Switchable Decision: ``R = quality + λ · computation = −CE_t(y) − λ · c_t``.

    ``λ`` is this shape's cost weight and is meant to change while training: the lexicographic
    optimizer sets ``env.unwrapped.reward_shape.lam = λ`` (single env) or
    ``vec_env.unwrapped.reward_shape.lam = λ`` (native vector env) after each update.
    ``lam`` and ``alpha`` are the same number.
    """

    def __init__(self, alpha: float | None = None, lam: float | None = None) -> None:
        """Create the shape.

        Args:
            alpha: Alias of ``lam`` (so ``make_reward("flops", alpha=a)`` works like the others).
            lam: Initial λ; defaults to ``alpha`` or :data:`DEFAULT_ALPHA`.

        Raises:
            ValueError: Both given and different.
        """
        if alpha is not None and lam is not None and float(alpha) != float(lam):
            raise ValueError(f"flops reward: give lam or alpha, not both ({lam=} != {alpha=})")
        value = lam if lam is not None else alpha
        super().__init__(DEFAULT_ALPHA if value is None else value)

    @property
    def lam(self) -> float:
        """λ, the weight of the computation term (same as :attr:`alpha`)."""
        return self.alpha

    @lam.setter
    def lam(self, value: float) -> None:
        self.alpha = value

    def __repr__(self) -> str:
        return f"FlopsReward(lam={self.lam!r})"
