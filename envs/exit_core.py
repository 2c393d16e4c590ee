"""Shared core of the single and the native vector early-exit environments (numpy only).

Both environments are built from the same :class:`~exitgym.envs.settings.ExitSettings` by the
same code and read the same precomputed tables, which is what makes ``EarlyExitVectorEnv``
step-for-step identical to ``N`` single ``EarlyExitEnv`` instances:

- :class:`ExitTables`: every per-(sample, layer) quantity a step needs (observation rows, cost,
  FLOPs, cross-entropy, prediction, correctness) computed once from a :class:`LayerCache`;
- :class:`ExitEnvCore`: the part of both environments that settings determine (cache, view,
  tables, reward shape and its tabulated quality, observation space).

Samples are drawn by :class:`~exitgym.envs.sampling.BlockSampler`, shared with the skip envs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from gymnasium import spaces

from exitgym.envs.observations import CombinedView, ViewInputs, make_observation
from exitgym.envs.rewards import RewardShape, cross_entropy
from exitgym.envs.settings import ExitSettings, check_policy_flops

if TYPE_CHECKING:
    from exitgym.backbones.layer_cache import LayerCache

__all__ = ["ExitEnvCore", "ExitTables", "resolve_cache"]


def resolve_cache(settings: ExitSettings) -> LayerCache:
    """Return ``settings.cache`` or load (building on first use) the prepared cache it names.

    ``exitgym.data.prepare`` is imported here, not at module level, because preparing a cache needs
    torch and the environments must import without it.
    """
    cache = settings.cache
    if cache is not None:
        # Duck-typed so a LayerCache from a reloaded module still works.
        missing = [
            a for a in ("pooled", "logits", "labels", "cost", "cum_flops") if not hasattr(cache, a)
        ]
        if missing:
            raise TypeError(
                f"cache must be a LayerCache, got {type(cache).__name__} (no {missing})"
            )
        return cache
    if not isinstance(settings.backbone, str) or not isinstance(settings.heads, str):
        raise ValueError(
            "without cache=..., backbone and heads must be names (e.g. backbone='minilm-l6', "
            "heads='joint'); pass cache= to use model objects"
        )
    from exitgym.data.prepare import get_cache

    return get_cache(task=settings.task, backbone=settings.backbone, split=settings.split,
                     heads=settings.heads, **settings.cache_options())


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view, so a caller cannot corrupt the tables every episode reads."""
    view = array.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)
class ExitTables:
    """Every quantity an exit step reads, indexed ``[sample, layer - 1]``.

    Built once per environment from the cache, the observation view and the policy's FLOPs.
    """

    obs: np.ndarray
    """float32 ``[N, L, d]`` observation of each sample after each layer (read-only)."""
    low: np.ndarray
    """float32 ``[d]`` lower bound of the observation space."""
    high: np.ndarray
    """float32 ``[d]`` upper bound of the observation space."""
    cost: np.ndarray
    """float64 ``[N, L]`` cost fraction ``c_l`` spent by layer ``l`` (policy FLOPs included)."""
    flops: np.ndarray
    """float64 ``[N, L]`` absolute FLOPs spent when at layer ``l`` (policy FLOPs included)."""
    ce: np.ndarray
    """float64 ``[N, L]`` cross-entropy of the gold label at each head."""
    correct: np.ndarray
    """bool ``[N, L]`` head at layer ``l`` predicts the gold label."""
    prediction: np.ndarray
    """int64 ``[N, L]`` argmax prediction of each head."""
    labels: np.ndarray
    """int64 ``[N]`` gold labels."""
    memorized: np.ndarray
    """int64 ``[N]`` memorized layer (1-based)."""
    oracle: np.ndarray
    """int64 ``[N]`` oracle exit layer (1-based)."""
    num_layers: int
    """``L``."""

    @property
    def num_samples(self) -> int:
        """``N``."""
        return int(self.cost.shape[0])

    @classmethod
    def build(cls, cache: LayerCache, view: CombinedView, policy_flops: float) -> ExitTables:
        """Precompute the tables (one pass over the cache; the slow part of construction)."""
        policy_flops = check_policy_flops(policy_flops)
        num_layers = cache.num_layers
        cost = np.asarray(cache.cost(policy_flops), dtype=np.float64)
        steps = np.arange(1, num_layers + 1, dtype=np.float64)[None, :]
        flops = np.asarray(cache.cum_flops, dtype=np.float64) + policy_flops * steps
        inputs = ViewInputs(
            pooled=cache.pooled, logits=cache.logits, cost=cost, num_layers=num_layers
        )
        obs, low, high = view.build(inputs)
        if not np.all(np.isfinite(obs)):
            raise ValueError("the cache holds non-finite pooled states or logits; rebuild it")
        labels = np.asarray(cache.labels, dtype=np.int64)
        return cls(
            obs=_read_only(np.ascontiguousarray(obs, dtype=np.float32)),
            low=low,
            high=high,
            cost=_read_only(cost),
            flops=_read_only(flops),
            ce=_read_only(cross_entropy(cache.logits, labels)),
            correct=_read_only(np.asarray(cache.correct, dtype=bool)),
            prediction=_read_only(np.asarray(cache.logits).argmax(axis=-1).astype(np.int64)),
            labels=_read_only(labels),
            memorized=_read_only(np.asarray(cache.memorized, dtype=np.int64)),
            oracle=_read_only(np.asarray(cache.oracle, dtype=np.int64)),
            num_layers=num_layers,
        )


class ExitEnvCore:
    """What the single and the vector early-exit env build from their settings, the same way.

    A mixin (the single env is a ``gym.Env``, the vector env a ``VectorEnv``): :meth:`_build`
    resolves the cache, the observation view, the tables and the reward shape, and the
    :attr:`reward_shape` property tabulates the shape's quality over the whole cache.
    """

    settings_class: ClassVar[type[ExitSettings]] = ExitSettings
    """The settings of the family (its ``gym.make`` keyword arguments)."""
    settings: ExitSettings
    """The keyword arguments the environment was made with."""
    cache: LayerCache
    """The per-layer cache the episodes read."""
    view: CombinedView
    """The observation view (``view.spec`` is the ``observation=`` string)."""
    tables: ExitTables
    """Every per-(sample, layer) quantity a step reads."""
    dense: bool
    """Dense reward delivery."""
    num_layers: int
    """``L``."""
    forced_last_step: ClassVar[bool] = True
    """Step ``t`` (0-based) acts at layer ``t + 1``, and the action at layer ``L`` is forced
    (any action exits): learners leave it out of ``Σ_t log π`` (it carries no decision)."""

    def _build(self, settings: ExitSettings) -> spaces.Box:
        """Set everything the settings determine; return the observation space of one episode."""
        self.settings = settings
        self.cache = resolve_cache(settings)
        self.view = make_observation(settings.observation)
        self.tables = t = ExitTables.build(self.cache, self.view, settings.policy_flops)
        self.dense = bool(settings.dense)
        self.num_layers = t.num_layers
        self.reward_shape = settings.make_reward()
        return spaces.Box(t.low, t.high, shape=t.low.shape, dtype=np.float32)

    @property
    def reward_shape(self) -> RewardShape:
        """The reward shape; assign another to switch shapes, or change its ``alpha`` / ``lam``.

        A vector env shares one shape between its sub-environments.
        """
        return self._shape

    @reward_shape.setter
    def reward_shape(self, shape: RewardShape) -> None:
        if not isinstance(shape, RewardShape):
            raise TypeError(f"reward_shape must be a RewardShape, got {type(shape).__name__}")
        self._shape = shape
        # Quality depends on the shape but not on its cost weight, so it is tabulated once;
        # ``_quality_flat`` is the ``[N * L]`` view the vector env gathers from.
        self._quality = np.asarray(
            shape.quality(self.tables.ce, self.tables.correct), dtype=np.float64
        )
        self._quality_flat = self._quality.ravel()
