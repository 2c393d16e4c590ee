"""Checkpoints of stable-baselines3 training that resume bit-identically, without SB3's pickles.

SB3's own ``save`` writes a zip of cloudpickled objects, which exitgym never loads. A checkpoint
here is taken between two updates (when a rollout is about to start) and holds:

- tensors (safetensors): the policy's ``state_dict`` (DQN's target network included), the
  optimizer's state (:func:`~exitgym.utils.torch_state.optimizer_tensors`), torch's generator,
  and every action the run sent to its envs (``[steps, n_envs]``);
- JSON: the algorithm's counters (timesteps, updates, episodes, DQN's ``_n_calls`` and
  exploration rate), the optimizer's parameter groups, and the numpy, Python and action-space
  generators (PPO shuffles minibatches and DQN samples its replay buffer with numpy's global
  generator; DQN explores with the action space's).

The environments are not serialised. They are deterministic given their seeds and the actions
(randomness only through ``reset(seed=...)`` / ``np_random``), so :func:`restore_sb3` re-steps
freshly made envs, seeded as the original ones were, through the recorded actions: that rebuilds
each env mid-episode, the Monitor statistics, the last observations, the episode-info buffer and
(off-policy) the replay buffer exactly. Cached exit envs step in microseconds, so this costs
seconds for 10⁵ steps.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from exitgym.utils.torch_state import load_optimizer_tensors, optimizer_tensors

COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_current_progress_remaining",
            "_n_calls", "exploration_rate")
"""Attributes of an SB3 algorithm restored as they were (those it has)."""

State = tuple[dict[str, torch.Tensor], dict[str, Any]]
"""``(tensors, meta)`` of a checkpoint: safetensors and JSON."""


def sb3_state(model: Any, actions: list[np.ndarray], extra: dict[str, Any]) -> State:
    """The state of ``model`` between two updates, with the actions sent so far.

    Args:
        model: the SB3 algorithm.
        actions: one array of ``n_envs`` actions per vector step since training started.
        extra: JSON-able state of the caller (its logging callback, update count).
    """
    tensors = {f"policy.{k}": v.detach().contiguous().cpu()
               for k, v in model.policy.state_dict().items()}
    optim, groups = optimizer_tensors(model.policy.optimizer)
    tensors.update(optim)
    tensors["torch_rng"] = torch.get_rng_state()
    shape = (0, model.n_envs, *model.action_space.shape)
    tensors["actions"] = torch.from_numpy(
        np.stack(actions).astype(np.int64) if actions else np.zeros(shape, np.int64))
    legacy = np.random.get_state()
    python = random.getstate()
    meta = {"counters": {k: _plain(getattr(model, k)) for k in COUNTERS if hasattr(model, k)},
            "param_groups": groups,
            "numpy_rng": [legacy[0], legacy[1].tolist(), *(_plain(v) for v in legacy[2:])],
            "python_rng": [python[0], list(python[1]), python[2]],
            "action_space_rng": model.action_space.np_random.bit_generator.state,
            "extra": extra}
    return tensors, meta


def restore_sb3(model: Any, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> list[
        np.ndarray]:
    """Put a :func:`sb3_state` back into a freshly built ``model`` (same config, seed and envs).

    The envs are re-stepped through the recorded actions first (they draw from their own
    generators only), then the weights, optimizer, counters and generators are restored, so the
    next ``learn(..., reset_num_timesteps=False)`` continues exactly.

    Returns:
        The recorded actions, one array per vector step (later checkpoints extend them).
    """
    actions = [a for a in tensors["actions"].numpy()]
    _replay(model, actions)
    model.policy.load_state_dict({k[7:]: v for k, v in tensors.items()
                                  if k.startswith("policy.")})
    load_optimizer_tensors(model.policy.optimizer, tensors, meta["param_groups"])
    for key, value in meta["counters"].items():
        setattr(model, key, value)
    torch.set_rng_state(tensors["torch_rng"])
    name, keys, *rest = meta["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    model.action_space.np_random.bit_generator.state = meta["action_space_rng"]
    return actions


def _replay(model: Any, actions: list[np.ndarray]) -> None:
    """Step the model's envs from their first reset through ``actions``, keeping the same books
    ``collect_rollouts`` keeps (last observation, episode starts, episode infos, replay buffer)."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    env = model.env
    model._last_obs = env.reset()  # consumes the seeds, as learn()'s first reset did
    model._last_episode_starts = np.ones((env.num_envs,), dtype=bool)
    model.ep_info_buffer = deque(maxlen=model._stats_window_size)
    model.ep_success_buffer = deque(maxlen=model._stats_window_size)
    off_policy = isinstance(model, OffPolicyAlgorithm)
    for action in actions:
        new_obs, rewards, dones, infos = env.step(action)
        model._update_info_buffer(infos, dones)
        if off_policy:  # discrete actions: what is stored is what was sent
            model._store_transition(model.replay_buffer, action, new_obs, rewards, dones, infos)
        else:
            model._last_obs, model._last_episode_starts = new_obs, dones


def _plain(value: Any) -> Any:
    """A numpy scalar as a Python one (JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def checkpoint_callback(every: int, actions: list[np.ndarray],
                        save: Callable[[int, State], None] | None,
                        after_update: Callable[[int], None] | None,
                        extra: Callable[[], dict[str, Any]], updates: int = 0) -> Any:
    """SB3 callback: records every action sent, and between updates (a rollout about to start)
    counts the update, checkpoints every ``every`` updates with ``save(timesteps, state)`` and
    calls ``after_update(updates)``.

    Args:
        every: updates (rollout + training phases) between checkpoints.
        actions: the list the actions are appended to (restored ones first, on resume).
        save: writes a checkpoint; None: none are written.
        after_update: called with the update count at every boundary (tests interrupt here).
        extra: the caller's JSON-able state to checkpoint with the model's.
        updates: updates done before this ``learn`` call (a resumed run's count).
    """
    from stable_baselines3.common.callbacks import BaseCallback

    class Checkpoints(BaseCallback):
        def _on_training_start(self) -> None:
            self.updates, self.first = updates, True

        def _on_step(self) -> bool:
            sent = self.locals.get("clipped_actions", self.locals.get("actions"))
            actions.append(np.array(sent, copy=True))
            return True

        def _on_rollout_start(self) -> None:
            if self.first:  # nothing was trained since learn() started (or was resumed)
                self.first = False
                return
            self.updates += 1
            if save is not None and self.updates % every == 0:
                save(self.model.num_timesteps,
                     sb3_state(self.model, actions, {**extra(), "updates": self.updates}))
            if after_update is not None:
                after_update(self.updates)

    return Checkpoints()
