"""Native batched ``exitgym/SwitchableDecision-v0``: ``N`` one-step episodes in one batched run.

``gym.make_vec("exitgym/SwitchableDecision-v0", num_envs=N,
vectorization_mode="vector_entry_point")`` returns this class. Every episode is one step, so all
``N`` episodes form one cohort: ``reset`` embeds them and runs layer 1 in one batched call, and a
step runs each layer ``2..L`` once for the whole batch with per-sample attention / FFN skip masks
after applying each sample's token strategy, then the final head. With the default ``NEXT_STEP``
autoreset every other ``step`` call is the reset step (reward 0); ``autoreset_mode="same_step"``
makes every call a full batch of episodes (terminal observation in ``info["final_obs"]``).

Equal to ``N`` single :class:`~exitgym.envs.switchable_decision.SwitchableDecisionEnv` (tested):
same seeding (``s + i``), same draws, same :func:`~exitgym.envs.switchable_decision.run_decisions`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from exitgym.envs.rewards import RewardShape, make_reward
from exitgym.envs.skip_block import CohortStep, default_options
from exitgym.envs.skip_block_vector import SkipBlockVectorEnv
from exitgym.envs.skip_core import (
    DEFAULT_HEADS,
    DEFAULT_POOLED_CLIP,
    SkipWorld,
    build_world,
    check_policy_flops,
    pooled_space,
)
from exitgym.envs.skip_live import Cohort
from exitgym.envs.switchable_decision import decision_space, run_decisions

__all__ = ["SwitchableDecisionVectorEnv"]


class SwitchableDecisionVectorEnv(SkipBlockVectorEnv):
    """``num_envs`` Switchable Decision episodes run as one batch.

    Takes the keyword arguments of
    :class:`~exitgym.envs.switchable_decision.SwitchableDecisionEnv` (spaces, rewards and the
    decision layout are documented there) plus ``num_envs`` and ``autoreset_mode``
    (``NEXT_STEP``, ``SAME_STEP`` or ``DISABLED``, as in
    :class:`~exitgym.envs.skip_block_vector.SkipBlockVectorEnv`).
    """

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
        reward: str | RewardShape = "flops",
        alpha: float | None = None,
        policy_flops: float = 0.0,
        pooled_clip: float = DEFAULT_POOLED_CLIP,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        world: SkipWorld | None = None,
        **reward_kwargs: Any,
    ) -> None:
        world = world or build_world(task, backbone, split, heads, inputs, labels, text_pairs,
                                     max_length, default_options(heads, prepare_options))
        self.token_strategy = True
        self.policy_flops = check_policy_flops(policy_flops)
        obs_space = pooled_space(world.executor.backbone.hidden_size, pooled_clip, [])
        self._init_common(num_envs, autoreset_mode, render_mode, world, obs_space,
                          decision_space(world.num_layers),
                          make_reward(reward, alpha, **reward_kwargs), extras=False)

    def _step_cohort(self, cohort: Cohort, actions: np.ndarray) -> CohortStep:
        obs, rewards, terminal = run_decisions(self.world, self.reward_shape, self.policy_flops,
                                               self.single_observation_space, cohort, actions)
        done = np.ones(cohort.size, dtype=bool)
        return CohortStep(obs, rewards, done, terminal, None)
