"""How every exitgym environment picks the input of an episode (numpy only).

A single env and sub-environment ``i`` of a native vector env must draw the same inputs from the
same seed, for every family. :class:`BlockSampler` gives each environment its own generator and
draws ids in blocks of :data:`DRAW_BLOCK`, so a vector env draws for many environments without a
Python call per reset while matching the single env draw for draw; :func:`reset_sample_id` is the
single env's reset (``options={"sample_id": i}`` or the next draw), :func:`check_sample_id` the
validation both kinds share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["DRAW_BLOCK", "BlockSampler", "check_sample_id", "reset_sample_id"]

DRAW_BLOCK: int = 512
"""Sample ids are drawn this many at a time from each environment's generator."""


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


def reset_sample_id(env: gym.Env[Any, Any], sampler: BlockSampler,
                    options: Mapping[str, Any] | None) -> int:
    """The input of a single env's new episode: ``options["sample_id"]`` or the next draw.

    Draws come from ``env.np_random`` (seeded by ``reset(seed=...)``), read only when needed so
    that a reset with a given ``sample_id`` leaves the generator untouched.
    """
    if options and set(options) - {"sample_id"}:
        raise ValueError(
            f"unknown reset options {sorted(set(options) - {'sample_id'})}; allowed: "
            "{'sample_id': int}"
        )
    if options and "sample_id" in options:
        return check_sample_id(options["sample_id"], sampler.num_samples)
    rng = env.np_random
    if rng is not sampler.rngs[0]:
        sampler.set_rng(0, rng)
    return sampler.draw_one()
