"""The base of both skip environments: one family's logic, shared by its single and vector env.

A skip family (``SkipBlock-v0``, ``SwitchableDecision-v0``) is a :class:`SkipFamily`: how its
settings become spaces, and how one step of a cohort of episodes runs. The same family class is
mixed into its single env (a subclass of :class:`SkipEnv`, a cohort of one) and its native
vector env (a subclass of :class:`~exitgym.envs.skip_vector.SkipVectorEnv`), so both run exactly
the same code. :class:`SkipEnv` holds what the single envs share: construction from settings,
sampling, ``reset``, the checks of ``step`` and ``render``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from exitgym.envs.rewards import RewardShape
from exitgym.envs.sampling import BlockSampler, reset_sample_id
from exitgym.envs.settings import SkipSettings, check_policy_flops, check_render_mode
from exitgym.envs.skip_core import SkipWorld, observe
from exitgym.envs.skip_live import Cohort

__all__ = ["CohortStep", "SkipEnv", "SkipFamily"]


@dataclass(eq=False)
class CohortStep:
    """Outcome of one step of a cohort; arrays are over the cohort's rows before the step."""

    obs: np.ndarray
    """float32 ``[B, d]`` next (or final) observation."""
    rewards: np.ndarray
    """float64 ``[B]``."""
    done: np.ndarray
    """bool ``[B]``: the episode ended (exit or last layer)."""
    terminal: dict[str, np.ndarray]
    """Terminal info arrays over all B rows (meaningful where ``done``)."""
    survivors: Cohort | None
    """The rows that go on (None when every row finished)."""


class SkipFamily(ABC):
    """One skip environment family: what its single and its vector env compute the same way."""

    settings_class: ClassVar[type[SkipSettings]]
    """The family's settings (its ``gym.make`` keyword arguments)."""
    extras: ClassVar[bool]
    """Observations carry the layer fraction and the cost after the pooled state."""

    settings: SkipSettings
    """The keyword arguments the environment was made with."""
    world: SkipWorld
    """Backbone, heads and tokenized inputs the episodes run on."""
    num_layers: int
    """``L``."""
    reward_shape: RewardShape
    """The reward shape (shared by the sub-environments of a vector env)."""
    policy_flops: float
    """FLOPs charged per decision."""

    def _setup(self, settings: SkipSettings) -> tuple[spaces.Box, spaces.Space]:
        """Resolve the world, the reward and the policy FLOPs; return one episode's spaces."""
        self.settings = settings
        self.world = SkipWorld.from_settings(settings)
        self.num_layers = self.world.num_layers
        self.reward_shape = settings.make_reward()
        self.world.check_reward(self.reward_shape)
        self.policy_flops = check_policy_flops(settings.policy_flops)
        return self._spaces()

    @abstractmethod
    def _spaces(self) -> tuple[spaces.Box, spaces.Space]:
        """Observation and action space of one episode (after :meth:`_setup` set the world)."""

    @abstractmethod
    def _step_cohort(self, cohort: Cohort, actions: np.ndarray) -> CohortStep:
        """One step of ``cohort``: ``actions`` holds one int64 action row per cohort row."""

    def step_cohort(self, cohort: Cohort, actions: np.ndarray) -> CohortStep:
        """One step of ``cohort`` outside an episode loop: what skip-policy deployment
        (:mod:`exitgym.inference.skip`) runs, so its answers are this environment's outcomes."""
        return self._step_cohort(cohort, actions)


class SkipEnv(SkipFamily, gym.Env[np.ndarray, Any]):
    """Base of the single skip environments (a cohort of one episode); see the subclasses."""

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}
    title: ClassVar[str]
    """Environment name shown by ``render`` before the first episode."""
    reset_text: ClassVar[str]
    """``render`` line after ``reset`` (``str.format`` of sample_id, num_layers, cost)."""
    end_text: ClassVar[str]
    """``render`` line after the last step (``str.format`` of the terminal info)."""

    def __init__(self, settings: SkipSettings | None = None, **kwargs: Any) -> None:
        """Make the environment from a settings object or its fields as keyword arguments.

        Raises:
            ValueError: A keyword is neither a settings field nor an argument of the reward.
        """
        settings = self.settings_class.resolve(settings, kwargs)
        self.render_mode = check_render_mode(settings.render_mode, self.metadata["render_modes"])
        self.observation_space, self.action_space = self._setup(settings)
        self._sampler = BlockSampler(1, self.world.num_samples)
        self._cohort: Cohort | None = None
        self._last = ""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        sid = reset_sample_id(self, self._sampler, options)
        executor = self.world.executor
        self._cohort = executor.start(np.array([sid]), np.zeros(1, dtype=np.int64))
        obs = observe(self.world, self._cohort, self.observation_space, self.extras)[0]
        cost = float(executor.cost(self._cohort)[0])
        self._last = self.reset_text.format(sample_id=sid, num_layers=self.num_layers, cost=cost)
        return obs, {"layer": 1, "cost": cost, "sample_id": sid}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._cohort is None:
            raise RuntimeError("step() called before reset() or after the episode terminated; "
                               "call reset() to start an episode")
        a = np.asarray(action)
        if not self.action_space.contains(a):
            raise ValueError(f"invalid action {action!r}; allowed: {self._describe_actions()}")
        # A cohort of one: the action becomes its only row.
        actions = a.astype(np.int64).reshape(1, *self.action_space.shape)
        cohort, self._cohort = self._cohort, None
        out = self._step_cohort(cohort, actions)
        self._cohort = out.survivors
        if out.done[0]:
            # numpy scalars become Python numbers; object entries (a decoder's texts and token
            # lists) stay as they are.
            info = {k: v[0].item() if isinstance(v[0], np.generic) else v[0]
                    for k, v in out.terminal.items()}
            self._last = self.end_text.format(**info)
        else:
            assert out.survivors is not None
            cost = float(self.world.executor.cost(out.survivors)[0])
            info = {"layer": out.survivors.layer + 1, "cost": cost,
                    "sample_id": int(out.survivors.sample_ids[0])}
            self._last = f"sample {info['sample_id']}: layer {info['layer']} cost={cost:.3f}"
        return out.obs[0], float(out.rewards[0]), bool(out.done[0]), False, info

    @abstractmethod
    def _describe_actions(self) -> str:
        """What a valid action is (for the error message of an invalid one)."""

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return self._last or f"{self.title}: no episode yet (call reset())"
