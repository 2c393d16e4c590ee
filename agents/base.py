"""The one policy protocol every exitgym method implements, observation helpers, and ``evaluate``.

Rules, PALBERT, BERxiT, REINFORCE and SB3 models all act on a *batch* of observations (one row per
vector-env slot), so a single evaluation routine (:func:`evaluate`) produces accuracy, cost,
exit-layer histogram and trajectories for all of them.

Observation layout (docs/interfaces.md): ``observation="features"`` is
``[layer fraction, max prob, normalized entropy, top-2 margin, patience / L, cost so far]``;
``"logits"`` the current head's logits; ``"hidden"`` the pooled state; ``"prev"`` the previous
layer's pooled state (zeros at layer 1); combos such as
``"features+logits"`` concatenate the parts in the order named. Each policy states the
observation it needs in ``required_observation`` and :func:`evaluate` checks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from exitgym.agents.rollout import evaluate

FEATURE_NAMES: tuple[str, ...] = (
    "layer_fraction", "max_prob", "norm_entropy", "margin", "patience_fraction", "cost",
)
"""Names of the ``features`` observation entries, in order."""
NUM_FEATURES = len(FEATURE_NAMES)
__all__ = [
    "FEATURE_NAMES", "LayerTracker", "ObsLayout", "Policy", "evaluate", "logit_stats",
    "observation_parts", "softmax",
]

OBSERVATION_PARTS: tuple[str, ...] = ("features", "logits", "hidden", "prev")
"""Parts an observation spec may combine with ``+``."""


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


def observation_parts(spec: str) -> tuple[str, ...]:
    """Split ``"features+logits"`` into its parts, rejecting unknown or repeated ones."""
    parts = tuple(p.strip() for p in spec.split("+"))
    bad = [p for p in parts if p not in OBSERVATION_PARTS]
    if bad or len(set(parts)) != len(parts) or not parts:
        raise ValueError(
            f"bad observation spec {spec!r}: parts must be distinct members of {OBSERVATION_PARTS}"
        )
    return parts


@dataclass(frozen=True)
class ObsLayout:
    """Where each part of a combined observation lives in the flat vector."""

    slices: dict[str, slice]
    """Part name -> slice of the observation's last axis."""

    @classmethod
    def from_spec(
        cls, spec: str, obs_dim: int, num_labels: int | None = None, hidden_size: int | None = None
    ) -> ObsLayout:
        """Build the layout; at most one part size may be unknown (it is inferred from obs_dim)."""
        parts = observation_parts(spec)
        sizes: dict[str, int | None] = {
            "features": NUM_FEATURES, "logits": num_labels, "hidden": hidden_size,
            "prev": hidden_size,
        }
        unknown = [p for p in parts if sizes[p] is None]
        known = sum(int(sizes[p] or 0) for p in parts if sizes[p] is not None)
        if unknown and set(unknown) <= {"hidden", "prev"}:
            # hidden and prev always have the same size H.
            size, rest = divmod(obs_dim - known, len(unknown))
            if rest:
                raise ValueError(f"observation {spec!r} of size {obs_dim} cannot split evenly")
            sizes.update({p: size for p in unknown})
        elif len(unknown) > 1:
            raise ValueError(f"cannot infer the sizes of {unknown} in {spec!r} from obs_dim alone")
        elif unknown:
            sizes[unknown[0]] = obs_dim - known
        total = sum(int(sizes[p] or 0) for p in parts)
        if total != obs_dim or any(int(sizes[p] or 0) <= 0 for p in parts):
            raise ValueError(f"observation {spec!r} of size {obs_dim} does not fit sizes {sizes}")
        out, start = {}, 0
        for p in parts:
            out[p] = slice(start, start + int(sizes[p] or 0))
            start += int(sizes[p] or 0)
        return cls(out)

    def get(self, obs: np.ndarray, part: str) -> np.ndarray:
        """The ``part`` columns of a batch of observations."""
        if part not in self.slices:
            raise KeyError(f"observation has no {part!r} part; it has {list(self.slices)}")
        return obs[..., self.slices[part]]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def logit_stats(logits: np.ndarray) -> dict[str, np.ndarray]:
    """Confidence statistics of head logits ``[..., C]`` (what the classic rules threshold).

    Returns ``prediction`` (argmax), ``max_prob``, ``norm_entropy`` (entropy / log C, in [0, 1],
    so one threshold grid fits any number of labels) and ``margin`` (top-1 minus top-2 prob).
    """
    logits = np.asarray(logits, dtype=np.float64)
    probs = softmax(logits)
    num_labels = probs.shape[-1]
    ent = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=-1)
    top2 = (np.sort(probs, axis=-1)[..., -2:] if num_labels > 1
            else np.stack([probs[..., 0]] * 2, -1))
    return {
        "prediction": probs.argmax(axis=-1),
        "max_prob": probs.max(axis=-1),
        "norm_entropy": ent / np.log(num_labels) if num_labels > 1 else np.zeros_like(ent),
        "margin": top2[..., 1] - top2[..., 0],
    }


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
