"""A Hugging Face encoder stepped one layer at a time on a batch.

Environments decide between layers (exit, skip a sub-block, drop tokens), so the model must be
run layer by layer with per-sample decisions. :class:`Backbone` does that with the model's own
modules (through :mod:`exitgym.backbones.hf_compat`), so with no skips it reproduces the model's
``output_hidden_states``; skipped sub-blocks really do not run (rows that skip are left out of the
computation), and dropped tokens are really removed so later layers cost less.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from exitgym.backbones import hf_compat
from exitgym.backbones.fingerprint import model_fingerprint
from exitgym.backbones.flops import FlopsModel

POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class State:
    """The residual stream of a batch between two layers."""

    hidden: torch.Tensor
    """``[B, T, H]`` hidden states (padded positions hold unspecified values)."""
    mask: torch.Tensor
    """``[B, T]`` bool, True for real tokens."""

    @property
    def lengths(self) -> torch.Tensor:
        """Real token count of each sample ``[B]`` (what FLOPs are counted on)."""
        return self.mask.sum(dim=1)

    @property
    def batch_size(self) -> int:
        return int(self.hidden.shape[0])

    def select(self, rows: torch.Tensor, width: int | None = None) -> State:
        """The sub-batch of the given rows (bool mask or indices), trimmed to its longest sample.

        Used to compact a batch when samples leave it (early exit), so later layers run on fewer
        rows and columns. A caller that knows the rows' longest length passes ``width``, which
        spares reading it back from the device (a host synchronisation on a GPU).
        """
        hidden, mask = self.hidden[rows], self.mask[rows]
        if width is None:
            width = int(mask.sum(dim=1).max()) if mask.shape[0] else 0
        return State(hidden[:, :width], mask[:, :width])


def _as_row_mask(value: Any, batch_size: int, name: str) -> torch.Tensor | None:
    """Validate a per-sample skip mask: None, or bool-like of shape [B]."""
    if value is None:
        return None
    mask = torch.as_tensor(value)
    if mask.dtype != torch.bool:
        if mask.dtype.is_floating_point or mask.dtype.is_complex:
            raise TypeError(
                f"{name} must be a boolean mask of shape [{batch_size}], got {mask.dtype}"
            )
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{name} must hold only 0/1 or booleans")
        mask = mask.to(torch.bool)
    if tuple(mask.shape) != (batch_size,):
        raise ValueError(
            f"{name} must have shape [{batch_size}] (one flag per sample), got {tuple(mask.shape)}"
        )
    return mask


class Backbone:
    """A Hugging Face encoder (BERT, RoBERTa, ALBERT, DistilBERT) stepped layer by layer.

    Args:
        model: the base encoder (``AutoModel``), put in eval mode by the caller or here.
        tokenizer: its tokenizer; may be None when callers pass token ids themselves.
        name: a human-readable name (short name, hub id or directory).
        pooling: ``cls`` (first token, BERT-style classifiers) or ``mean`` (masked mean,
            sentence-transformers models). None picks the family default.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any | None = None,
        name: str = "custom",
        pooling: str | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.adapter = hf_compat.family_of(model.config)
        pooling = pooling or self.adapter.default_pooling
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; allowed: {list(POOLINGS)}")
        self.pooling = pooling
        self.flops = FlopsModel.from_config(model.config)
        self._layers = self.adapter.layers(model)
        self._mask_memo: tuple[torch.Tensor, torch.dtype, torch.Tensor | None] | None = None
        """The last padding mask seen, its hidden dtype and its 4-D attention mask."""
        self._fingerprint: str | None = None

    # ---- description --------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    @property
    def hidden_size(self) -> int:
        return self.flops.hidden_size

    @property
    def max_tokens(self) -> int | None:
        """Longest input the position embeddings allow (None: no limit known).

        RoBERTa's positions start after the padding index, so it loses two of them.
        """
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions is None:
            return None
        return int(positions) - (2 if self.family == "roberta" else 0)

    def token_limit(self, max_length: int) -> int:
        """``max_length``, lowered to :attr:`max_tokens`: what inputs are really cut at."""
        limit = self.max_tokens
        return max_length if limit is None else min(int(max_length), limit)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self) -> str:
        """sha256 over the config, the pooling and every weight: names what a cache was built from.

        Computed once per Backbone; a caller that changes weights in place (fine-tuning) must call
        :meth:`invalidate_fingerprint`.
        """
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, self.pooling)
        return self._fingerprint

    def invalidate_fingerprint(self) -> None:
        self._fingerprint = None

    # ---- stepping -----------------------------------------------------------------------------
    def tokenize(
        self,
        texts: Sequence[str],
        text_pairs: Sequence[str] | None = None,
        max_length: int = 128,
    ) -> dict[str, torch.Tensor]:
        """Tokenize a batch (padded to its longest member, truncated to ``max_length``).

        A ``max_length`` beyond the model's position embeddings is lowered to
        :meth:`token_limit`, so inputs of any length (thousands of words) embed.
        """
        if self.tokenizer is None:
            raise ValueError(f"backbone {self.name!r} has no tokenizer; pass token ids to embed()")
        check_texts(texts, "texts")
        if text_pairs is not None:
            check_texts(text_pairs, "text_pairs")
            if len(text_pairs) != len(texts):
                raise ValueError(
                    f"text_pairs has {len(text_pairs)} entries but texts has {len(texts)}"
                )
        encoded = self.tokenizer(
            list(texts),
            list(text_pairs) if text_pairs is not None else None,
            padding=True,
            truncation=True,
            max_length=self.token_limit(max_length),
            return_tensors="pt",
        )
        return dict(encoded)

    def token_counts(self, texts: Sequence[str],
                     text_pairs: Sequence[str] | None = None) -> list[int]:
        """Untruncated token count of each input (special tokens included).

        Why: :meth:`tokenize` cuts inputs at ``max_length`` silently; ``prepare`` compares these
        counts with it to report how many rows were cut.
        """
        if self.tokenizer is None:
            raise ValueError(f"backbone {self.name!r} has no tokenizer; cannot count tokens")
        encoded = self.tokenizer(list(texts), list(text_pairs) if text_pairs is not None else None,
                                 truncation=False, verbose=False)
        return [len(ids) for ids in encoded["input_ids"]]

    def embed(self, batch: Mapping[str, torch.Tensor] | Sequence[str]) -> State:
        """Embeddings of a batch: the state entering layer 1 (0-based layer 0)."""
        if isinstance(batch, str):
            raise TypeError("embed() takes a batch: a list of strings or a tokenized dict")
        if not isinstance(batch, Mapping):
            batch = self.tokenize(list(batch))
        if "input_ids" not in batch:
            raise ValueError("a tokenized batch needs 'input_ids' (and usually 'attention_mask')")
        input_ids = torch.as_tensor(batch["input_ids"], device=self.device)
        if input_ids.ndim != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(
                f"input_ids must be a non-empty [batch, tokens] tensor, got "
                f"{tuple(input_ids.shape)}"
            )
        mask = batch.get("attention_mask")
        mask = (
            torch.ones_like(input_ids, dtype=torch.bool)
            if mask is None
            else torch.as_tensor(mask, device=self.device).to(torch.bool)
        )
        token_types = batch.get("token_type_ids")
        if token_types is not None:
            token_types = torch.as_tensor(token_types, device=self.device)
        hidden = self.adapter.embed(self.model, input_ids, token_types)
        return State(hidden, mask)

    def layer(
        self,
        i: int,
        state: State,
        skip_attention: Any | None = None,
        skip_ffn: Any | None = None,
    ) -> State:
        """Run layer ``i`` (0-based) with per-sample skip masks.

        A skipped sub-block leaves the residual stream unchanged for that sample; rows that skip
        a sub-block are not computed at all, so skipping saves real time as well as FLOPs.
        """
        if not 0 <= i < self.num_layers:
            raise IndexError(
                f"layer index {i} out of range; this backbone has layers 0..{self.num_layers - 1}"
            )
        batch = state.batch_size
        skip_att = _as_row_mask(skip_attention, batch, "skip_attention")
        skip_f = _as_row_mask(skip_ffn, batch, "skip_ffn")
        module = self._layers[i]
        hidden = self._sub_block(self.adapter.attention, module, state, skip_att, needs_mask=True)
        hidden = self._sub_block(
            self.adapter.ffn, module, State(hidden, state.mask), skip_f, needs_mask=False
        )
        return State(hidden, state.mask)

    def _sub_block(
        self,
        block: hf_compat.Block,
        module: nn.Module,
        state: State,
        skip: torch.Tensor | None,
        needs_mask: bool,
    ) -> torch.Tensor:
        if skip is not None:
            skip = skip.to(state.hidden.device)
        if skip is None or not bool(skip.any()):
            return block(module, state.hidden, self._mask4d(state, needs_mask))
        if bool(skip.all()):
            return state.hidden
        run = ~skip
        sub = state.select(run)
        mask4d = self._mask4d(sub, needs_mask)
        out = state.hidden.clone()
        out[run, : sub.hidden.shape[1]] = block(module, sub.hidden, mask4d)
        return out

    def _mask4d(self, state: State, needs_mask: bool) -> torch.Tensor | None:
        # No padding (always so at batch 1): attention needs no mask, and building one costs
        # about as much per layer as a tenth of MiniLM's layer at batch 1.
        if not needs_mask:
            return None
        # A batch keeps its mask object from layer to layer until it is compacted: the 4-D mask
        # is built once per mask, and "is anything padded" (a host read on a GPU) asked once,
        # not at every layer. Masks are never changed in place (compaction makes new ones).
        memo = self._mask_memo
        if memo is not None and memo[0] is state.mask and memo[1] == state.hidden.dtype:
            return memo[2]
        mask4d = (None if bool(state.mask.all())
                  else hf_compat.attention_mask_4d(self.model, state.hidden, state.mask))
        self._mask_memo = (state.mask, state.hidden.dtype, mask4d)
        return mask4d

    def drop_tokens(self, state: State, keep_mask: Any) -> State:
        """Really remove tokens: kept tokens move left, the batch shrinks to the longest sample.

        The first token (CLS) is always kept, whatever ``keep_mask`` says, since CLS pooling and
        the heads read it. Padding stays dropped.
        """
        keep = torch.as_tensor(keep_mask, device=state.hidden.device)
        if keep.dtype != torch.bool:
            raise TypeError(f"keep_mask must be a boolean tensor, got {keep.dtype}")
        if tuple(keep.shape) != tuple(state.mask.shape):
            raise ValueError(
                f"keep_mask must have shape {tuple(state.mask.shape)} (batch, tokens), "
                f"got {tuple(keep.shape)}"
            )
        keep = keep & state.mask
        keep[:, 0] = True
        new_len = keep.sum(dim=1)
        width = int(new_len.max())
        # Stable order of kept positions: sort by (not kept, position).
        positions = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)
        order = torch.argsort((~keep).to(torch.int64) * keep.shape[1] + positions, dim=1)[:, :width]
        hidden = torch.gather(
            state.hidden, 1, order.unsqueeze(-1).expand(-1, -1, state.hidden.shape[-1])
        )
        mask = torch.arange(width, device=keep.device)[None, :] < new_len[:, None]
        return State(hidden, mask)

    def pool(self, state: State) -> torch.Tensor:
        """``[B, H]``: first token (``cls``) or masked mean over real tokens (``mean``)."""
        if self.pooling == "cls":
            return state.hidden[:, 0]
        weights = state.mask.to(state.hidden.dtype).unsqueeze(-1)
        return (state.hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def forward_pooled(
        self, batch: Mapping[str, torch.Tensor] | Sequence[str]
    ) -> list[torch.Tensor]:
        """Pooled state after every layer, no skips: ``L`` tensors of ``[B, H]``."""
        state = self.embed(batch)
        pooled = []
        for i in range(self.num_layers):
            state = self.layer(i, state)
            pooled.append(self.pool(state))
        return pooled

    def plain_pooled(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``[B, H]`` pooled last state of the model's own forward (no layer stepping): the
        full-depth baseline deployments compare early exit with. Inputs move to the model."""
        ids = torch.as_tensor(batch["input_ids"], device=self.device)
        mask = torch.as_tensor(batch["attention_mask"], device=self.device)
        types = batch.get("token_type_ids")
        hidden = hf_compat.plain_forward(self.model, ids, mask, None if types is None
                                         else torch.as_tensor(types, device=self.device))
        return self.pool(State(hidden, mask.to(torch.bool)))

    def layer_flops(self, state: State) -> torch.Tensor:
        """FLOPs of one full layer for each sample at its current real length ``[B]``."""
        return torch.as_tensor(self.flops.layer(state.lengths.to(torch.float64)))

    def __repr__(self) -> str:
        return (
            f"Backbone(name={self.name!r}, family={self.family!r}, layers={self.num_layers}, "
            f"hidden={self.hidden_size}, pooling={self.pooling!r})"
        )


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """Validate a batch of texts (a non-empty sequence of ``str``) and return it as a list.

    Shared by every entry point that takes raw text, so the errors read the same everywhere.
    """
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise ValueError(f"{name} is empty; give at least one string")
    for k, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{k}] is {type(text).__name__}, expected str")
    return list(texts)
