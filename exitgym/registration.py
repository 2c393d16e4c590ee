"""Gymnasium registration of every exitgym environment (string entry points only).

Each entry names its single-env class and its native vector class, so
``gym.make_vec(id, num_envs=N, vectorization_mode="vector_entry_point")`` returns one batched
implementation instead of N Python environments.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym


@dataclass(frozen=True)
class EnvSpecEntry:
    """One registered environment."""

    id: str
    """Gymnasium id, ``exitgym/Name-vN``."""
    entry_point: str
    """``module:Class`` of the single environment."""
    vector_entry_point: str | None
    """``module:Class`` of the native batched implementation, if any."""
    description: str
    """One line for ``exitgym envs``."""


ENVS: tuple[EnvSpecEntry, ...] = (
    EnvSpecEntry(
        id="exitgym/EarlyExit-v0",
        entry_point="exitgym.envs.early_exit:EarlyExitEnv",
        vector_entry_point="exitgym.envs.early_exit_vector:EarlyExitVectorEnv",
        description="Walk one input up the layers; at each layer exit (1) or continue (0).",
    ),
    EnvSpecEntry(
        id="exitgym/SkipBlock-v0",
        entry_point="exitgym.envs.skip_block:SkipBlockEnv",
        vector_entry_point="exitgym.envs.skip_block_vector:SkipBlockVectorEnv",
        description="One step per layer: run or skip its attention / feed-forward blocks (live).",
    ),
    EnvSpecEntry(
        id="exitgym/SwitchableDecision-v0",
        entry_point="exitgym.envs.switchable_decision:SwitchableDecisionEnv",
        vector_entry_point="exitgym.envs.switchable_decision_vector:SwitchableDecisionVectorEnv",
        description="One step: choose every skip decision and a token strategy at once (live).",
    ),
    EnvSpecEntry(
        id="exitgym/TokenExit-v0",
        entry_point="exitgym.envs.token_exit:TokenExitEnv",
        vector_entry_point="exitgym.envs.token_exit_vector:TokenExitVectorEnv",
        description="Generate with a decoder LM; at each layer of each token exit (1) or not (0).",
    ),
)


def register_envs() -> None:
    """Register every entry of :data:`ENVS` that is not registered yet (idempotent)."""
    for entry in ENVS:
        if entry.id in gym.registry:
            continue
        gym.register(
            id=entry.id,
            entry_point=entry.entry_point,
            vector_entry_point=entry.vector_entry_point,
            disable_env_checker=False,
        )
