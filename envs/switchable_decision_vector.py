"""Native batched ``exitgym/SwitchableDecision-v0``: ``N`` one-step episodes in one batched run.

``gym.make_vec("exitgym/SwitchableDecision-v0", num_envs=N,
vectorization_mode="vector_entry_point")`` returns this class. Every episode is one step, so all
``N`` episodes form one cohort: ``reset`` embeds them and runs layer 1 in one batched call, and a
step runs each layer ``2..L`` once for the whole batch with per-sample attention / FFN skip masks
after applying each sample's token strategy, then the final head. With the default ``NEXT_STEP``
autoreset every other ``step`` call is the reset step (reward 0); ``autoreset_mode="same_step"``
makes every call a full batch of episodes (terminal observation in ``info["final_obs"]``).

Equal to ``N`` single :class:`~exitgym.envs.switchable_decision.SwitchableDecisionEnv` (tested):
same seeding (``s + i``), same draws, same :func:`~exitgym.envs.skip_core.run_decisions`.
"""

from __future__ import annotations

from exitgym.envs.skip_vector import SkipVectorEnv
from exitgym.envs.switchable_decision import SwitchableFamily

__all__ = ["SwitchableDecisionVectorEnv"]


class SwitchableDecisionVectorEnv(SwitchableFamily, SkipVectorEnv):
    """``num_envs`` Switchable Decision episodes run as one batch.

    Takes the keyword arguments of
    :class:`~exitgym.envs.switchable_decision.SwitchableDecisionEnv` (the fields of
    :class:`~exitgym.envs.settings.SwitchableSettings`; spaces, rewards and the decision layout
    are documented there) plus ``num_envs`` and ``autoreset_mode`` (``NEXT_STEP``, ``SAME_STEP``
    or ``DISABLED``, as in :class:`~exitgym.envs.skip_vector.SkipVectorEnv`).
    """
