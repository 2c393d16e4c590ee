"""The per-layer cache as an in-memory record: every per-layer quantity of every sample.

Exit environments only index into these arrays, which is what makes a step cost microseconds
instead of a transformer layer. This module is numpy-only (no torch) so that environments, agents
and tests can use a cache without loading a model. Building and storing caches on disk lives in
:mod:`exitgym.backbones.cache`.

Layer numbers are 1-based everywhere a user sees them (exit layer, memorized layer, oracle
layer); arrays are indexed ``[:, l - 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def correctness(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-layer correctness ``[N, L]`` of the heads' argmax predictions."""
    return logits.argmax(axis=-1) == np.asarray(labels)[:, None]


def memorized_layer(correct: np.ndarray) -> np.ndarray:
    """ConsistentEE Eq. 7: the smallest l such that heads l..L all predict the gold label.

    Returns 1-based layers ``[N]``; ``L`` when the last head is wrong (no suffix is correct).
    """
    correct = np.asarray(correct, dtype=bool)
    n, num_layers = correct.shape
    # suffix_ok[:, l] is True when heads l..L-1 (0-based) are all correct.
    suffix_ok = np.flip(np.cumprod(np.flip(correct, axis=1), axis=1), axis=1).astype(bool)
    first = np.where(suffix_ok.any(axis=1), suffix_ok.argmax(axis=1) + 1, num_layers)
    return first.astype(np.int64)


def oracle_layer(correct: np.ndarray) -> np.ndarray:
    """The earliest layer whose head is correct (1-based); the last layer if none is."""
    correct = np.asarray(correct, dtype=bool)
    num_layers = correct.shape[1]
    return np.where(correct.any(axis=1), correct.argmax(axis=1) + 1, num_layers).astype(np.int64)


@dataclass(frozen=True, eq=False)
class LayerCache:
    """Every per-layer quantity of one (backbone, heads, task, split).

    Costs follow docs/design.md: ``c_t = (embeddings + layers 1..t + heads 1..t) / (embeddings + all
    layers + final head)``, per sample on its real length. The policy's own FLOPs are added by the
    environment (they depend on the agent), see :meth:`cost`.
    """

    pooled: np.ndarray
    """float32 ``[N, L, H]``: pooled state after each layer (what the head at that layer reads)."""
    logits: np.ndarray
    """float32 ``[N, L, C]``: exit-head logits at each layer."""
    labels: np.ndarray
    """int64 ``[N]``: gold label ids."""
    lengths: np.ndarray
    """int64 ``[N]``: real (unpadded) token counts."""
    flops_embed: np.ndarray
    """float64 ``[N]``: FLOPs of the embedding block."""
    flops_layer: np.ndarray
    """float64 ``[N, L]``: FLOPs of running layer l in full (attention + feed-forward)."""
    flops_head: float
    """FLOPs of one exit head (same for every layer and sample)."""
    label_names: tuple[str, ...] = ()
    """Label vocabulary, index = label id."""
    texts: tuple[str, ...] | None = None
    """The input texts (for analysis and replay reports); optional."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance: task, split, backbone/heads fingerprints, cache fingerprint, ..."""

    def __post_init__(self) -> None:
        n, num_layers, _ = self.pooled.shape
        checks = {
            "logits": (self.logits.shape[:2], (n, num_layers)),
            "labels": (self.labels.shape, (n,)),
            "lengths": (self.lengths.shape, (n,)),
            "flops_embed": (self.flops_embed.shape, (n,)),
            "flops_layer": (self.flops_layer.shape, (n, num_layers)),
        }
        for name, (got, want) in checks.items():
            if tuple(got) != tuple(want):
                raise ValueError(f"LayerCache.{name} has shape {tuple(got)}, expected {want}")
        if n == 0:
            raise ValueError("LayerCache needs at least one sample")
        # Derived arrays are computed once; environments read them on every step.
        correct = correctness(self.logits, self.labels)
        object.__setattr__(self, "correct", correct)
        object.__setattr__(self, "memorized", memorized_layer(correct))
        object.__setattr__(self, "oracle", oracle_layer(correct))
        cum = (
            self.flops_embed[:, None]
            + np.cumsum(self.flops_layer, axis=1)
            + self.flops_head * np.arange(1, num_layers + 1)[None, :]
        )
        full = self.flops_embed + self.flops_layer.sum(axis=1) + self.flops_head
        object.__setattr__(self, "cum_flops", cum)
        object.__setattr__(self, "full_flops", full)

    # Attributes set in __post_init__ (declared for type checkers and readers).
    correct: np.ndarray = field(init=False, repr=False)
    """bool ``[N, L]``: head at layer l predicts the gold label."""
    memorized: np.ndarray = field(init=False, repr=False)
    """int64 ``[N]``: memorized layer m (1-based)."""
    oracle: np.ndarray = field(init=False, repr=False)
    """int64 ``[N]``: oracle exit layer (1-based)."""
    cum_flops: np.ndarray = field(init=False, repr=False)
    """float64 ``[N, L]``: FLOPs spent when exiting after layer l (embeddings, layers, heads)."""
    full_flops: np.ndarray = field(init=False, repr=False)
    """float64 ``[N]``: FLOPs of the full model with its final head (the cost denominator)."""

    @property
    def num_samples(self) -> int:
        return int(self.pooled.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.pooled.shape[1])

    @property
    def hidden_size(self) -> int:
        return int(self.pooled.shape[2])

    @property
    def num_labels(self) -> int:
        return int(self.logits.shape[2])

    def cost(self, policy_flops: float = 0.0) -> np.ndarray:
        """Cost fraction ``c_t`` ``[N, L]``, including ``policy_flops`` per layer visited."""
        steps = np.arange(1, self.num_layers + 1)[None, :]
        return (self.cum_flops + policy_flops * steps) / self.full_flops[:, None]
