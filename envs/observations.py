"""Observation views of the exit environments: a registry of small objects, combinable with ``+``.

A view turns what is known after layer ``l`` (pooled states, head logits and cost fractions of
layers ``1..l``) into a float32 vector. Views are *causal*: row ``l`` only reads layers ``<= l``,
so the same code computes a whole cache at once (cached mode: one table ``[N, L, d]`` built at
construction, then every step is an index) and one episode prefix at a time (live mode).

Registered views:

- ``features`` (6): layer fraction ``l/L``, max probability, normalized entropy ``H/log C``, top-2
  margin ``p1 − p2``, patience (length of the run of identical predictions ending at ``l``,
  divided by ``L``; ``1/L`` at layer 1) and cost spent so far ``c_l``;
- ``logits`` (C): the exit head's logits at layer ``l``;
- ``hidden`` (H): the pooled state after layer ``l`` (what the exit head reads);
- ``prev`` (H): the pooled state after layer ``l − 1`` (zeros at layer 1); ``hidden+prev`` is the
  ``[h_l, h_{l−1}]`` input of PALBERT's exit heads;
- ``predictor`` (1): a decoder's exit-predictor P(agree) (``TokenExit-v0`` only).

Combine views with ``+`` (``"features+logits"``), concatenated in order. Bounds are finite: fixed
where bounded, else the cache's range widened by a margin (live observations are clipped to it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np

from exitgym.utils.plugins import GROUPS, failed_note, load_entry_points
from exitgym.utils.registry import registering

__all__ = [
    "FEATURE_NAMES",
    "OBSERVATIONS",
    "CombinedView",
    "FeaturesView",
    "HiddenView",
    "LogitsView",
    "ObsLayout",
    "ObservationView",
    "PrevHiddenView",
    "SoftmaxStats",
    "ViewInputs",
    "make_observation",
    "register_observation",
    "softmax_stats",
]

FEATURE_NAMES: tuple[str, ...] = (
    "layer_fraction", "max_prob", "norm_entropy", "margin", "patience_fraction", "cost",
)
"""Entries of the ``features`` view, in order (policies read them by position)."""

BOUND_MARGIN: float = 0.1
"""Data-driven bounds are widened by this fraction of each dimension's range (plus 1e-3)."""


@dataclass(frozen=True)
class ViewInputs:
    """What a view may read: layers ``1..l`` of ``n`` samples (``l`` may be less than ``L``)."""

    pooled: np.ndarray
    """float32 ``[n, l, H]`` pooled states."""
    logits: np.ndarray
    """float32 ``[n, l, C]`` exit-head logits."""
    cost: np.ndarray
    """float64 ``[n, l]`` cost fraction spent after each layer."""
    num_layers: int
    """``L``, the model's depth (for fractions)."""
    stats: SoftmaxStats | None = None
    """:func:`softmax_stats` of ``logits`` (``[n, l]`` fields) when the caller has them (a live
    decoder computes each head's once, batched with it; recomputing them over a 49k vocabulary
    at every layer so far cost O(L²·V) per token). None: computed."""
    predicted: np.ndarray | None = None
    """float64 ``[n, l]`` exit-predictor P(agree) for the ``predictor`` view (TokenExit-v0 only)."""


class ObservationView(ABC):
    """One named part of an observation vector."""

    name: ClassVar[str] = ""
    """Registry key (set by :func:`register_observation`)."""

    @abstractmethod
    def dim(self, hidden_size: int, num_labels: int) -> int:
        """Number of float32 entries this view contributes."""

    @abstractmethod
    def compute(self, inputs: ViewInputs) -> np.ndarray:
        """The view at every given layer: ``[n, l, dim]`` float32 (may share inputs' memory)."""

    def bounds(self, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Finite per-dimension ``(low, high)`` containing ``table`` (``[N, L, dim]``, whole cache).

        The default widens the observed range by :data:`BOUND_MARGIN`, so live observations that
        differ from the cache by float noise stay inside.
        """
        flat = table.reshape(-1, table.shape[-1])
        low = flat.min(axis=0).astype(np.float64)
        high = flat.max(axis=0).astype(np.float64)
        pad = BOUND_MARGIN * (high - low) + 1e-3
        return (low - pad).astype(np.float32), (high + pad).astype(np.float32)


_VIEW_T = TypeVar("_VIEW_T", bound=type[ObservationView])

OBSERVATIONS: dict[str, type[ObservationView]] = {}
"""Registered observation views by name."""


def register_observation(name: str) -> Callable[[_VIEW_T], _VIEW_T]:
    """Class decorator adding an :class:`ObservationView` subclass to :data:`OBSERVATIONS`.

    Raises:
        ValueError: ``name`` is empty, contains ``+`` or is taken by another class.
    """
    return registering(OBSERVATIONS, ObservationView, "observation", name, forbidden="+")


@dataclass(frozen=True)
class SoftmaxStats:
    """Confidence statistics of exit-head logits ``[..., C]`` (float64, shape ``[...]``).

    The one definition shared by the ``features`` view and the exit rules, so a rule's threshold
    means the same quantity as the feature a learned policy reads.
    """

    prediction: np.ndarray
    """int64 argmax of the logits (the head's predicted label)."""
    max_prob: np.ndarray
    """Largest softmax probability."""
    norm_entropy: np.ndarray
    """Entropy divided by ``log C``, in ``[0, 1]`` so one threshold grid fits any label count."""
    margin: np.ndarray
    """Top-1 minus top-2 probability (1 when there is a single label)."""


def softmax_stats(logits: np.ndarray) -> SoftmaxStats:
    """Statistics of ``[..., C]`` logits through a stable log-softmax (float64).

    Why log-softmax: the entropy uses exact ``log p`` even where ``p`` underflows towards 0, which
    is what the observation tables have always been computed with.
    """
    z = np.asarray(logits, dtype=np.float64)
    num_labels = z.shape[-1]
    prediction = z.argmax(axis=-1)
    logp = z - z.max(axis=-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=-1, keepdims=True))
    p = np.exp(logp)
    if num_labels == 1:
        ones = np.ones(z.shape[:-1])
        return SoftmaxStats(prediction, ones, np.zeros(z.shape[:-1]), ones)
    entropy = -(p * logp).sum(axis=-1) / np.log(num_labels)
    # The two largest only (a full sort of a 49k-token vocabulary per layer dominated decoder
    # observations): after partitioning at -2, [-2] is the runner-up and [-1] the largest.
    top2 = np.partition(p, -2, axis=-1)[..., -2:]
    return SoftmaxStats(prediction, top2[..., 1], entropy, top2[..., 1] - top2[..., 0])


def patience_run(predictions: np.ndarray) -> np.ndarray:
    """Length of the run of identical predictions ending at each layer (``[n, l]`` int64, >= 1)."""
    run = np.ones(predictions.shape, dtype=np.int64)
    for j in range(1, predictions.shape[1]):
        same = predictions[:, j] == predictions[:, j - 1]
        run[:, j] = np.where(same, run[:, j - 1] + 1, 1)
    return run


@register_observation("features")
class FeaturesView(ObservationView):
    """Six hand-made exit features, all in ``[0, 1]`` (cost may exceed 1 with policy FLOPs)."""

    FIELDS: ClassVar[tuple[str, ...]] = FEATURE_NAMES

    def dim(self, hidden_size: int, num_labels: int) -> int:
        return len(self.FIELDS)

    def compute(self, inputs: ViewInputs) -> np.ndarray:
        n, length = inputs.logits.shape[:2]
        num_layers = inputs.num_layers
        stats = inputs.stats if inputs.stats is not None else softmax_stats(inputs.logits)
        run = patience_run(stats.prediction)
        out = np.empty((n, length, len(self.FIELDS)), dtype=np.float64)
        out[..., 0] = np.arange(1, length + 1)[None, :] / num_layers
        out[..., 1] = stats.max_prob
        out[..., 2] = stats.norm_entropy
        out[..., 3] = stats.margin
        out[..., 4] = run / num_layers
        out[..., 5] = inputs.cost
        # Rounding may push an entropy or probability a hair outside [0, 1].
        np.clip(out[..., :5], 0.0, 1.0, out=out[..., :5])
        return out.astype(np.float32)

    def bounds(self, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        low = np.zeros(len(self.FIELDS), dtype=np.float32)
        high = np.ones(len(self.FIELDS), dtype=np.float32)
        # The cost fraction exceeds 1 when the policy's own FLOPs are charged.
        high[5] = max(1.0, float(table[..., 5].max()))
        return low, high


@register_observation("depth")
class DepthView(ObservationView):
    """The layer fraction and the cost spent so far: ``features`` columns 0 and 5 without the
    head statistics.

    Why: a decoder's LM head costs several layers (SmolLM2-135M: a quarter of a token), so a
    policy that reads no confidence (static, random, CALM's state saturation with
    ``depth+hidden+prev``) must not be charged a head per layer just to learn its depth.
    """

    FIELDS: ClassVar[tuple[str, ...]] = ("layer_fraction", "cost")

    def dim(self, hidden_size: int, num_labels: int) -> int:
        return len(self.FIELDS)

    def compute(self, inputs: ViewInputs) -> np.ndarray:
        n, length = inputs.cost.shape[:2]
        out = np.empty((n, length, 2), dtype=np.float64)
        out[..., 0] = np.arange(1, length + 1)[None, :] / inputs.num_layers
        out[..., 1] = inputs.cost
        return out.astype(np.float32)

    def bounds(self, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.zeros(2, dtype=np.float32),
                np.array([1.0, max(1.0, float(table[..., 1].max()))], dtype=np.float32))


@register_observation("logits")
class LogitsView(ObservationView):
    """The exit head's raw logits at the current layer."""

    def dim(self, hidden_size: int, num_labels: int) -> int:
        return num_labels

    def compute(self, inputs: ViewInputs) -> np.ndarray:
        return np.asarray(inputs.logits, dtype=np.float32)


@register_observation("hidden")
class HiddenView(ObservationView):
    """The pooled state after the current layer (the exit head's input)."""

    def dim(self, hidden_size: int, num_labels: int) -> int:
        return hidden_size

    def compute(self, inputs: ViewInputs) -> np.ndarray:
        return np.asarray(inputs.pooled, dtype=np.float32)


@register_observation("prev")
class PrevHiddenView(ObservationView):
    """The pooled state after the previous layer; zeros at layer 1 (nothing came before)."""

    def dim(self, hidden_size: int, num_labels: int) -> int:
        return hidden_size

    def compute(self, inputs: ViewInputs) -> np.ndarray:
        pooled = np.asarray(inputs.pooled, dtype=np.float32)
        out = np.zeros_like(pooled)
        out[:, 1:] = pooled[:, :-1]
        return out


@register_observation("predictor")
class PredictorView(ObservationView):
    """An exit predictor's P(agree) at the current layer (``TokenExit-v0``, 2·H + 2 FLOPs)."""

    def dim(self, hidden_size: int, num_labels: int) -> int:
        return 1

    def compute(self, inputs: ViewInputs) -> np.ndarray:
        if inputs.predicted is None:
            raise ValueError("the 'predictor' observation needs an exit predictor (TokenExit-v0's)")
        return np.asarray(inputs.predicted, dtype=np.float32)[..., None]

    def bounds(self, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # a probability
        return np.zeros(1, np.float32), np.ones(1, np.float32)


@dataclass(frozen=True)
class CombinedView:
    """An observation made of one or more registered views, concatenated in order."""

    parts: tuple[ObservationView, ...]
    """The views, in concatenation order."""

    @property
    def spec(self) -> str:
        """The ``"a+b"`` string this view was made from."""
        return "+".join(part.name for part in self.parts)

    def dim(self, hidden_size: int, num_labels: int) -> int:
        """Total length of the observation vector."""
        return sum(part.dim(hidden_size, num_labels) for part in self.parts)

    def compute(self, inputs: ViewInputs) -> np.ndarray:
        """``[n, l, dim]`` float32; a single part is returned without copying."""
        tables = [part.compute(inputs) for part in self.parts]
        return tables[0] if len(tables) == 1 else np.concatenate(tables, axis=-1)

    def build(self, inputs: ViewInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Table of the whole cache plus its bounds: ``(table [N, L, d], low [d], high [d])``."""
        tables = [part.compute(inputs) for part in self.parts]
        lows, highs = zip(
            *(p.bounds(t) for p, t in zip(self.parts, tables, strict=True)), strict=True
        )
        table = tables[0] if len(tables) == 1 else np.concatenate(tables, axis=-1)
        return table, np.concatenate(lows), np.concatenate(highs)


def load_observation_plugins() -> None:
    """Register the views of installed plug-ins (entry-point group ``exitgym.observations``)."""
    load_entry_points(GROUPS["observations"], lambda name, cls: register_observation(name)(cls))


def make_observation(spec: str | CombinedView) -> CombinedView:
    """Parse ``"features"``, ``"hidden+prev"``, ``"features+logits"``, ... into a view.

    Raises:
        ValueError: Empty spec, unknown part (the message lists the registered views) or a part
            repeated.
    """
    if isinstance(spec, CombinedView):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"observation must be a non-empty string like 'features' or 'hidden+prev', got {spec!r}"
        )
    names = [name.strip() for name in spec.split("+")]
    if any(name not in OBSERVATIONS for name in names):
        load_observation_plugins()
    unknown = [name for name in names if name not in OBSERVATIONS]
    if unknown:
        raise ValueError(
            f"unknown observation view(s) {unknown} in {spec!r}; registered views: "
            f"{sorted(OBSERVATIONS)} (combine them with '+')"
            f"{failed_note(GROUPS['observations'], unknown)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"observation {spec!r} repeats a view; use each view at most once")
    return CombinedView(tuple(OBSERVATIONS[name]() for name in names))


@dataclass(frozen=True)
class ObsLayout:
    """Where each view of a combined observation lives in the flat vector.

    Policies are handed a flat ``[B, d]`` batch; the layout lets them read a part by name, with
    the part sizes taken from the registered views (so agents never hard-code feature counts).
    """

    slices: dict[str, slice]
    """View name -> slice of the observation's last axis."""

    @classmethod
    def from_spec(
        cls, spec: str, obs_dim: int, num_labels: int | None = None, hidden_size: int | None = None
    ) -> ObsLayout:
        """Build the layout; at most one part size may be unknown (it is inferred from obs_dim).

        Raises:
            ValueError: Bad spec (see :func:`make_observation`) or sizes that cannot add up to
                ``obs_dim``.
        """
        views = make_observation(spec).parts
        parts = [view.name for view in views]
        # A view whose size depends on an unknown dimension reports 0: treat it as unknown.
        sizes: dict[str, int | None] = {
            view.name: view.dim(hidden_size or 0, num_labels or 0) or None for view in views
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
