"""The protocols every exitgym method implements (:class:`Policy`, :class:`Trainer`), the per-slot
layer tracking of stateful policies, and ``evaluate``.

Rules, PALBERT, BERxiT, REINFORCE and SB3 models all act on a *batch* of observations (one row per
vector-env slot), so a single evaluation routine (:func:`evaluate`) produces accuracy, cost,
exit-layer histogram and trajectories for all of them.

The observation layout is the environments' (:mod:`exitgym.envs.observations`): ``"features"`` is
``[layer fraction, max prob, normalized entropy, top-2 margin, patience / L, cost so far]``
(:data:`FEATURE_NAMES`), ``"logits"`` the current head's logits, ``"hidden"`` the pooled state,
``"prev"`` the previous layer's pooled state (zeros at layer 1); combos such as
``"features+logits"`` concatenate the parts in the order named. Each policy states the observation
it needs in ``required_observation``, :func:`evaluate` checks it, and :class:`ObsLayout` finds the
parts in the flat vector. The confidence statistics rules threshold are the features' own
(:func:`softmax_stats`), so both are defined once, next to the views.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from exitgym.agents.rollout import evaluate
from exitgym.envs.observations import FEATURE_NAMES, ObsLayout, SoftmaxStats, softmax_stats

if TYPE_CHECKING:
    import torch

__all__ = [
    "FEATURE_NAMES", "LayerTracker", "Logger", "ObsLayout", "Policy", "SoftmaxStats",
    "TrackedPolicy", "Trainer", "evaluate", "softmax_stats",
]

Logger = Callable[[dict[str, float]], None]
"""Receives the metrics of every trainer update (``{"update": 1.0, "return": ...}``)."""


@runtime_checkable
class Policy(Protocol):
    """What :func:`evaluate` (and the CLI, replay and reports) need from any method.

    ``act`` receives a batch ``[num_envs, obs_dim]`` and returns one action per row (shape
    ``[num_envs]`` for Discrete, ``[num_envs, k]`` for MultiDiscrete). Stateful policies (PABEE's
    patience counter, PALBERT's CDF) keep their per-slot state themselves and reset a slot when a
    new episode starts there (see :class:`LayerTracker`). ``infos`` is the env's info dict;
    :func:`evaluate` adds ``infos["sample_id"]`` (int array, the sample each slot is running).
    """

    required_observation: str

    def reset(self, num_envs: int) -> None:
        """Forget all per-episode state and prepare for ``num_envs`` parallel slots."""
        ...

    def act(
        self, obs: np.ndarray, infos: dict[str, Any] | None = None, deterministic: bool = True
    ) -> np.ndarray:
        """Actions for a batch of observations (greedy when ``deterministic``)."""
        ...


ADVANTAGE_BASELINES: tuple[str, ...] = ("self-critical", "mean-of-k", "moving-average", "none")
"""Supported advantage baselines ``b`` of ``R − b`` (REINFORCE-family trainers); here, apart from
torch, so that ``--baseline`` checks its value without importing the trainers."""


@runtime_checkable
class Trainer(Protocol):
    """What a training run needs from a learning agent (REINFORCE and the lexicographic trainer).

    Why a protocol: run directories checkpoint and resume any trainer through :meth:`state_dict` /
    :meth:`load_state_dict` alone, so they never reach into a trainer's private attributes, and a
    resumed run ends bit-identical to an uninterrupted one because the state holds every random
    generator the trainer draws from.
    """

    policy: Any
    """The policy being trained (a :class:`Policy` with ``save(directory, extra)``)."""
    logger: Logger | None
    """Called with the metrics of every update (None: no logging)."""
    updates: int
    """Updates taken so far."""

    def update(self) -> dict[str, float]:
        """Take one training step; returns its metrics."""
        ...

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, meta)``: tensors for safetensors, JSON-able meta (counters, RNG states)."""
        ...

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Put back a state returned by :meth:`state_dict`."""
        ...


class LayerTracker:
    """Per-slot layer counter that notices new episodes from the layer-fraction feature.

    Within an episode the layer strictly increases, so a slot whose layer fraction does not
    exceed the previous one has started a new episode (vector-env autoreset, or a fresh reset).
    This lets stateful rules run on any loop (ours, SB3's) without an explicit episode-start mask.
    """

    def __init__(self) -> None:
        self.layer = np.zeros(0, dtype=np.int64)
        self._prev = np.zeros(0)

    def reset(self, num_envs: int) -> None:
        self.layer = np.zeros(num_envs, dtype=np.int64)
        self._prev = np.full(num_envs, np.inf)

    def update(self, layer_fraction: np.ndarray) -> np.ndarray:
        """Advance every slot one layer; return the bool mask of slots that started an episode."""
        frac = np.asarray(layer_fraction, dtype=np.float64)
        if frac.shape != self._prev.shape:
            raise ValueError(
                f"got a batch of {frac.shape[0]} observations after reset({self._prev.shape[0]}); "
                "call policy.reset(num_envs) with the vector env's num_envs"
            )
        new = frac <= self._prev
        self.layer = np.where(new, 1, self.layer + 1)
        self._prev = frac
        return new


class TrackedPolicy:
    """Base of the exit policies that read named parts of the observation and keep per-slot state.

    The rules, PALBERT and BERxiT all start ``act`` the same way (find the parts, follow each slot's
    layer, notice new episodes) and all exit at the last layer regardless; that is written once
    here. Subclasses set ``required_observation`` and may say how wide the hidden part is.
    """

    required_observation: str = "features+logits"
    """Observation spec the policy reads (checked by :func:`evaluate`)."""

    def __init__(self) -> None:
        self.tracker = LayerTracker()
        self._layout: ObsLayout | None = None

    def reset(self, num_envs: int) -> None:
        """Forget every slot's episode (subclasses with more per-slot state extend this)."""
        self.tracker.reset(num_envs)

    def layout_hidden_size(self) -> int | None:
        """Width of the ``hidden`` / ``prev`` parts, when the observation has them (None: infer)."""
        return None

    def _track(
        self, obs: np.ndarray, dtype: type[np.floating] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(obs [B, d], layer fraction [B], new-episode mask [B])`` of one batch.

        Resets when the batch size changes (a new vector env) and advances the layer tracker.
        """
        obs = np.atleast_2d(np.asarray(obs, dtype=dtype))
        if self.tracker.layer.shape[0] != obs.shape[0]:
            self.reset(obs.shape[0])
        if self._layout is None:
            self._layout = ObsLayout.from_spec(
                self.required_observation, obs.shape[-1], hidden_size=self.layout_hidden_size()
            )
        # The layer fraction leads both the ``features`` and the head-free ``depth`` view.
        part = "features" if "features" in self._layout.slices else "depth"
        frac = self._layout.get(obs, part)[:, 0]
        return obs, frac, self.tracker.update(frac)

    def _part(self, obs: np.ndarray, name: str, optional: bool = False) -> np.ndarray | None:
        """The ``name`` columns of a batch already seen by :meth:`_track`.

        Raises:
            KeyError: The observation has no such part and ``optional`` is False (else None).
        """
        assert self._layout is not None, "call _track first"
        if optional and name not in self._layout.slices:
            return None
        return self._layout.get(obs, name)

    @staticmethod
    def _actions(exit_now: np.ndarray, frac: np.ndarray) -> np.ndarray:
        """int64 actions: exit where asked, and always at the last layer."""
        return (exit_now | (frac >= 1.0 - 1e-6)).astype(np.int64)
