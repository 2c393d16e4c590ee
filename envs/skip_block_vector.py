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

from exitgym.envs.skip_block import SkipBlockFamily
from exitgym.envs.skip_vector import SkipVectorEnv

__all__ = ["SkipBlockVectorEnv"]


class SkipBlockVectorEnv(SkipBlockFamily, SkipVectorEnv):
    """``num_envs`` SkipBlock episodes, each cohort's layer run as one batched backbone call.

    Takes the keyword arguments of :class:`~exitgym.envs.skip_block.SkipBlockEnv` (the fields of
    :class:`~exitgym.envs.settings.SkipBlockSettings`; spaces, rewards and episode rules are
    documented there) plus ``num_envs`` and ``autoreset_mode`` (see
    :class:`~exitgym.envs.skip_vector.SkipVectorEnv`).
    """
