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

from typing import TYPE_CHECKING, Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from exitgym.envs.exit_core import BlockSampler, ExitTables, check_sample_id, resolve_cache
from exitgym.envs.observations import make_observation
from exitgym.envs.rewards import RewardShape, make_reward

if TYPE_CHECKING:
    from exitgym.backbones.layer_cache import LayerCache

__all__ = ["EarlyExitVectorEnv"]

_TERMINAL_KEYS = (
    "exit_layer",
    "prediction",
    "label",
    "correct",
    "flops",
    "memorized_layer",
    "oracle_layer",
)


class EarlyExitVectorEnv(VectorEnv):
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

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        task: str = "rt-polarity",
        backbone: Any = "minilm-l6",
        split: str = "train",
        heads: Any = "frozen",
        reward: str | RewardShape = "vanilla",
        alpha: float | None = None,
        observation: str = "features",
        dense: bool = False,
        live: bool = False,
        cache: LayerCache | None = None,
        policy_flops: float = 0.0,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **reward_kwargs: Any,
    ) -> None:
        if (
            isinstance(num_envs, bool)
            or not isinstance(num_envs, (int, np.integer))
            or num_envs < 1
        ):
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if live:
            raise ValueError(
                "live=True is not supported by the native vector env; use "
                "gym.make('exitgym/EarlyExit-v0', live=True) or vectorization_mode='sync'"
            )
        if render_mode is not None:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use None")
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError as err:
            allowed = [m.value for m in AutoresetMode]
            raise ValueError(
                f"unknown autoreset_mode {autoreset_mode!r}; allowed: {allowed}"
            ) from err
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self.num_envs = int(num_envs)
        self.render_mode = None
        self.cache = resolve_cache(cache, task, backbone, split, heads)
        self.view = make_observation(observation)
        self.tables = t = ExitTables.build(self.cache, self.view, policy_flops)
        self.dense = bool(dense)
        self.num_layers = t.num_layers
        self.single_observation_space = spaces.Box(
            t.low, t.high, shape=t.low.shape, dtype=np.float32
        )
        self.single_action_space = spaces.Discrete(2)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
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
        self.reward_shape = make_reward(reward, alpha, **reward_kwargs)
        n = self.num_envs
        self._sampler = BlockSampler(n, t.num_samples)
        self._sid = np.zeros(n, dtype=np.int64)
        self._layer = np.zeros(n, dtype=np.int64)
        self._charged = np.zeros(n, dtype=np.float64)
        self._needs_reset = np.zeros(n, dtype=bool)
        self._started = False

    @property
    def reward_shape(self) -> RewardShape:
        """The shared reward shape; assign another, or change its ``alpha`` / ``lam``."""
        return self._shape

    @reward_shape.setter
    def reward_shape(self, shape: RewardShape) -> None:
        if not isinstance(shape, RewardShape):
            raise TypeError(f"reward_shape must be a RewardShape, got {type(shape).__name__}")
        self._shape = shape
        quality = shape.quality(self.tables.ce, self.tables.correct)
        self._quality_flat = np.asarray(quality, dtype=np.float64).ravel()

    # ---- reset --------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        n = self.num_envs
        options = dict(options or {})
        unknown = set(options) - {"sample_id", "reset_mask"}
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; allowed: 'sample_id' (int or [num_envs] "
                "ints) and 'reset_mask' (bool array [num_envs])"
            )
        mask = options.get("reset_mask")
        if mask is None:
            rows = np.arange(n)
        else:
            mask = np.asarray(mask)
            if mask.shape != (n,) or mask.dtype != np.bool_ or not mask.any():
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({n},) with at least "
                    f"one True, got dtype {mask.dtype} shape {mask.shape}"
                )
            if not self._started and not mask.all():
                raise RuntimeError("the first reset() must reset every sub-environment")
            rows = np.flatnonzero(mask)
        seeds = self._seeds(seed)
        for i in rows:
            if seeds[i] is not None:
                self._sampler.set_rng(int(i), seeding.np_random(seeds[i])[0])
            elif self._sampler.rngs[i] is None:
                self._sampler.set_rng(int(i), seeding.np_random(None)[0])
        if "sample_id" in options:
            self._sid[rows] = self._sample_ids(options["sample_id"])[rows]
        else:
            self._sid[rows] = self._sampler.draw(rows)
        self._layer[rows] = 0
        self._charged[rows] = 0.0
        self._needs_reset[rows] = False
        self._started = True
        flat = self._sid[rows] * self.num_layers
        obs = np.take(self._obs_flat, self._sid * self.num_layers + self._layer, axis=0)
        ones = np.zeros(n, dtype=bool)
        ones[rows] = True
        info = {}
        for key, values in (
            ("layer", np.ones(len(rows), dtype=np.int64)),
            ("cost", np.take(self._cost_flat, flat)),
            ("sample_id", self._sid[rows]),
        ):
            full = np.zeros(n, dtype=values.dtype)
            full[rows] = values
            info[key], info[f"_{key}"] = full, ones.copy()
        return obs, info

    def _seeds(self, seed: int | list[int | None] | None) -> list[int | None]:
        n = self.num_envs
        if seed is None:
            return [None] * n
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            return [int(seed) + i for i in range(n)]
        seeds = list(seed)
        if len(seeds) != n:
            raise ValueError(f"seed list must have num_envs={n} entries, got {len(seeds)}")
        return seeds

    def _sample_ids(self, value: Any) -> np.ndarray:
        n, total = self.num_envs, self.tables.num_samples
        if isinstance(value, (int, np.integer)):
            return np.full(n, check_sample_id(value, total), dtype=np.int64)
        ids = np.asarray(value)
        if ids.shape != (n,):
            raise ValueError(
                f"options['sample_id'] must be an int or {n} ints, got shape {ids.shape}"
            )
        return np.array([check_sample_id(v, total) for v in ids.tolist()], dtype=np.int64)

    # ---- step ---------------------------------------------------------------------------------
    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        a = self._check_actions(actions)
        n, num_layers = self.num_envs, self.num_layers
        mode = self.autoreset_mode
        pending = self._needs_reset
        any_pending = bool(pending.any())
        if any_pending and mode is AutoresetMode.DISABLED:
            raise RuntimeError(
                f"sub-environments {np.flatnonzero(pending).tolist()} have terminated; with "
                "autoreset_mode=DISABLED reset them with reset(options={'reset_mask': mask})"
            )
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
                boxed = np.full(n, None, dtype=object)
                for k, row in zip(np.flatnonzero(exiting), final_obs, strict=True):
                    boxed[k] = row
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
        if not self._started:
            raise RuntimeError("step() called before reset(); call reset() first")
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
