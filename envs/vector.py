"""What the three native vector envs share: argument checks, seeding, reset options, autoreset.

Every native vector env of exitgym is step-for-step equal to ``num_envs`` single environments
because they all follow the same conventions, implemented once here in :class:`NativeVectorEnv`:
``reset(seed=s)`` seeds sub-environment ``i`` with ``s + i`` (gymnasium's convention; a list gives
one seed each), every sub-environment draws its inputs from its own generator through a
:class:`~exitgym.envs.sampling.BlockSampler` exactly as a single env does, ``reset`` takes
``options={"sample_id": int_or_[num_envs], "reset_mask": bool[num_envs]}``, and infos have the
``SyncVectorEnv`` layout (one array per key plus a ``_key`` mask).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from exitgym.envs.sampling import BlockSampler, check_sample_id
from exitgym.envs.settings import check_render_mode

__all__ = [
    "NativeVectorEnv",
    "boxed_rows",
    "check_num_envs",
    "parse_autoreset_mode",
    "vector_seeds",
]


def check_num_envs(value: Any) -> int:
    """``value`` as an int; a vector env needs at least one sub-environment."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"num_envs must be an integer >= 1, got {value!r}")
    return int(value)


def parse_autoreset_mode(value: AutoresetMode | str) -> AutoresetMode:
    """An :class:`AutoresetMode` from itself or its value; the error lists the allowed ones."""
    try:
        return AutoresetMode(value)
    except ValueError as err:
        allowed = [m.value for m in AutoresetMode]
        raise ValueError(f"unknown autoreset_mode {value!r}; allowed: {allowed}") from err


def vector_seeds(seed: int | list[int | None] | None, n: int) -> list[int | None]:
    """Per-sub-env seeds: ``seed + i`` (gymnasium's convention), a list, or all None."""
    if seed is None:
        return [None] * n
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed) + i for i in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise ValueError(f"seed list must have num_envs={n} entries, got {len(seeds)}")
    return seeds


class NativeVectorEnv(VectorEnv):
    """Base of the native vector envs: ``num_envs`` slots that draw inputs like single envs.

    Subclasses call :meth:`_check_vector_args` first (cheap checks, before building anything),
    then :meth:`_init_slots` once their spaces are known, and use :meth:`_reset_rows`,
    :meth:`_base_info` and :meth:`_check_pending` in ``reset`` / ``step``.
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def _check_vector_args(self, num_envs: Any, autoreset_mode: AutoresetMode | str,
                           render_mode: str | None) -> None:
        """Validate and set the vector-only arguments (vector envs do not render)."""
        self.num_envs = check_num_envs(num_envs)
        check_render_mode(render_mode, self.metadata["render_modes"])
        self.autoreset_mode = parse_autoreset_mode(autoreset_mode)
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        self.render_mode = None

    def _init_slots(self, observation_space: spaces.Box, action_space: spaces.Space,
                    num_samples: int) -> None:
        """Batched spaces, the per-slot sampler and the episode bookkeeping."""
        n = self.num_envs
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.observation_space = batch_space(observation_space, n)
        self.action_space = batch_space(action_space, n)
        self._sampler = BlockSampler(n, num_samples)
        self._needs_reset = np.zeros(n, dtype=bool)
        self._started = False

    def _reset_rows(self, seed: int | list[int | None] | None, options: dict[str, Any] | None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Check ``options`` and reseed the slots being reset.

        Returns:
            ``(rows, sample_ids)``: the slots to reset and, if ``options["sample_id"]`` was given,
            their sample ids (else None: the caller draws them).
        """
        n = self.num_envs
        options = dict(options or {})
        unknown = set(options) - {"sample_id", "reset_mask"}
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; allowed: 'sample_id' (int or [num_envs] "
                "ints) and 'reset_mask' (bool array [num_envs])"
            )
        rows = self._mask_rows(options.get("reset_mask"))
        seeds = vector_seeds(seed, n)
        for i in rows:
            if seeds[i] is not None:
                self._sampler.set_rng(int(i), seeding.np_random(seeds[i])[0])
            elif self._sampler.rngs[i] is None:
                self._sampler.set_rng(int(i), seeding.np_random(None)[0])
        if "sample_id" not in options:
            return rows, None
        return rows, self._sample_ids(options["sample_id"])[rows]

    def _mask_rows(self, mask: Any) -> np.ndarray:
        n = self.num_envs
        if mask is None:
            return np.arange(n)
        mask = np.asarray(mask)
        if mask.shape != (n,) or mask.dtype != np.bool_ or not mask.any():
            raise ValueError(
                f"options['reset_mask'] must be a bool array of shape ({n},) with at least "
                f"one True, got dtype {mask.dtype} shape {mask.shape}"
            )
        if not self._started and not mask.all():
            raise RuntimeError("the first reset() must reset every sub-environment")
        return np.flatnonzero(mask)

    def _sample_ids(self, value: Any) -> np.ndarray:
        n, total = self.num_envs, self._sampler.num_samples
        if isinstance(value, (int, np.integer)):
            return np.full(n, check_sample_id(value, total), dtype=np.int64)
        ids = np.asarray(value)
        if ids.shape != (n,):
            raise ValueError(
                f"options['sample_id'] must be an int or {n} ints, got shape {ids.shape}"
            )
        return np.array([check_sample_id(v, total) for v in ids.tolist()], dtype=np.int64)

    def _base_info(self, rows: np.ndarray | None = None) -> dict[str, Any]:
        """The every-step info keys, zero-filled, masked to ``rows`` (default: every slot)."""
        n = self.num_envs
        mask = np.ones(n, dtype=bool)
        if rows is not None and len(rows) < n:
            mask = np.isin(np.arange(n), rows)
        return {"layer": np.zeros(n, dtype=np.int64), "_layer": mask,
                "cost": np.zeros(n, dtype=np.float64), "_cost": mask.copy(),
                "sample_id": np.zeros(n, dtype=np.int64), "_sample_id": mask.copy()}

    def _check_pending(self) -> np.ndarray:
        """The slots whose episode ended at the previous step (refused with autoreset off)."""
        pending = self._needs_reset
        if pending.any() and self.autoreset_mode is AutoresetMode.DISABLED:
            raise RuntimeError(
                f"sub-environments {np.flatnonzero(pending).tolist()} have terminated; with "
                "autoreset_mode=DISABLED reset them with reset(options={'reset_mask': mask})"
            )
        return pending

    def _check_started(self) -> None:
        if not self._started:
            raise RuntimeError("step() called before reset(); call reset() first")


def boxed_rows(n: int, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """An object array of ``n`` entries holding ``values[k]`` at ``rows[k]`` (``final_obs``)."""
    boxed = np.full(n, None, dtype=object)
    for k, row in zip(rows, values, strict=True):
        boxed[k] = row
    return boxed
