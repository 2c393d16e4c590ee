"""Native batched ``exitgym/TokenExit-v0``: ``N`` generation episodes, one batched call per layer.

``gym.make_vec("exitgym/TokenExit-v0", num_envs=N, vectorization_mode="vector_entry_point")``
returns this class. The ``N`` episodes share one :class:`~exitgym.envs.token_runner.TokenRunner`
(one KV cache with ``N`` rows): a step moves every continuing episode up one layer with one layer
call per distinct layer index, exits every exiting episode at once, and starts their next tokens'
layer 1 in one call. Episodes draw prompts, seed and reset exactly like ``N`` single envs seeded
``s + i``; the same actions give the same tokens, exits and (to float rounding of the batched
products) rewards, and identical ones in cached mode (tests check both).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from exitgym.envs.settings import TokenExitSettings
from exitgym.envs.token_core import TokenCore
from exitgym.envs.vector import NativeVectorEnv

__all__ = ["TokenExitVectorEnv"]


class TokenExitVectorEnv(TokenCore, NativeVectorEnv):
    """``num_envs`` TokenExit episodes stepped together (see ``TokenExitEnv`` for the rules).

    Args:
        num_envs: number of parallel episodes (>= 1).
        settings: a :class:`TokenExitSettings`, or its fields as keyword arguments.
        autoreset_mode: ``NEXT_STEP`` (default), ``SAME_STEP`` (terminal observation and info in
            ``info["final_obs"]`` / ``info["final_info"]``) or ``DISABLED``.
    """

    def __init__(self, num_envs: int = 1, settings: TokenExitSettings | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                 **kwargs: Any) -> None:
        settings = self.settings_class.resolve(settings, kwargs)
        self._check_vector_args(num_envs, autoreset_mode, settings.render_mode)
        single_space = self._build(settings)
        self._init_slots(single_space, spaces.Discrete(2), len(self.world.prompt_ids))
        self._init_rows(self.num_envs)

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        rows, sample_ids = self._reset_rows(seed, options)
        sids = self._sampler.draw(rows) if sample_ids is None else sample_ids
        info: dict[str, Any] = {}
        for row, row_info in zip(rows, self._begin(rows.tolist(), sids.tolist()), strict=True):
            self._add_info(info, row_info, int(row))
        self._needs_reset[rows] = False
        self._started = True
        return self._last_obs.copy(), info

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        a = np.asarray(actions)
        if a.shape != (self.num_envs,) or a.dtype.kind not in "iub" or (
                a.size and (a.min() < 0 or a.max() > 1)):
            raise ValueError(f"actions must be {self.num_envs} integers, 0 (continue) or 1 "
                             f"(exit), got {actions!r}")
        self._check_started()
        n = self.num_envs
        pending = self._check_pending()
        rewards = np.zeros(n)
        terminated = np.zeros(n, dtype=bool)
        info: dict[str, Any] = {}
        restart = np.flatnonzero(pending)
        live = ~pending
        exiting = live & ((a == 1) | (self._layer == self.num_layers - 1))
        going_up = np.flatnonzero(live & ~exiting).tolist()
        for row, row_info in zip(going_up, self._advance(going_up), strict=True):
            self._add_info(info, row_info, row)
        exits = np.flatnonzero(exiting).tolist()
        if exits:
            row_rewards, done, infos = self._exit(exits)
            rewards[exits] = row_rewards
            terminated[exits] = done
            for row, row_info in zip(exits, infos, strict=True):
                if done[exits.index(row)] and self.autoreset_mode is AutoresetMode.SAME_STEP:
                    self._add_info(info, {"final_obs": self._last_obs[row].copy(),
                                          "final_info": row_info}, row)
                else:
                    self._add_info(info, row_info, row)
        finished = np.flatnonzero(terminated)
        if self.autoreset_mode is AutoresetMode.SAME_STEP and finished.size:
            restart = np.concatenate([restart, finished])
        if restart.size:
            sids = self._sampler.draw(restart)
            for row, row_info in zip(restart, self._begin(restart.tolist(), sids.tolist()),
                                     strict=True):
                self._add_info(info, row_info, int(row))
        if self.autoreset_mode is not AutoresetMode.SAME_STEP:
            self._needs_reset = terminated.copy()
        return self._last_obs.copy(), rewards, terminated, np.zeros(n, dtype=bool), info
