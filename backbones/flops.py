"""Analytic FLOPs of an encoder, per sample and per sub-block, as a function of real length.

Cost is what every reward and report trades against, so it must be honest: it is counted on each
sample's real (unpadded) length, 1 multiply-add = 2 FLOPs, and split by sub-block so that a
skipped attention or feed-forward block, a dropped token or an early exit each lower it exactly.

Matrix products are counted exactly (tests check them against
``torch.utils.flop_counter.FlopCounterMode``, which counts only those). Element-wise work (bias
adds, residual adds, layer norms, softmax, activation) is added with the per-element constants
below; it is well under 1 % of a layer at realistic sizes, so totals also match the counter
within 2 %.

All functions accept a Python number or a numpy array of lengths and broadcast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LAYER_NORM_FLOPS_PER_ELEMENT = 5.0
"""mean, subtract, variance, normalise, scale-and-shift (one FLOP each per element)."""
SOFTMAX_FLOPS_PER_ELEMENT = 3.0
"""exp, sum, divide."""
ACTIVATION_FLOPS_PER_ELEMENT = 8.0
"""GELU's tanh approximation costs about eight FLOPs; ReLU would be one (we keep one constant)."""


@dataclass(frozen=True)
class FlopsModel:
    """FLOPs of one encoder configuration."""

    hidden_size: int
    """H, the width of the residual stream."""
    intermediate_size: int
    """I, the feed-forward inner width."""
    num_layers: int
    """L, the number of layer applications (ALBERT: its shared layer counts L times)."""
    num_attention_heads: int
    """Attention heads (only the softmax count depends on it)."""
    embedding_size: int | None = None
    """ALBERT factorises embeddings (E < H) and maps them up with a linear layer; None otherwise."""

    @classmethod
    def from_config(cls, config: Any) -> FlopsModel:
        """Read the sizes from a Hugging Face config of any supported family."""
        if getattr(config, "model_type", "") == "distilbert":
            return cls(
                hidden_size=config.dim,
                intermediate_size=config.hidden_dim,
                num_layers=config.n_layers,
                num_attention_heads=config.n_heads,
            )
        embedding_size = getattr(config, "embedding_size", None)
        if embedding_size == config.hidden_size:
            embedding_size = None
        return cls(
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_attention_heads=config.num_attention_heads,
            embedding_size=embedding_size
            if getattr(config, "model_type", "") == "albert"
            else None,
        )

    # ---- matrix products (exact) -------------------------------------------------------------
    def attention_matmul(self, n: Any) -> Any:
        """Q, K, V and output projections plus scores (QKᵀ) and context (AV)."""
        h = self.hidden_size
        projections = 2.0 * n * h * (4 * h)
        scores_and_context = 2.0 * 2.0 * n * n * h
        return projections + scores_and_context

    def ffn_matmul(self, n: Any) -> Any:
        return 2.0 * 2.0 * n * self.hidden_size * self.intermediate_size

    def embeddings_matmul(self, n: Any) -> Any:
        if self.embedding_size is None:
            return 0.0 * n
        return 2.0 * n * self.embedding_size * self.hidden_size

    # ---- element-wise work (documented constants) --------------------------------------------
    def attention_elementwise(self, n: Any) -> Any:
        h = self.hidden_size
        biases = 4.0 * n * h
        softmax = SOFTMAX_FLOPS_PER_ELEMENT * self.num_attention_heads * n * n
        residual_and_norm = n * h + LAYER_NORM_FLOPS_PER_ELEMENT * n * h
        return biases + softmax + residual_and_norm

    def ffn_elementwise(self, n: Any) -> Any:
        h, i = self.hidden_size, self.intermediate_size
        biases = n * (i + h)
        activation = ACTIVATION_FLOPS_PER_ELEMENT * n * i
        residual_and_norm = n * h + LAYER_NORM_FLOPS_PER_ELEMENT * n * h
        return biases + activation + residual_and_norm

    def embeddings_elementwise(self, n: Any) -> Any:
        width = self.embedding_size or self.hidden_size
        sums = 2.0 * n * width  # word + position (+ token type)
        norm = LAYER_NORM_FLOPS_PER_ELEMENT * n * width
        mapping_bias = 0.0 if self.embedding_size is None else n * self.hidden_size
        return sums + norm + mapping_bias

    # ---- what callers use --------------------------------------------------------------------
    def attention(self, n: Any) -> Any:
        """The attention sub-block of one layer for one sample of length n."""
        return self.attention_matmul(n) + self.attention_elementwise(n)

    def ffn(self, n: Any) -> Any:
        """The feed-forward sub-block of one layer."""
        return self.ffn_matmul(n) + self.ffn_elementwise(n)

    def layer(self, n: Any) -> Any:
        """One full layer (both sub-blocks)."""
        return self.attention(n) + self.ffn(n)

    def embeddings(self, n: Any) -> Any:
        """Embedding sums and norm (lookups are free), plus ALBERT's up-projection."""
        return self.embeddings_matmul(n) + self.embeddings_elementwise(n)

    def full(self, n: Any) -> Any:
        """Embeddings and all L layers at length n, no head."""
        return self.embeddings(n) + self.num_layers * self.layer(n)

    def breakdown(self, n: float) -> dict[str, float]:
        """Per-component FLOPs of one layer and the embeddings at length n (for reports)."""
        return {
            "embeddings": float(self.embeddings(n)),
            "attention_matmul": float(self.attention_matmul(n)),
            "attention_elementwise": float(self.attention_elementwise(n)),
            "ffn_matmul": float(self.ffn_matmul(n)),
            "ffn_elementwise": float(self.ffn_elementwise(n)),
            "layer": float(self.layer(n)),
            "full": float(self.full(n)),
        }

    def head(self, num_labels: int, kind: str = "linear", hidden: int | None = None) -> float:
        """One exit head on the pooled state: ``linear`` or ``mlp`` (one hidden layer, tanh)."""
        if kind == "linear":
            return mlp_flops([self.hidden_size, num_labels])
        if kind == "mlp":
            width = hidden if hidden is not None else self.hidden_size
            return mlp_flops([self.hidden_size, width, num_labels])
        raise ValueError(f"unknown head kind {kind!r}; allowed: 'linear', 'mlp'")


def mlp_flops(layer_sizes: Sequence[int]) -> float:
    """FLOPs of an MLP with the given widths [in, h1, ..., out] on one input.

    Counts 2 per multiply-add, one per bias and ACTIVATION_FLOPS_PER_ELEMENT per hidden unit.
    Used for exit heads and for policy networks, whose cost the environments charge per step.
    """
    sizes = list(layer_sizes)
    if len(sizes) < 2 or any(int(s) <= 0 for s in sizes):
        raise ValueError(f"layer_sizes must list at least two positive widths, got {sizes}")
    total = 0.0
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        total += 2.0 * a * b + b
    total += ACTIVATION_FLOPS_PER_ELEMENT * sum(sizes[1:-1])
    return total
