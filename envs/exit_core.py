"""Shared core of the single and the native vector early-exit environments (numpy only).

Both environments read the same precomputed tables and draw samples the same way, which is what
makes ``EarlyExitVectorEnv`` step-for-step identical to ``N`` single ``EarlyExitEnv`` instances:

- :class:`ExitTables`: every per-(sample, layer) quantity a step needs (observation rows, cost,
  FLOPs, cross-entropy, prediction, correctness) computed once from a :class:`LayerCache`;
- :class:`BlockSampler`: per-environment sample draws in blocks of :data:`DRAW_BLOCK` from each
  environment's own generator, so the vector env can draw for many environments without a Python
  call per reset while matching the single env draw for draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from exitgym.envs.observations import CombinedView, ViewInputs
from exitgym.envs.rewards import cross_entropy

if TYPE_CHECKING:
    from exitgym.backbones.layer_cache import LayerCache

__all__ = ["DRAW_BLOCK", "BlockSampler", "ExitTables", "check_sample_id", "resolve_cache"]

DRAW_BLOCK: int = 512
"""Sample ids are drawn this many at a time from each environment's generator."""


def resolve_cache(
    cache: LayerCache | None, task: str, backbone: Any, split: str, heads: Any
) -> LayerCache:
    """Return ``cache`` or load (building on first use) the prepared cache for the arguments.

    ``exitgym.data.prepare`` is imported here, not at module level, because preparing a cache needs
    torch and the environments must import without it.
    """
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
    if not isinstance(backbone, str) or not isinstance(heads, str):
        raise ValueError(
            "without cache=..., backbone and heads must be names (e.g. backbone='minilm-l6', "
            "heads='frozen'); pass cache= to use model objects"
        )
    from exitgym.data.prepare import get_cache

    return get_cache(task=task, backbone=backbone, split=split, heads=heads)


def check_sample_id(value: Any, num_samples: int) -> int:
    """Validate a user-given sample id; the error names the allowed range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"options['sample_id'] must be an integer in [0, {num_samples - 1}], got {value!r}"
        )
    if not 0 <= int(value) < num_samples:
        raise ValueError(
            f"options['sample_id']={int(value)} is out of range; this cache has {num_samples} "
            f"samples, so it must be in [0, {num_samples - 1}]"
        )
    return int(value)


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
        policy_flops = float(policy_flops)
        if not np.isfinite(policy_flops) or policy_flops < 0:
            raise ValueError(f"policy_flops must be a finite number >= 0, got {policy_flops!r}")
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


class BlockSampler:
    """Uniform sample ids for ``num_envs`` environments, each from its own generator.

    Environment ``i`` draws ``DRAW_BLOCK`` ids at a time with ``rng_i.integers(N, size=DRAW_BLOCK)``
    and hands them out in order; a new generator (a seeded reset) discards the rest of the block.
    A single env and sub-env ``i`` of the vector env therefore draw the same ids from the same
    seed, and the vector env calls into Python only once per block, not once per reset.
    """

    def __init__(self, num_envs: int, num_samples: int) -> None:
        self.num_samples = num_samples
        self.rngs: list[np.random.Generator | None] = [None] * num_envs
        self.buffer = np.zeros((num_envs, DRAW_BLOCK), dtype=np.int64)
        self.pos = np.full(num_envs, DRAW_BLOCK, dtype=np.int64)

    def set_rng(self, env: int, rng: np.random.Generator) -> None:
        """Use ``rng`` for environment ``env`` from its next draw on (discarding its block)."""
        self.rngs[env] = rng
        self.pos[env] = DRAW_BLOCK

    def _refill(self, env: int) -> None:
        rng = self.rngs[env]
        if rng is None:
            raise RuntimeError(f"environment {env} has no random generator; call reset() first")
        self.buffer[env] = rng.integers(self.num_samples, size=DRAW_BLOCK)
        self.pos[env] = 0

    def draw_one(self, env: int = 0) -> int:
        """Next id of one environment (the single env's path)."""
        if self.pos[env] >= DRAW_BLOCK:
            self._refill(env)
        pos = int(self.pos[env])
        self.pos[env] = pos + 1
        return int(self.buffer[env, pos])

    def draw(self, envs: np.ndarray) -> np.ndarray:
        """Next id of each environment in ``envs`` (distinct indices), vectorized."""
        pos = self.pos[envs]
        empty = pos >= DRAW_BLOCK
        if empty.any():
            for env in envs[empty]:
                self._refill(int(env))
            pos = self.pos[envs]
        self.pos[envs] = pos + 1
        return self.buffer[envs, pos]
