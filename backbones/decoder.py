"""A decoder LM stepped one layer at a time with exitgym's own per-layer, per-row KV cache.

Token-level early exit decides between the layers of *each generated token*, and an exited token
leaves the layers above it without keys and values that later tokens attend to. Hugging Face's
cache fills every layer per forward call, so exitgym keeps its own: for each layer ``l`` and row
``b`` a key/value buffer and a fill count ``lengths[l, b]``. Layers of one row may be filled to
different depths (a token that exited below ``l`` is *pending* at ``l``), which is what the three
ways of treating skipped layers need (:mod:`exitgym.envs.token_exit`):

- :meth:`DecoderBackbone.layer` runs a chunk of new positions of some rows through layer ``i``,
  appends their keys and values and attends over everything filled before (causal);
- :meth:`DecoderBackbone.write_kv` only appends keys and values computed from a given state
  (``kv="copy"``: CALM / ConsistentEE pass the exit state up);
- :meth:`DecoderBackbone.logits` is the exit head: the final norm and the LM head at any layer.

The sub-blocks are the model's own modules (:mod:`exitgym.backbones.hf_compat`), and the attention
is the eager formula over the cache (grouped-query heads stacked on the query axis, no copied keys),
so stepping every layer of every token reproduces
``model.generate(do_sample=False)`` (tests check it token for token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from exitgym.backbones import hf_compat
from exitgym.backbones.decoder_flops import DecoderFlops
from exitgym.backbones.fingerprint import model_fingerprint


@dataclass
class KVCache:
    """Keys and values of every layer for a batch of sequences, each row filled on its own."""

    keys: list[torch.Tensor]
    """``L`` tensors ``[B, kv_heads, capacity, head_dim]``."""
    values: list[torch.Tensor]
    """Same shapes as :attr:`keys`."""
    lengths: torch.Tensor
    """int64 ``[L, B]``: positions filled at each layer (layer 0 = tokens that entered)."""

    @property
    def capacity(self) -> int:
        return int(self.keys[0].shape[2])

    def select(self, rows: torch.Tensor) -> KVCache:
        """The cache of some rows (copies; used to compact a batch when sequences finish)."""
        return KVCache([k[rows] for k in self.keys], [v[rows] for v in self.values],
                       self.lengths[:, rows].clone())


def _rows(rows: torch.Tensor | None, cache: KVCache) -> torch.Tensor:
    if rows is None:
        return torch.arange(cache.lengths.shape[1])
    return torch.as_tensor(rows, dtype=torch.long).reshape(-1)


class DecoderBackbone:
    """A causal LM (Llama family or GPT-2) stepped one layer at a time.

    Args:
        model: a ``*ForCausalLM`` model; put in eval mode here.
        tokenizer: its tokenizer, or None when callers pass token ids.
        name: a human-readable name (short name, hub id or directory).
    """

    def __init__(
        self, model: nn.Module, tokenizer: Any | None = None, name: str = "custom"
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.adapter = hf_compat.decoder_family_of(model.config)
        self.dims = hf_compat.decoder_dims(model.config)
        self.flops = DecoderFlops.from_dims(self.dims)
        self._lm_head = model.get_output_embeddings()
        self._fingerprint: str | None = None

    @property
    def family(self) -> str:
        return self.adapter.family

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def num_layers(self) -> int:
        return int(self.dims["num_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.dims["hidden_size"])

    @property
    def vocab_size(self) -> int:
        return int(self.dims["vocab_size"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self) -> str:
        """sha256 over the config and every weight (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, "decoder")
        return self._fingerprint

    # ---- stepping -----------------------------------------------------------------------------
    def new_cache(self, batch_size: int, capacity: int) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``capacity`` positions."""
        shape = (batch_size, self.dims["num_kv_heads"], capacity, self.dims["head_dim"])
        dtype, device = self._lm_head.weight.dtype, self.device
        keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(self.num_layers)]
        values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(self.num_layers)]
        return KVCache(keys, values, torch.zeros(self.num_layers, batch_size, dtype=torch.long))

    def embed(
        self, ids: torch.Tensor, cache: KVCache, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embeddings of new tokens ``[b, T]`` of the given rows, at their next positions."""
        positions = self._positions(0, cache, _rows(rows, cache), ids.shape[1])
        return self.adapter.embed(self.model, ids.to(self.device), positions)

    def _positions(self, i: int, cache: KVCache, rows: torch.Tensor, width: int) -> torch.Tensor:
        return (cache.lengths[i, rows][:, None] + torch.arange(width)[None, :]).to(self.device)

    def _write(
        self, i: int, cache: KVCache, rows: torch.Tensor, positions: torch.Tensor,
        valid: torch.Tensor | None, k: torch.Tensor, v: torch.Tensor,
    ) -> None:
        """Append keys/values at ``positions``; ``valid=None``: every position is real (the
        one-token steps of generation, written without building a mask)."""
        if valid is None:
            needed = int(positions.max()) + 1
        else:
            needed = int(positions[valid].max()) + 1 if bool(valid.any()) else 0
        if needed > cache.capacity:
            raise ValueError(f"KV cache capacity {cache.capacity} exceeded (position {needed - 1})")
        if valid is None:
            index = rows.to(positions.device)[:, None]
            cache.keys[i][index, :, positions] = k.transpose(1, 2)
            cache.values[i][index, :, positions] = v.transpose(1, 2)
            cache.lengths[i, rows] += positions.shape[1]
            return
        b, t = valid.nonzero(as_tuple=True)
        cache.keys[i][rows[b], :, positions[b, t]] = k[b, :, t]
        cache.values[i][rows[b], :, positions[b, t]] = v[b, :, t]
        cache.lengths[i, rows] += valid.sum(dim=1).cpu()

    def _valid(self, valid: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        return None if valid is None else valid.to(device=device, dtype=torch.bool)

    def layer(
        self, i: int, hidden: torch.Tensor, cache: KVCache, rows: torch.Tensor | None = None,
        valid: torch.Tensor | None = None, attention: bool = True, ffn: bool = True,
    ) -> torch.Tensor:
        """Run layer ``i`` (0-based) on new positions of some rows and append their keys/values.

        Args:
            i: the layer.
            hidden: ``[b, T, H]`` inputs of layer ``i`` for ``T`` new positions per row.
            cache: the batch's cache; ``lengths[i, rows]`` says where each row's chunk starts.
            rows: which cache rows ``hidden`` belongs to (default: all, in order).
            valid: bool ``[b, T]``: real positions (a row's chunk is a prefix); default all.
            attention: run the attention sub-block; False skips it (the residual stream passes
                unchanged and no keys or values are written: the skip environments hold such a
                skip for a whole episode, so that layer's cache stays empty).
            ffn: run the feed-forward sub-block; False skips it.

        Returns:
            ``[b, T, H]`` outputs (padded positions hold unspecified values).
        """
        if not 0 <= i < self.num_layers:
            raise IndexError(f"layer index {i} out of range; layers 0..{self.num_layers - 1}")
        if attention:
            hidden = self._attention(i, hidden, cache, rows, valid)
        return self.adapter.ffn(self.model, i, hidden) if ffn else hidden

    def _attention(
        self, i: int, hidden: torch.Tensor, cache: KVCache, rows: torch.Tensor | None,
        valid: torch.Tensor | None,
    ) -> torch.Tensor:
        """Layer ``i``'s attention sub-block with its residual; appends the chunk's keys/values."""
        rows = _rows(rows, cache)
        valid = self._valid(valid, hidden.device)
        positions = self._positions(i, cache, rows, hidden.shape[1])
        q, k, v = self.adapter.qkv(self.model, i, hidden, positions, True)
        self._write(i, cache, rows, positions, valid, k, v)
        filled = cache.lengths[i, rows]
        width = int(filled.max())
        keys, values = cache.keys[i][rows, :, :width], cache.values[i][rows, :, :width]
        # Grouped-query attention without copying keys: the query heads sharing a key/value
        # head are stacked on the query axis (head h reads kv head h // groups, as in HF).
        b, heads, t, d = q.shape
        kv_heads = keys.shape[1]
        q = q.reshape(b, kv_heads, (heads // kv_heads) * t, d)
        scores = torch.matmul(q, keys.transpose(-1, -2)) * self.dims["scaling"]
        if t > 1 or int(filled.min()) < width:  # one new token per row, all rows filled
            key_pos = torch.arange(width, device=hidden.device)  # alike: nothing to mask
            allowed = (key_pos[None, None, :] <= positions[:, :, None])[:, None, None]
            scores = scores.view(b, kv_heads, heads // kv_heads, t, width).masked_fill(
                ~allowed, torch.finfo(scores.dtype).min).view(b, kv_heads, -1, width)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
        context = torch.matmul(weights, values).view(b, heads, t, d)
        context = context.transpose(1, 2).reshape(*hidden.shape[:2], -1)
        return hidden + self.adapter.out(self.model, i, context)

    def write_kv(
        self, i: int, hidden: torch.Tensor, cache: KVCache, rows: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> None:
        """Append layer ``i``'s keys and values computed from ``hidden`` (no attention, no FFN)."""
        rows = _rows(rows, cache)
        valid = self._valid(valid, hidden.device)
        positions = self._positions(i, cache, rows, hidden.shape[1])
        _, k, v = self.adapter.qkv(self.model, i, hidden, positions, False)
        self._write(i, cache, rows, positions, valid, k, v)

    def final_norm(self, hidden: torch.Tensor) -> torch.Tensor:
        """The model's norm before the LM head (what the exit head reads), at any layer."""
        return self.adapter.final_norm(self.model, hidden)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The exit head at any layer: the final norm and the LM head (``[..., V]``)."""
        return self._lm_head(self.final_norm(hidden))

    # ---- whole sequences ----------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt (no padding)."""
        if self.tokenizer is None:
            raise ValueError(f"decoder {self.name!r} has no tokenizer; pass token ids")
        return [list(self.tokenizer(p)["input_ids"]) for p in prompts]

    def prefill(
        self, prompts: Sequence[Sequence[int]], capacity: int
    ) -> tuple[KVCache, torch.Tensor]:
        """Run whole prompts through every layer (no exits on prompts, as in CALM).

        Returns:
            the cache and the final-layer hidden state of each prompt's last token ``[B, H]``.
        """
        lengths = torch.tensor([len(p) for p in prompts])
        if len(prompts) == 0 or int(lengths.min()) == 0:
            raise ValueError("prefill needs at least one prompt, each with at least one token")
        ids = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long)
        for b, p in enumerate(prompts):
            ids[b, : len(p)] = torch.as_tensor(list(p))
        valid = torch.arange(ids.shape[1])[None, :] < lengths[:, None]
        cache = self.new_cache(len(prompts), capacity)
        hidden = self.embed(ids, cache)
        for i in range(self.num_layers):
            hidden = self.layer(i, hidden, cache, valid=valid)
        last = hidden[torch.arange(len(prompts)), (lengths - 1).to(hidden.device)]
        return cache, last

    def fill_row(self, ids: Sequence[int], cache: KVCache, row: int) -> torch.Tensor:
        """Run one row's new tokens through every layer at full depth (a prompt prefilled into a
        row of a shared cache, where other rows are mid-generation: continuous batching).

        Returns:
            the last layer's states of those tokens ``[T, H]``.
        """
        rows = torch.tensor([row])
        hidden = self.embed(torch.tensor([list(ids)]), cache, rows)
        for i in range(self.num_layers):
            hidden = self.layer(i, hidden, cache, rows)
        return hidden[0]

    def greedy(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> torch.Tensor:
        """Full-depth greedy generation by stepping every layer (``[B, max_new_tokens]``)."""
        longest = max(len(p) for p in prompts)
        cache, last = self.prefill(prompts, longest + max_new_tokens)
        out = [self.logits(last).argmax(dim=-1)]
        for _ in range(max_new_tokens - 1):
            hidden = self.embed(out[-1][:, None], cache)
            for i in range(self.num_layers):
                hidden = self.layer(i, hidden, cache)
            out.append(self.logits(hidden[:, 0]).argmax(dim=-1))
        return torch.stack(out, dim=1)

    def __repr__(self) -> str:
        return (f"DecoderBackbone(name={self.name!r}, family={self.family!r}, "
                f"layers={self.num_layers}, hidden={self.hidden_size})")
