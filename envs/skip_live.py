"""Batched live execution for the skip environments: many episodes through layer i in one call.

Skip environments cannot read a cache: the hidden states depend on which attention / feed-forward
blocks ran and which tokens were dropped. This module runs the real backbone instead, for a whole
*cohort* of episodes that sit at the same layer (the vector env's episodes move in lockstep):

- :class:`SampleBank`: every input tokenized once, so a batch is an index plus a trim;
- :data:`TOKEN_STRATEGIES`: the Switchable Decision token candidates (a registry of small objects)
  with an exact definition of the positions each one drops;
- :class:`Cohort`: the residual stream of ``B`` episodes plus their per-episode bookkeeping (FLOPs
  spent, blocks skipped, tokens dropped);
- :class:`SkipExecutor`: embeds a cohort and runs layer 1, runs the next layer with per-sample
  skip masks (rows that skip a block are not computed, see ``Backbone.layer``), drops tokens and
  evaluates exit heads, adding the FLOPs of exactly what it ran.

FLOPs follow docs/design.md: per sample on its real length (which token drops lower), blocks
actually run plus heads actually evaluated; the cost denominator is the full model with its final
head.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from exitgym.utils.devices import place

__all__ = [
    "TOKEN_STRATEGIES",
    "Cohort",
    "DropLast",
    "DropUniform",
    "KeepAll",
    "SampleBank",
    "SkipExecutor",
    "TokenStrategy",
]


# ---- token strategies --------------------------------------------------------------------------
class TokenStrategy(ABC):
    """Which tokens to drop after layer 1 (the first token, CLS, is never dropped).

    Positions are 0-based over the *real* tokens of a sample of length ``n``; the ``m = n − 1``
    non-first tokens are positions ``1..n−1`` (the final ``[SEP]`` counts as an ordinary token).
    """

    name: str = ""
    """Short name used in docs and infos."""

    @abstractmethod
    def dropped(self, positions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Bool ``[B, T]``: True where a real non-first token is dropped.

        Args:
            positions: ``[1, T]`` int64 positions ``0..T−1``.
            lengths: ``[B, 1]`` int64 real lengths ``n``.
        """

    def keep_mask(self, lengths: torch.Tensor, width: int) -> torch.Tensor:
        """Bool ``[B, width]``: the real tokens this strategy keeps (position 0 always kept)."""
        positions = torch.arange(width, device=lengths.device)[None, :]
        n = lengths.to(torch.int64)[:, None]
        real = positions < n
        return real & ~(self.dropped(positions, n) & real & (positions >= 1))


@dataclass(frozen=True)
class KeepAll(TokenStrategy):
    """Strategy 0: drop nothing."""

    name: str = "none"

    def dropped(self, positions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.zeros(lengths.shape[0], positions.shape[1], dtype=torch.bool,
                           device=positions.device)


@dataclass(frozen=True)
class DropLast(TokenStrategy):
    """Drop the last ``k = round_half_up(p · m / 100)`` real tokens (``m = n − 1``).

    Exactly: ``k = (p·m + 50) // 100`` and positions ``n−k .. n−1`` are dropped, so a sample of 21
    real tokens loses 2 / 4 / 6 tokens at p = 10 / 20 / 30 and a sample of 4 loses none / 1 / 1.
    """

    percent: int = 10
    """p, the nominal share of non-first tokens dropped (10, 20 or 30)."""
    name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"last{self.percent}")

    def dropped(self, positions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        k = (self.percent * (lengths - 1) + 50) // 100
        return positions >= lengths - k


@dataclass(frozen=True)
class DropUniform(TokenStrategy):
    """Drop every ``period``-th non-first token: positions ``period, 2·period, ...`` below ``n``.

    ``period`` 4 / 3 / 2 is the paper's "uniformly 25 / 33 / 50 %": ``floor(m / period)`` of the
    ``m`` non-first tokens go.
    """

    period: int = 4
    """Drop position j (1 <= j < n) when ``j % period == 0``."""
    name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"uniform{round(100 / self.period)}")

    def dropped(self, positions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return (positions % self.period == 0).expand(lengths.shape[0], -1)


TOKEN_STRATEGIES: tuple[TokenStrategy, ...] = (
    KeepAll(),
    DropLast(10),
    DropLast(20),
    DropLast(30),
    DropUniform(4),
    DropUniform(3),
    DropUniform(2),
)
"""Index = action value: none, last10, last20, last30, uniform25, uniform33, uniform50."""


# ---- inputs ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SampleBank:
    """Every input of a split tokenized once (batches are index + trim, no tokenizer per reset)."""

    input_ids: torch.Tensor
    """int64 ``[N, T]`` right-padded token ids."""
    attention_mask: torch.Tensor
    """int64 ``[N, T]``, 1 for real tokens."""
    token_type_ids: torch.Tensor | None
    """int64 ``[N, T]`` or None."""
    labels: np.ndarray
    """int64 ``[N]`` gold labels."""

    def __post_init__(self) -> None:
        n = self.input_ids.shape[0]
        if self.input_ids.ndim != 2 or n == 0 or self.input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be a non-empty [N, T] array, got "
                             f"{tuple(self.input_ids.shape)}")
        if tuple(self.attention_mask.shape) != tuple(self.input_ids.shape):
            raise ValueError("attention_mask must have the shape of input_ids")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},) (one per input), got "
                             f"{self.labels.shape}")
        if int(self.attention_mask[:, 0].min()) < 1:
            raise ValueError("every input needs at least one real token (attention_mask[:, 0] = 1)")

    @classmethod
    def from_texts(
        cls,
        backbone: Any,
        texts: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        text_pairs: Sequence[str] | None = None,
        max_length: int = 128,
    ) -> SampleBank:
        """Tokenize ``texts`` (and pairs) with the backbone's tokenizer, like the cache builder."""
        encoded = backbone.tokenize(list(texts), None if text_pairs is None else list(text_pairs),
                                    max_length=max_length)
        return cls.from_ids(encoded, labels)

    @classmethod
    def from_ids(cls, encoded: Any, labels: Sequence[int] | np.ndarray) -> SampleBank:
        """From a dict with ``input_ids`` (and ``attention_mask``, ``token_type_ids``)."""
        if "input_ids" not in encoded:
            raise ValueError("token inputs need 'input_ids' (and usually 'attention_mask')")
        ids = torch.as_tensor(np.asarray(encoded["input_ids"]), dtype=torch.int64)
        mask = encoded.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else torch.as_tensor(
            np.asarray(mask), dtype=torch.int64)
        types = encoded.get("token_type_ids")
        types = None if types is None else torch.as_tensor(np.asarray(types), dtype=torch.int64)
        return cls(ids, mask, types, np.asarray(labels, dtype=np.int64).reshape(-1))

    @property
    def num_samples(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """int64 ``[N]`` real token counts."""
        return self.attention_mask.sum(dim=1).numpy().astype(np.int64)

    def batch(self, sample_ids: np.ndarray) -> dict[str, torch.Tensor]:
        """Token tensors of the given samples, trimmed to the longest of them."""
        idx = torch.as_tensor(np.asarray(sample_ids, dtype=np.int64))
        mask = self.attention_mask[idx]
        width = int(mask.sum(dim=1).max())
        out = {"input_ids": self.input_ids[idx, :width], "attention_mask": mask[:, :width]}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids[idx, :width]
        return out


# ---- cohorts -----------------------------------------------------------------------------------
@dataclass(eq=False)
class Cohort:
    """``B`` episodes at the same layer: their residual stream and per-episode bookkeeping."""

    state: Any
    """``backbones.base.State`` after layer ``layer`` (0-based)."""
    layer: int
    """0-based index of the last layer run (layer 1 = index 0 always runs at the start)."""
    env_ids: np.ndarray
    """int64 ``[B]``: which sub-environment each row belongs to."""
    sample_ids: np.ndarray
    """int64 ``[B]``: input of each row."""
    lengths0: np.ndarray
    """int64 ``[B]``: real length before any token drop."""
    lengths: np.ndarray
    """int64 ``[B]``: current real length."""
    flops: np.ndarray
    """float64 ``[B]``: FLOPs spent so far (embeddings, blocks run, heads, policy)."""
    attention_skipped: np.ndarray
    """int64 ``[B]``: attention blocks skipped so far."""
    ffn_skipped: np.ndarray
    """int64 ``[B]``: feed-forward blocks skipped so far."""
    strategy: np.ndarray
    """int64 ``[B]``: index into :data:`TOKEN_STRATEGIES` applied (0 until one is)."""
    charged: np.ndarray
    """float64 ``[B]``: cost fraction already paid as dense reward."""

    @property
    def size(self) -> int:
        return int(self.env_ids.shape[0])

    def next_layer(self, num_layers: int, skip_attention: np.ndarray, skip_ffn: np.ndarray
                   ) -> tuple[int, np.ndarray, np.ndarray]:
        """The index of the layer to run next and the skip masks as bool arrays.

        Raises:
            RuntimeError: The cohort already ran all ``num_layers`` layers.
        """
        if self.layer + 1 >= num_layers:
            raise RuntimeError(f"the cohort already ran all {num_layers} layers")
        return (self.layer + 1, np.asarray(skip_attention, dtype=bool),
                np.asarray(skip_ffn, dtype=bool))

    def book_layer(self, skip_attention: np.ndarray, skip_ffn: np.ndarray,
                   attention_flops: np.ndarray, ffn_flops: np.ndarray) -> None:
        """Count the layer just run: the FLOPs of the sub-blocks that ran, the skips, the layer."""
        self.flops = self.flops + np.where(skip_attention, 0.0, attention_flops) + np.where(
            skip_ffn, 0.0, ffn_flops)
        self.attention_skipped = self.attention_skipped + skip_attention
        self.ffn_skipped = self.ffn_skipped + skip_ffn
        self.layer += 1

    def select(self, rows: np.ndarray) -> Cohort:
        """The sub-cohort of ``rows`` (bool mask), its batch compacted (``State.select``)."""
        rows = np.asarray(rows, dtype=bool)
        return Cohort(
            state=self.state.select(torch.from_numpy(rows)),  # a host mask indexes any device
            layer=self.layer,
            **{name: getattr(self, name)[rows] for name in _ROW_FIELDS},
        )


_ROW_FIELDS = ("env_ids", "sample_ids", "lengths0", "lengths", "flops", "attention_skipped",
               "ffn_skipped", "strategy", "charged")


class SkipExecutor:
    """Runs cohorts through a backbone with per-sample decisions, counting the FLOPs it spends.

    Args:
        backbone: a ``Backbone`` (eval mode is set here).
        heads: ``ExitHeads`` with one head per backbone layer.
        bank: the tokenized inputs.
    """

    def __init__(self, backbone: Any, heads: Any, bank: SampleBank) -> None:
        if heads.num_layers != backbone.num_layers:
            raise ValueError(f"heads have {heads.num_layers} layers but the backbone has "
                             f"{backbone.num_layers}")
        if backbone.num_layers < 2:
            raise ValueError("skip environments need a backbone with at least 2 layers (layer 1 "
                             "always runs; decisions start at layer 2)")
        backbone.model.eval()
        heads.eval()
        self.backbone = backbone
        self.heads = heads
        self.bank = bank
        self.num_layers = int(backbone.num_layers)
        self.flops_model = backbone.flops
        self.head_flops = float(heads.flops(backbone.flops))
        lengths = bank.lengths.astype(np.float64)
        self.denominator = np.asarray(self.flops_model.full(lengths), dtype=np.float64) + \
            self.head_flops
        """float64 ``[N]``: FLOPs of the full model with its final head, per sample."""

    @torch.inference_mode()
    def start(self, sample_ids: np.ndarray, env_ids: np.ndarray) -> Cohort:
        """Embed the samples and run layer 1 in full (one batched call)."""
        sample_ids = np.asarray(sample_ids, dtype=np.int64)
        state = self.backbone.embed(self.bank.batch(sample_ids))
        state = self.backbone.layer(0, state)
        n = state.lengths.cpu().numpy().astype(np.int64)
        nf = n.astype(np.float64)
        fm = self.flops_model
        flops = np.asarray(fm.embeddings(nf) + fm.attention(nf) + fm.ffn(nf), dtype=np.float64)
        zeros = np.zeros(len(n), dtype=np.int64)
        return Cohort(state, 0, np.asarray(env_ids, dtype=np.int64).copy(), sample_ids.copy(),
                      n, n.copy(), flops, zeros, zeros.copy(), zeros.copy(),
                      np.zeros(len(n), dtype=np.float64))

    @torch.inference_mode()
    def drop_tokens(self, cohort: Cohort, strategy: np.ndarray) -> None:
        """Apply each row's token strategy (indices into :data:`TOKEN_STRATEGIES`) in place."""
        strategy = np.asarray(strategy, dtype=np.int64)
        if not strategy.any():
            return
        state = cohort.state
        keep = state.mask.clone()
        lengths = torch.from_numpy(cohort.lengths).to(keep.device)
        for index in np.unique(strategy[strategy > 0]):
            rows = torch.from_numpy(strategy == index).to(keep.device)
            keep[rows] = TOKEN_STRATEGIES[int(index)].keep_mask(lengths[rows], keep.shape[1])
        cohort.state = self.backbone.drop_tokens(state, keep)
        cohort.lengths = cohort.state.lengths.cpu().numpy().astype(np.int64)
        cohort.strategy = strategy.copy()

    @torch.inference_mode()
    def run_layer(self, cohort: Cohort, skip_attention: np.ndarray, skip_ffn: np.ndarray) -> None:
        """Run the cohort's next layer with per-row skip masks, adding the FLOPs of what ran."""
        i, skip_att, skip_f = cohort.next_layer(self.num_layers, skip_attention, skip_ffn)
        cohort.state = self.backbone.layer(i, cohort.state, skip_attention=torch.from_numpy(
            skip_att), skip_ffn=torch.from_numpy(skip_f))
        n = cohort.lengths.astype(np.float64)
        cohort.book_layer(skip_att, skip_f, self.flops_model.attention(n),
                          self.flops_model.ffn(n))

    @torch.inference_mode()
    def pooled(self, cohort: Cohort) -> np.ndarray:
        """float32 ``[B, H]`` pooled current state."""
        return self.backbone.pool(cohort.state).float().cpu().numpy().astype(np.float32,
                                                                             copy=False)

    @torch.inference_mode()
    def answer(self, cohort: Cohort, rows: np.ndarray) -> np.ndarray:
        """Logits ``[k, C]`` (float64) of the current layer's head for ``rows``; charges it."""
        rows = np.asarray(rows, dtype=bool)
        pooled = self.backbone.pool(cohort.state)[torch.from_numpy(rows).to(self.device)]
        logits = self.heads.head(cohort.layer, pooled).double().cpu().numpy()
        cohort.flops = cohort.flops + np.where(rows, self.head_flops, 0.0)
        return logits

    @property
    def device(self) -> torch.device:
        """Where backbone and heads run (:meth:`place` moves them)."""
        return self.backbone.device

    def place(self, device: str = "auto", dtype: str = "float32") -> None:
        """Move backbone and heads to ``device`` in ``dtype`` (:func:`~exitgym.utils.devices.place`;
        the sample bank stays on the host, a batch is sent when a cohort starts)."""
        place([self.backbone.model, self.heads], device, dtype)

    def cost(self, cohort: Cohort) -> np.ndarray:
        """float64 ``[B]`` cost fraction spent so far (FLOPs / full model with its final head)."""
        return cohort.flops / self.denominator[cohort.sample_ids]
