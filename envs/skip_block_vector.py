"""Native batched ``exitgym/SkipBlock-v0``: ``N`` episodes through layer i in one backbone call.

``gym.make_vec("exitgym/SkipBlock-v0", num_envs=N, vectorization_mode="vector_entry_point")``
returns this class. Episodes that started together form a *cohort* that moves through the layers
in lockstep: each step runs the cohort's next layer once, batched, with per-sample skip masks
(rows that skip a block are left out of it). Without ``allow_exit`` every episode lasts ``L − 1``
steps, so all ``N`` episodes stay one cohort; with exits, the episodes restarted after an exit
form a new cohort, and a step runs one batched call per cohort (at most ``L − 1``).

Equivalence with ``N`` single environments is tested: ``reset(seed=s)`` seeds sub-environment
``i`` with ``s + i``, samples are drawn exactly as :class:`~exitgym.envs.skip_block.SkipBlockEnv`
draws them, and each cohort is stepped by the same :func:`~exitgym.envs.skip_block.step_cohort`.
Infos have the ``SyncVectorEnv`` layout (one array per key plus a ``_key`` mask).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from exitgym.envs.exit_core import BlockSampler, check_sample_id
from exitgym.envs.rewards import RewardShape, make_reward
from exitgym.envs.skip_block import (
    CohortStep,
    SkipRules,
    default_options,
    make_spaces,
    step_cohort,
)
from exitgym.envs.skip_core import (
    DEFAULT_HEADS,
    DEFAULT_POOLED_CLIP,
    SkipWorld,
    build_world,
    check_policy_flops,
    observe,
)
from exitgym.envs.skip_live import Cohort

__all__ = ["SkipBlockVectorEnv", "parse_autoreset_mode"]


def parse_autoreset_mode(value: AutoresetMode | str) -> AutoresetMode:
    """An :class:`AutoresetMode` from itself or its value; the error lists the allowed ones."""
    try:
        return AutoresetMode(value)
    except ValueError as err:
        allowed = [m.value for m in AutoresetMode]
        raise ValueError(f"unknown autoreset_mode {value!r}; allowed: {allowed}") from err


class SkipBlockVectorEnv(VectorEnv):
    """``num_envs`` SkipBlock episodes, each cohort's layer run as one batched backbone call.

    Takes the keyword arguments of :class:`~exitgym.envs.skip_block.SkipBlockEnv` (spaces,
    rewards and episode rules are documented there) plus:

    Args:
        num_envs: Number of parallel episodes (>= 1).
        autoreset_mode: ``NEXT_STEP`` (default: the step after a termination resets that
            sub-env, ignoring its action, and returns reward 0), ``SAME_STEP`` (reset at once;
            the terminal observation and info go to ``info["final_obs"]`` /
            ``info["final_info"]``) or ``DISABLED`` (reset finished sub-envs yourself with
            ``reset(options={"reset_mask": mask})``).

    ``reset`` accepts ``options={"sample_id": int_or_[num_envs], "reset_mask": bool[num_envs]}``.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        task: str = "rt-polarity",
        backbone: Any = "minilm-l6",
        split: str = "train",
        heads: Any = DEFAULT_HEADS,
        prepare_options: Mapping[str, Any] | None = None,
        inputs: Sequence[str] | Mapping[str, Any] | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        text_pairs: Sequence[str] | None = None,
        max_length: int | None = None,
        reward: str | RewardShape = "vanilla",
        alpha: float | None = None,
        dense: bool = False,
        allow_exit: bool = False,
        token_strategy: bool = False,
        policy_flops: float = 0.0,
        pooled_clip: float = DEFAULT_POOLED_CLIP,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        world: SkipWorld | None = None,
        **reward_kwargs: Any,
    ) -> None:
        world = world or build_world(task, backbone, split, heads, inputs, labels, text_pairs,
                                     max_length, default_options(heads, prepare_options))
        self.token_strategy = bool(token_strategy)
        policy_flops = check_policy_flops(policy_flops)
        obs_space, act_space = make_spaces(world, bool(allow_exit), self.token_strategy,
                                           policy_flops, pooled_clip)
        self.rules = SkipRules(bool(allow_exit), bool(dense), policy_flops, obs_space)
        self._init_common(num_envs, autoreset_mode, render_mode, world, obs_space, act_space,
                          make_reward(reward, alpha, **reward_kwargs), extras=True)

    def _init_common(self, num_envs: int, autoreset_mode: AutoresetMode | str,
                     render_mode: str | None, world: SkipWorld, obs_space: spaces.Box,
                     act_space: spaces.Space, shape: RewardShape, extras: bool) -> None:
        """Set what every live skip vector env has (spaces, sampler, cohorts, autoreset)."""
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or \
                num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if render_mode is not None:
            raise ValueError("the vector env does not render; use render_mode=None")
        self.num_envs = int(num_envs)
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = None
        self.world = world
        self.num_layers = world.num_layers
        self.reward_shape = shape
        self.single_observation_space, self.single_action_space = obs_space, act_space
        self.observation_space = batch_space(obs_space, self.num_envs)
        self.action_space = batch_space(act_space, self.num_envs)
        self._extras = extras
        self._sampler = BlockSampler(self.num_envs, world.num_samples)
        self._cohorts: list[Cohort] = []
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._obs = np.zeros((self.num_envs, obs_space.shape[0]), dtype=np.float32)
        self._started = False

    def _step_cohort(self, cohort: Cohort, actions: np.ndarray) -> CohortStep:
        """One step of a cohort given its rows' actions (overridden by the one-step env)."""
        if self.token_strategy:
            return step_cohort(self.world, self.reward_shape, self.rules, cohort,
                               actions[:, 0].copy(), actions[:, 1].copy())
        return step_cohort(self.world, self.reward_shape, self.rules, cohort, actions, None)

    # ---- reset --------------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        n = self.num_envs
        options = dict(options or {})
        unknown = set(options) - {"sample_id", "reset_mask"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: 'sample_id' "
                             "(int or [num_envs] ints) and 'reset_mask' (bool [num_envs])")
        rows = self._reset_rows(options.get("reset_mask"))
        seeds = _seeds(seed, n)
        for i in rows:
            if seeds[i] is not None:
                self._sampler.set_rng(int(i), seeding.np_random(seeds[i])[0])
            elif self._sampler.rngs[i] is None:
                self._sampler.set_rng(int(i), seeding.np_random(None)[0])
        sids = None
        if "sample_id" in options:
            sids = self._sample_ids(options["sample_id"])[rows]
        self._started = True
        info = self._base_info()
        self._start(rows, info, sids)
        if len(rows) < n:
            for key in ("layer", "cost", "sample_id"):
                info[f"_{key}"] = np.isin(np.arange(n), rows)
        return self._obs.copy(), info

    def _reset_rows(self, mask: Any) -> np.ndarray:
        n = self.num_envs
        if mask is None:
            return np.arange(n)
        mask = np.asarray(mask)
        if mask.shape != (n,) or mask.dtype != np.bool_ or not mask.any():
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({n},) with "
                             f"at least one True, got dtype {mask.dtype} shape {mask.shape}")
        if not self._started and not mask.all():
            raise RuntimeError("the first reset() must reset every sub-environment")
        return np.flatnonzero(mask)

    def _sample_ids(self, value: Any) -> np.ndarray:
        n, total = self.num_envs, self.world.num_samples
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return np.full(n, check_sample_id(value, total), dtype=np.int64)
        ids = np.asarray(value)
        if ids.shape != (n,):
            raise ValueError(f"options['sample_id'] must be an int or {n} ints, got shape "
                             f"{ids.shape}")
        return np.array([check_sample_id(v, total) for v in ids.tolist()], dtype=np.int64)

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
                                  self._extras)
        self._needs_reset[rows] = False
        info["layer"][rows] = 1
        info["cost"][rows] = self.world.executor.cost(cohort)
        info["sample_id"][rows] = sids

    def _base_info(self) -> dict[str, Any]:
        n = self.num_envs
        ones = np.ones(n, dtype=bool)
        return {"layer": np.zeros(n, dtype=np.int64), "_layer": ones,
                "cost": np.zeros(n, dtype=np.float64), "_cost": ones.copy(),
                "sample_id": np.zeros(n, dtype=np.int64), "_sample_id": ones.copy()}

    # ---- step ---------------------------------------------------------------------------------
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        a = self._parse(actions)
        n, mode = self.num_envs, self.autoreset_mode
        pending = self._needs_reset.copy()
        if pending.any() and mode is AutoresetMode.DISABLED:
            raise RuntimeError(f"sub-environments {np.flatnonzero(pending).tolist()} have "
                               "terminated; with autoreset_mode=DISABLED reset them with "
                               "reset(options={'reset_mask': mask})")
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
                final_obs = np.full(n, None, dtype=object)
                for k in np.flatnonzero(done):
                    final_obs[k] = self._obs[k].copy()
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
        if not self._started:
            raise RuntimeError("step() called before reset(); call reset() first")
        a = np.asarray(actions)
        shape = self.action_space.shape
        if a.shape != shape or a.dtype.kind not in "iu" or not self.action_space.contains(
                a.astype(self.action_space.dtype)):
            raise ValueError(f"actions must be an integer array of shape {shape} in "
                             f"{self.single_action_space} per sub-env, got dtype {a.dtype} "
                             f"shape {a.shape} values {np.unique(a)[:10]}")
        return a.astype(np.int64)


def _seeds(seed: int | list[int | None] | None, n: int) -> list[int | None]:
    """Per-sub-env seeds: ``seed + i`` (gymnasium's convention), a list, or all None."""
    if seed is None:
        return [None] * n
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise ValueError(f"seed list must have num_envs={n} entries, got {len(seeds)}")
    return seeds
