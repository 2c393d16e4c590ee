"""The base of both native skip vector envs: ``N`` episodes through layer i in one backbone call.

Episodes that started together form a *cohort* that moves through the layers in lockstep: each
step runs the cohort's next layer once, batched, with per-sample skip masks (rows that skip a
block are left out of it), by the family's own ``_step_cohort`` — the code its single env runs on
a cohort of one (:class:`~exitgym.envs.skip_env.SkipFamily`). Episodes restarted after an early
end form a new cohort, and a step runs one batched call per cohort.

Seeding, sampling, reset options and the info layout follow
:class:`~exitgym.envs.vector.NativeVectorEnv`, so the vector env equals ``N`` single envs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from exitgym.envs.settings import SkipSettings
from exitgym.envs.skip_core import observe
from exitgym.envs.skip_env import SkipFamily
from exitgym.envs.skip_live import Cohort
from exitgym.envs.vector import NativeVectorEnv, boxed_rows

__all__ = ["SkipVectorEnv"]


class SkipVectorEnv(SkipFamily, NativeVectorEnv):
    """Base of the native skip vector envs; see the subclasses for each family.

    Takes the keyword arguments of the family's single env plus:

    Args:
        num_envs: Number of parallel episodes (>= 1).
        autoreset_mode: ``NEXT_STEP`` (default: the step after a termination resets that
            sub-env, ignoring its action, and returns reward 0), ``SAME_STEP`` (reset at once;
            the terminal observation and info go to ``info["final_obs"]`` /
            ``info["final_info"]``) or ``DISABLED`` (reset finished sub-envs yourself with
            ``reset(options={"reset_mask": mask})``).

    ``reset`` accepts ``options={"sample_id": int_or_[num_envs], "reset_mask": bool[num_envs]}``.
    """

    def __init__(self, num_envs: int = 1, settings: SkipSettings | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                 **kwargs: Any) -> None:
        """Make ``num_envs`` slots from the family's settings or their fields as keywords."""
        settings = self.settings_class.resolve(settings, kwargs)
        self._check_vector_args(num_envs, autoreset_mode, settings.render_mode)
        obs_space, act_space = self._setup(settings)
        self._init_slots(obs_space, act_space, self.world.num_samples)
        self._cohorts: list[Cohort] = []
        self._obs = np.zeros((self.num_envs, obs_space.shape[0]), dtype=np.float32)

    # ---- reset --------------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        rows, sids = self._reset_rows(seed, options)
        self._started = True
        info = self._base_info(rows)
        self._start(rows, info, sids)
        return self._obs.copy(), info

    def _start(self, rows: np.ndarray, info: dict[str, Any], sids: np.ndarray | None = None
               ) -> None:
        """Start new episodes in sub-envs ``rows`` (one batched embed + layer 1)."""
        if len(rows) == 0:
            return
        leaving = np.zeros(self.num_envs, dtype=bool)
        leaving[rows] = True
        kept = []
        for cohort in self._cohorts:
            stay = ~leaving[cohort.env_ids]
            if stay.all():
                kept.append(cohort)
            elif stay.any():
                kept.append(cohort.select(stay))
        if sids is None:
            sids = self._sampler.draw(rows)
        cohort = self.world.executor.start(sids, rows)
        kept.append(cohort)
        self._cohorts = kept
        self._obs[rows] = observe(self.world, cohort, self.single_observation_space,
                                  self.extras)
        self._needs_reset[rows] = False
        info["layer"][rows] = 1
        info["cost"][rows] = self.world.executor.cost(cohort)
        info["sample_id"][rows] = sids

    # ---- step ---------------------------------------------------------------------------------
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        a = self._parse(actions)
        n, mode = self.num_envs, self.autoreset_mode
        pending = self._check_pending().copy()
        rewards = np.zeros(n, dtype=np.float64)
        done = np.zeros(n, dtype=bool)
        info = self._base_info()
        terminal: dict[str, np.ndarray] = {}
        survivors: list[Cohort] = []
        ex = self.world.executor
        for cohort in self._cohorts:
            env = cohort.env_ids
            out = self._step_cohort(cohort, a[env])
            self._obs[env] = out.obs
            rewards[env] = out.rewards
            done[env] = out.done
            for key, values in out.terminal.items():
                if key not in terminal:
                    terminal[key] = np.zeros(n, dtype=values.dtype)
                terminal[key][env[out.done]] = values[out.done]
            if out.survivors is not None:
                s = out.survivors
                survivors.append(s)
                info["layer"][s.env_ids] = s.layer + 1
                info["cost"][s.env_ids] = ex.cost(s)
                info["sample_id"][s.env_ids] = s.sample_ids
        self._cohorts = survivors
        for key in ("layer", "cost", "sample_id"):
            if key in terminal:
                info[key][done] = terminal[key][done]
        terminal = {k: v for k, v in terminal.items() if k not in ("layer", "cost", "sample_id")}
        self._start(np.flatnonzero(pending), info)
        if done.any():
            if mode is AutoresetMode.SAME_STEP:
                final_obs = boxed_rows(n, np.flatnonzero(done), self._obs[done])
                final_info = {**{k: info[k].copy() for k in ("layer", "cost", "sample_id")},
                              **terminal}
                final_info = {k: np.where(done, v, np.zeros_like(v)) for k, v in
                              final_info.items()}
                final_info.update({f"_{k}": done.copy() for k in list(final_info)})
                info["final_obs"], info["_final_obs"] = final_obs, done.copy()
                info["final_info"], info["_final_info"] = final_info, done.copy()
                self._start(np.flatnonzero(done), info)
            else:
                for key, values in terminal.items():
                    info[key], info[f"_{key}"] = values, done.copy()
                self._needs_reset = done.copy()
        return self._obs.copy(), rewards, done, np.zeros(n, dtype=bool), info

    def _parse(self, actions: Any) -> np.ndarray:
        self._check_started()
        a = np.asarray(actions)
        shape = self.action_space.shape
        if a.shape != shape or a.dtype.kind not in "iu" or not self.action_space.contains(
                a.astype(self.action_space.dtype)):
            raise ValueError(f"actions must be an integer array of shape {shape} in "
                             f"{self.single_action_space} per sub-env, got dtype {a.dtype} "
                             f"shape {a.shape} values {np.unique(a)[:10]}")
        return a.astype(np.int64)
