"""exitgym: the layers of a pretrained transformer as the steps of a Gymnasium episode.

Importing this package registers the environments (``exitgym/EarlyExit-v0``,
``exitgym/SkipBlock-v0``, ``exitgym/SwitchableDecision-v0``, ``exitgym/TokenExit-v0``) with
string entry points, so it stays light: it never imports torch. The public API below is grouped
by what a user does (like Minari's ``__init__``) and loaded on first use, so heavy modules load
only when they are needed.

- environments: :data:`ENVS`, :func:`register_envs`, :func:`register_reward`,
  :func:`register_observation`
- methods: :func:`register_rule`, :func:`register_agent` (plug-in exit rules and trainers)
- data: :func:`load_task`, :func:`prepare`, :func:`get_cache`, :class:`PrepareConfig`,
  :class:`DataConfig` (the prepared cache that every config names)
- training: :class:`TrainConfig`, :func:`train`, :func:`load_policy`
- evaluation: :func:`evaluate`, :class:`CompareConfig`, :func:`compare`,
  :func:`load_trajectories`, :func:`verify`
- inference: :func:`infer`, :class:`InferenceResult`; generation with a decoder LM:
  :func:`generate`, :class:`GenerationResult`
"""

from __future__ import annotations

import importlib
from typing import Any

from exitgym.registration import ENVS, register_envs

__version__ = "0.1.0"

register_envs()

_PUBLIC: dict[str, str] = {
    # environments
    "register_reward": "exitgym.envs.rewards",
    "register_observation": "exitgym.envs.observations",
    # methods
    "register_rule": "exitgym.agents.registry",
    "register_agent": "exitgym.agents.registry",
    # data
    "load_task": "exitgym.data.tasks",
    "prepare": "exitgym.data.prepare",
    "get_cache": "exitgym.data.prepare",
    "PrepareConfig": "exitgym.data.prepare",
    "DataConfig": "exitgym.data.config",
    # training
    "TrainConfig": "exitgym.experiments.configs",
    "train": "exitgym.experiments.training",
    "load_policy": "exitgym.experiments.policies",
    # evaluation
    "evaluate": "exitgym.agents.rollout",
    "CompareConfig": "exitgym.experiments.configs",
    "compare": "exitgym.experiments.compare",
    "load_trajectories": "exitgym.experiments.trajectories",
    "verify": "exitgym.experiments.replay",
    # inference
    "infer": "exitgym.inference",
    "InferenceResult": "exitgym.inference",
    "generate": "exitgym.experiments.generation",
    "GenerationResult": "exitgym.experiments.generation",
}
"""Public name -> module that defines it (imported on first access)."""

__all__ = ["ENVS", "__version__", "register_envs", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (keeps ``import exitgym`` free of torch)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'exitgym' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
