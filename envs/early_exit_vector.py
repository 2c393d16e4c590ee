"""Native batched ``exitgym/EarlyExit-v0``: ``N`` early-exit episodes stepped as numpy arrays.

``gym.make_vec("exitgym/EarlyExit-v0", num_envs=N, vectorization_mode="vector_entry_point")``
returns this class. It holds no Python sub-environments: the state of the ``N`` episodes is three
arrays (sample, layer, cost already paid) and a step is a handful of vectorized gathers into the
same precomputed tables the single env reads (:class:`~exitgym.envs.exit_core.ExitTables`).

Equivalence with ``N`` single environments is exact and tested: ``reset(seed=s)`` seeds
sub-environment ``i`` with ``s + i`` (gymnasium's convention), every sub-environment draws samples
from its own generator exactly as :class:`~exitgym.envs.early_exit.EarlyExitEnv` does, and the
returned infos have the layout of ``SyncVectorEnv`` (one array per key plus a ``_key`` mask).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from exitgym.envs.exit_core import ExitEnvCore
from exitgym.envs.settings import ExitSettings
from exitgym.envs.vector import NativeVectorEnv, boxed_rows

__all__ = ["EarlyExitVectorEnv"]


class EarlyExitVectorEnv(ExitEnvCore, NativeVectorEnv):
    """``num_envs`` early-exit episodes in lockstep steps (each at its own layer), pure numpy.

    Takes the keyword arguments of :class:`~exitgym.envs.early_exit.EarlyExitEnv` (see its
    docstring for spaces, rewards and episode rules) plus:

    Args:
        num_envs: Number of parallel episodes (>= 1).
        autoreset_mode: Gymnasium 1.x autoreset mode: ``NEXT_STEP`` (default; the step after a
            termination resets that sub-env and returns reward 0), ``SAME_STEP`` (reset at once;
            the terminal observation and info are in ``info["final_obs"]`` /
            ``info["final_info"]``) or ``DISABLED`` (reset finished sub-envs yourself with
            ``reset(options={"reset_mask": mask})``).

    The reward shape is shared by all sub-environments: ``venv.unwrapped.reward_shape.lam = λ``
    (or ``.alpha``) changes the cost weight from the next step on. ``reset`` accepts
    ``options={"sample_id": i_or_array, "reset_mask": bool_array}``. ``live=True`` is not
    available here (episodes sit at different layers, so there is no batched live step); use the
    single env for live mode.
    """

    def __init__(self, num_envs: int = 1, settings: ExitSettings | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                 **kwargs: Any) -> None:
        """Make ``num_envs`` slots from an :class:`ExitSettings` or its fields as keywords."""
        settings = self.settings_class.resolve(settings, kwargs)
        self._check_vector_args(num_envs, autoreset_mode, settings.render_mode)
        if settings.live:
            raise ValueError(
                "live=True is not supported by the native vector env; use "
                "gym.make('exitgym/EarlyExit-v0', live=True) or vectorization_mode='sync'"
            )
        single_space = self._build(settings)
        t = self.tables
        self._init_slots(single_space, spaces.Discrete(2), t.num_samples)
        # Flat views make every per-step gather a 1-D take on ``sample * L + layer``.
        self._obs_flat = t.obs.reshape(-1, t.obs.shape[-1])
        self._cost_flat = t.cost.ravel()
        self._flops_flat = t.flops.ravel()
        self._correct_flat = t.correct.ravel()
        # Integer terminal-info fields of every (sample, layer), packed so that one gather serves
        # them all: exit layer, prediction, label, memorized layer, oracle layer, sample id.
        sample_of = np.repeat(np.arange(t.num_samples), t.num_layers)
        self._terminal_ints = np.stack(
            [
                np.tile(np.arange(1, t.num_layers + 1), t.num_samples),
                t.prediction.ravel(),
                t.labels[sample_of],
                t.memorized[sample_of],
                t.oracle[sample_of],
                sample_of,
            ]
        ).astype(np.int64)
        n = self.num_envs
        self._sid = np.zeros(n, dtype=np.int64)
        self._layer = np.zeros(n, dtype=np.int64)
        self._charged = np.zeros(n, dtype=np.float64)

    # ---- reset --------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        rows, sample_ids = self._reset_rows(seed, options)
        self._sid[rows] = self._sampler.draw(rows) if sample_ids is None else sample_ids
        self._layer[rows] = 0
        self._charged[rows] = 0.0
        self._needs_reset[rows] = False
        self._started = True
        obs = np.take(self._obs_flat, self._sid * self.num_layers + self._layer, axis=0)
        info = self._base_info(rows)
        info["layer"][rows] = 1
        info["cost"][rows] = np.take(self._cost_flat, self._sid[rows] * self.num_layers)
        info["sample_id"][rows] = self._sid[rows]
        return obs, info

    # ---- step ---------------------------------------------------------------------------------
    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        a = self._check_actions(actions)
        n, num_layers = self.num_envs, self.num_layers
        mode = self.autoreset_mode
        pending = self._check_pending()
        any_pending = bool(pending.any())
        sid, layer = self._sid, self._layer
        exiting = (a == 1) | (layer == num_layers - 1)
        if any_pending:
            exiting &= ~pending
            layer += ~(exiting | pending)
        else:
            layer += ~exiting
        flat = sid * num_layers + layer
        cost = np.take(self._cost_flat, flat)
        weight = self._shape.cost_weight(np.take(self.tables.memorized, sid), num_layers)
        delta = cost - self._charged
        paid = -weight * delta if self.dense else np.zeros(n)
        quality = np.take(self._quality_flat, flat)
        rewards = np.where(exiting, quality - weight * delta, paid)
        if self.dense:
            self._charged = cost.copy()
        any_exit = bool(exiting.any())
        terminal = self._terminal_info(exiting, flat) if any_exit else None
        if any_pending:
            self._restart(np.flatnonzero(pending), flat, cost, rewards)
        final_obs = None
        if any_exit and mode is AutoresetMode.SAME_STEP:
            final_obs = np.take(self._obs_flat, flat[exiting], axis=0)
            self._restart(np.flatnonzero(exiting), flat, cost, None)
        obs = np.take(self._obs_flat, flat, axis=0)
        ones = np.ones((3, n), dtype=bool)
        info: dict[str, Any] = {
            "layer": layer + 1,
            "_layer": ones[0],
            "cost": cost,
            "_cost": ones[1],
            "sample_id": sid.copy(),
            "_sample_id": ones[2],
        }
        if terminal is not None:
            if final_obs is None:
                info.update(terminal)
            else:
                boxed = boxed_rows(n, np.flatnonzero(exiting), final_obs)
                info["final_obs"], info["_final_obs"] = boxed, exiting.copy()
                info["final_info"], info["_final_info"] = terminal, exiting.copy()
        if mode is not AutoresetMode.SAME_STEP:
            self._needs_reset = exiting
        return obs, rewards, exiting.copy(), np.zeros(n, dtype=bool), info

    def _check_actions(self, actions: Any) -> np.ndarray:
        a = np.asarray(actions)
        if a.shape != (self.num_envs,) or a.dtype.kind not in "iub":
            raise ValueError(
                f"actions must be an integer array of shape ({self.num_envs},) with values 0 "
                f"(continue) or 1 (exit), got dtype {a.dtype} shape {a.shape}"
            )
        if a.dtype.kind != "b" and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"actions must be 0 (continue) or 1 (exit), got values {np.unique(a)}")
        self._check_started()
        return a

    def _restart(
        self, rows: np.ndarray, flat: np.ndarray, cost: np.ndarray, rewards: np.ndarray | None
    ) -> None:
        """Start new episodes in ``rows``, updating ``flat`` and ``cost`` in place."""
        sid = self._sampler.draw(rows)
        self._sid[rows] = sid
        self._layer[rows] = 0
        flat[rows] = sid * self.num_layers
        cost[rows] = self._cost_flat[flat[rows]]
        if self.dense:
            self._charged[rows] = 0.0
        if rewards is not None:
            rewards[rows] = 0.0

    def _terminal_info(self, exiting: np.ndarray, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Terminal info keys, zero outside ``exiting`` (the ``SyncVectorEnv`` layout).

        Values are gathered for every row and masked, which at these sizes is cheaper than
        gathering and scattering only the exiting rows; the integer fields come from one gather.
        """
        ints = np.take(self._terminal_ints, flat, axis=1)
        ints *= exiting
        values = {
            "exit_layer": ints[0],
            "prediction": ints[1],
            "label": ints[2],
            "correct": exiting & np.take(self._correct_flat, flat),
            "flops": np.where(exiting, np.take(self._flops_flat, flat), 0.0),
            "memorized_layer": ints[3],
            "oracle_layer": ints[4],
        }
        if self.autoreset_mode is AutoresetMode.SAME_STEP:
            # final_info holds the whole terminal info of a single env, every-step keys included.
            values["layer"] = ints[0].copy()
            values["cost"] = np.where(exiting, np.take(self._cost_flat, flat), 0.0)
            values["sample_id"] = ints[5]
        masks = np.empty((len(values), self.num_envs), dtype=bool)
        masks[:] = exiting
        info: dict[str, np.ndarray] = {}
        for key, value, mask in zip(values, values.values(), masks, strict=True):
            info[key], info[f"_{key}"] = value, mask
        return info
