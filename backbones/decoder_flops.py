"""Analytic FLOPs of a decoder LM per generated token, including attention over the growing cache.

Generation cost is what the token-exit rewards trade against, so it is counted like the encoders'
(:mod:`exitgym.backbones.flops`): 1 multiply-add = 2 FLOPs, matrix products exactly (tests check
them against ``torch.utils.flop_counter.FlopCounterMode``), element-wise work with the same
per-element constants. A *chunk* is ``k`` new positions of one sequence run through a layer while
``n`` keys are visible (the cache plus the chunk): one generated token is ``k = 1`` with ``n`` its
position + 1; a prompt is ``k = n``; ``kv="recompute"`` catches up pending positions in one chunk.
Score and context products are counted over all ``n`` keys for every query of the chunk, as the
hardware computes them (the causal mask only zeroes weights).

All functions broadcast over numpy arrays of ``k`` and ``n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exitgym.backbones.flops import (
    ACTIVATION_FLOPS_PER_ELEMENT,
    LAYER_NORM_FLOPS_PER_ELEMENT,
    SOFTMAX_FLOPS_PER_ELEMENT,
)

ROTARY_FLOPS_PER_ELEMENT = 3.0
"""Rotary position embedding: two products and one sum per element of q and k (Llama family)."""


@dataclass(frozen=True)
class DecoderFlops:
    """FLOPs of one decoder configuration (Llama family or GPT-2)."""

    hidden_size: int
    """H, the width of the residual stream."""
    intermediate_size: int
    """I, the feed-forward inner width."""
    num_layers: int
    """L, the number of decoder layers."""
    num_heads: int
    """Query heads."""
    num_kv_heads: int
    """Key/value heads (fewer than ``num_heads`` with grouped-query attention)."""
    head_dim: int
    """Width of one head."""
    vocab_size: int
    """V, the LM head's output width."""
    llama_family: bool
    """Llama layout (SwiGLU FFN of three products, rotary positions, no biases) or GPT-2's
    (two-product GELU FFN, learned positions, biases)."""

    @classmethod
    def from_dims(cls, dims: dict[str, Any]) -> DecoderFlops:
        """From :func:`exitgym.backbones.hf_compat.decoder_dims`."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in dims.items() if k in names})

    # ---- matrix products (exact) -------------------------------------------------------------
    def kv_matmul(self, k: Any) -> Any:
        """Key and value projections of ``k`` positions (all ``kv="copy"`` computes per layer)."""
        return 2.0 * 2.0 * k * self.hidden_size * self.num_kv_heads * self.head_dim

    def attention_matmul(self, k: Any, n: Any) -> Any:
        """q, k, v and output projections of ``k`` positions plus QKᵀ and AV over ``n`` keys."""
        q_out = 2.0 * 2.0 * k * self.hidden_size * self.num_heads * self.head_dim
        scores_and_context = 2.0 * 2.0 * k * n * self.num_heads * self.head_dim
        return q_out + self.kv_matmul(k) + scores_and_context

    def ffn_matmul(self, k: Any) -> Any:
        products = 3.0 if self.llama_family else 2.0
        return 2.0 * products * k * self.hidden_size * self.intermediate_size

    def head_matmul(self, k: Any) -> Any:
        """The LM head on ``k`` positions."""
        return 2.0 * k * self.hidden_size * self.vocab_size

    # ---- element-wise work (documented constants) --------------------------------------------
    def kv_elementwise(self, k: Any) -> Any:
        """Input norm, biases (GPT-2) and rotary (Llama) of the key/value projections."""
        kv = self.num_kv_heads * self.head_dim
        extra = (ROTARY_FLOPS_PER_ELEMENT * kv) if self.llama_family else 2.0 * kv
        return k * (LAYER_NORM_FLOPS_PER_ELEMENT * self.hidden_size + extra)

    def attention_elementwise(self, k: Any, n: Any) -> Any:
        q = self.num_heads * self.head_dim
        extra = (ROTARY_FLOPS_PER_ELEMENT * q) if self.llama_family else (q + self.hidden_size)
        softmax = (SOFTMAX_FLOPS_PER_ELEMENT + 1.0) * self.num_heads * k * n  # + scale
        return self.kv_elementwise(k) + k * (extra + self.hidden_size) + softmax

    def ffn_elementwise(self, k: Any) -> Any:
        h, i = self.hidden_size, self.intermediate_size
        norm_residual = LAYER_NORM_FLOPS_PER_ELEMENT * h + h
        inner = (ACTIVATION_FLOPS_PER_ELEMENT + 1.0) * i if self.llama_family else (
            ACTIVATION_FLOPS_PER_ELEMENT * i + i + h
        )
        return k * (norm_residual + inner)

    # ---- what callers use --------------------------------------------------------------------
    def embeddings(self, k: Any) -> Any:
        """Lookups are free; GPT-2 adds learned positions."""
        return 0.0 * k if self.llama_family else 1.0 * k * self.hidden_size

    def attention(self, k: Any, n: Any) -> Any:
        """One layer's attention sub-block (norm, projections, scores over ``n`` keys, residual)
        on a chunk of ``k`` positions: what skipping that sub-block saves."""
        return self.attention_matmul(k, n) + self.attention_elementwise(k, n)

    def ffn(self, k: Any) -> Any:
        """One layer's feed-forward sub-block (norm, products, activation, residual)."""
        return self.ffn_matmul(k) + self.ffn_elementwise(k)

    def layer(self, k: Any, n: Any) -> Any:
        """One layer on a chunk of ``k`` positions with ``n`` keys visible."""
        return self.attention(k, n) + self.ffn(k)

    def kv_only(self, k: Any) -> Any:
        """Keys and values of one layer for ``k`` positions from a given state (``kv="copy"``)."""
        return self.kv_matmul(k) + self.kv_elementwise(k)

    def head(self, k: Any = 1) -> Any:
        """Final norm and LM head (the exit head at any layer) on ``k`` positions."""
        return self.head_matmul(k) + LAYER_NORM_FLOPS_PER_ELEMENT * k * self.hidden_size

    def token(self, n: Any) -> Any:
        """Full-depth cost of one generated token at position ``n − 1``: the cost unit."""
        return self.embeddings(1) + self.num_layers * self.layer(1, n) + self.head(1)

    def prompt(self, n: Any) -> Any:
        """Full-depth prefill of an ``n``-token prompt, head on its last position only."""
        return self.embeddings(n) + self.num_layers * self.layer(n, n) + self.head(1)
