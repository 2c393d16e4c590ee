"""Lossless self-speculative generation: early-exit drafts verified by the remaining layers.

``exitgym.generate(None, prompts, mode="speculative", draft_layer=k, draft_tokens=n)``
(Draft & Verify, LayerSkip's self-speculation, SWIFT): early exit that cannot change the output.
Each *cycle* of a row

1. **drafts** up to ``n`` tokens greedily with layers ``1..k`` and the exit head at layer ``k``
   (final norm + LM head, behind the layer's distilled map when ``heads=`` has maps), one token
   at a time, each draft token being the next draft input; the draft's keys and values of
   layers ``1..k`` stay in the cache;
2. **verifies** them: layers ``k+1..L`` run once over the ``m`` drafted positions as one chunk
   (their inputs are the draft's layer-``k`` states, so layers ``1..k`` are not recomputed), and
   the final head gives the full model's greedy token after each drafted input;
3. **accepts** the longest prefix where draft and full model agree plus the full model's token at
   the first mismatch (its prefix is all correct, so it is the full model's token too): between
   1 and ``m`` tokens, every one the full model's;
4. **rolls back** the cache of every layer to the emitted positions (the cache addresses
   positions by fill count, so lowering ``lengths`` drops the rejected positions' keys and
   values, and later writes overwrite them).

The output is therefore greedy ``generate``'s (tests check it token for token against Hugging
Face). There is no extra token when every draft is accepted: the last draft token has not been
through any layer yet, so it is the next cycle's first input.

**Charged** (every FLOP computed, rejected work included): per drafted token its embedding, ``k``
layers with the keys visible at its position and the draft head; per cycle the verify chunk,
``(L − k)`` layers of ``m`` positions over the row's keys, and the final head on ``m`` positions
(none when ``k = L``: the draft head is then the final head, distilled maps having no map
at the last layer). The cost is that
over the full-depth FLOPs of the emitted tokens (``DecoderFlops.token``), so a draft that is
rejected costs more than 1. The prompt is prefilled at full depth and not charged, as in exit
mode. ``acceptance`` is accepted draft tokens over drafted tokens.

Rows: ``batch_size`` rows run side by side with continuous refill, like exit mode: each row
drafts its own ``m = min(n, tokens left)``, the draft calls take the rows still drafting, the
verify chunk is padded to the longest ``m`` with a mask, and each row accepts and rolls back on
its own. ``k`` and ``n`` are arguments (a fixed rule); choosing them per token with an agent
(DEL, LEDE) is not built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from exitgym.envs.token_runner import exit_head, head_flops

__all__ = ["SpeculativeRow", "check_draft", "speculative_rows"]


@dataclass
class SpeculativeRow:
    """The progress and accounting of one prompt."""

    prompt: int
    """Index of the prompt."""
    last: int
    """The next input token: the last emitted one (its position is not in the cache yet)."""
    generated: list[int] = field(default_factory=list)
    """Emitted token ids (the full model's greedy tokens)."""
    drafted: int = 0
    """Draft tokens proposed."""
    accepted: int = 0
    """Draft tokens equal to the full model's."""
    flops: float = 0.0
    """FLOPs computed (draft, verify and heads)."""
    full_flops: float = 0.0
    """Full-depth FLOPs of the emitted tokens (the cost unit)."""


def check_draft(num_layers: int, draft_layer: Any, draft_tokens: Any) -> None:
    """Refuse a draft layer outside ``[1, L]`` or a draft length below 1.

    Raises:
        ValueError: the message says what is allowed.
    """
    if isinstance(draft_layer, bool) or not isinstance(draft_layer, (int, np.integer)) or not (
            1 <= draft_layer <= num_layers):
        raise ValueError(f"draft_layer must be an integer in [1, {num_layers}] (the decoder's "
                         f"layers; {num_layers} drafts with the full model), got {draft_layer!r}")
    if isinstance(draft_tokens, bool) or not isinstance(draft_tokens, (int, np.integer)) or (
            draft_tokens < 1):
        raise ValueError(f"draft_tokens must be an integer >= 1, got {draft_tokens!r}")


class _Speculator:
    """One cache of ``num_rows`` rows and the draft / verify / accept cycle over them."""

    def __init__(self, bb: Any, maps: Any, draft_layer: int, draft_tokens: int, num_rows: int,
                 capacity: int) -> None:
        self.bb, self.maps = bb, maps
        self.k, self.n, self.L = draft_layer, draft_tokens, bb.num_layers
        self.cache = bb.new_cache(num_rows, capacity)
        # drafting at the last layer: the draft head is the final head (maps have none there)
        self.verify_head = draft_layer < bb.num_layers
        self.draft_head_flops = head_flops(bb, maps, draft_layer - 1)

    def begin(self, row: int, prompt: int, ids: list[int]) -> SpeculativeRow:
        """Clear ``row`` and prefill ``ids[:-1]`` at full depth (not charged)."""
        self.cache.lengths[:, row] = 0
        if len(ids) > 1:
            self.bb.fill_row(ids[:-1], self.cache, row)
        return SpeculativeRow(prompt=prompt, last=int(ids[-1]))

    def cycle(self, slots: dict[int, SpeculativeRow], max_new_tokens: int) -> int:
        """One draft / verify / accept cycle of every row in ``slots``; returns tokens emitted."""
        bb, cache, k = self.bb, self.cache, self.k
        rows = sorted(slots)
        want = torch.tensor([min(self.n, max_new_tokens - len(slots[r].generated)) for r in rows])
        width = int(want.max())
        start = cache.lengths[0, rows].clone()  # positions filled before this cycle
        on = bb.device  # drafts and states stay where the decoder runs until the cycle ends
        states = torch.zeros(len(rows), width, bb.hidden_size, device=on,
                             dtype=next(bb.model.parameters()).dtype)
        drafts = torch.zeros(len(rows), width, dtype=torch.long, device=on)
        inputs = torch.tensor([slots[r].last for r in rows], device=on)
        for d in range(width):  # draft: one token at a time through layers 1..k
            live = torch.nonzero(want > d).reshape(-1)
            idx = torch.tensor(rows)[live]
            hidden = bb.embed(inputs[live][:, None], cache, idx)
            for i in range(k):
                hidden = bb.layer(i, hidden, cache, idx)
            token = exit_head(bb, self.maps, k - 1, hidden[:, 0]).argmax(dim=-1)
            states[live, d], drafts[live, d], inputs[live] = hidden[:, 0], token, token
        full = drafts
        if self.verify_head:  # verify: layers k+1..L over the drafted positions in one chunk
            valid = None if bool((want == width).all()) else (
                torch.arange(width)[None, :] < want[:, None])
            hidden = states
            for i in range(k, self.L):
                hidden = bb.layer(i, hidden, cache, torch.tensor(rows), valid)
            full = bb.logits(hidden).argmax(dim=-1)
        drafts, full = drafts.cpu(), full.cpu()  # one host read per cycle
        emitted = 0
        for j, row in enumerate(rows):
            emitted += self._accept(slots[row], row, int(want[j]), int(start[j]),
                                    drafts[j], full[j])
        return emitted

    def _accept(self, slot: SpeculativeRow, row: int, m: int, start: int, drafts: torch.Tensor,
                full: torch.Tensor) -> int:
        """Keep the agreeing prefix plus the full model's token at the first mismatch, roll the
        cache back to them and charge the cycle; returns tokens emitted."""
        f = self.bb.flops
        wrong = torch.nonzero(drafts[:m] != full[:m]).reshape(-1)
        accepted = int(wrong[0]) if len(wrong) else m
        keep = min(accepted + 1, m)
        slot.generated += full[:keep].tolist()
        slot.last = int(full[keep - 1])
        self.cache.lengths[:, row] = start + keep
        slot.drafted += m
        slot.accepted += accepted
        keys = start + 1 + np.arange(m)  # keys visible to each drafted position
        slot.flops += float(m * (f.embeddings(1) + self.draft_head_flops)
                            + self.k * np.sum(f.layer(1, keys)))
        if self.verify_head:
            slot.flops += float((self.L - self.k) * f.layer(m, start + m) + f.head(m))
        slot.full_flops += float(np.sum(f.token(keys[:keep])))
        return keep


def speculative_rows(bb: Any, maps: Any, prompt_ids: list[list[int]], max_new_tokens: int,
                     batch_size: int, draft_layer: int, draft_tokens: int,
                     on_tokens: Callable[[int], Any] | None = None) -> list[SpeculativeRow]:
    """Generate ``max_new_tokens`` tokens from every prompt by self-speculation.

    Args:
        bb: the :class:`~exitgym.backbones.decoder.DecoderBackbone`.
        maps: distilled heads (``LayerMaps``) for the draft head, or None (the LM head).
        prompt_ids: token ids of each prompt.
        max_new_tokens: tokens per prompt.
        batch_size: rows run side by side (a finished row takes the next prompt at once).
        draft_layer: ``k``, 1-based.
        draft_tokens: ``n``, the longest draft.
        on_tokens: called with the number of tokens each cycle emitted (a progress bar).

    Returns:
        one :class:`SpeculativeRow` per prompt, in order.
    """
    check_draft(bb.num_layers, draft_layer, draft_tokens)
    num_rows = min(batch_size, len(prompt_ids))
    capacity = max(len(p) for p in prompt_ids) + max_new_tokens + draft_tokens
    spec = _Speculator(bb, maps, int(draft_layer), int(draft_tokens), num_rows, capacity)
    slots = {row: spec.begin(row, row, prompt_ids[row]) for row in range(num_rows)}
    order = iter(range(num_rows, len(prompt_ids)))
    done: dict[int, SpeculativeRow] = {}
    while slots:
        emitted = spec.cycle(slots, max_new_tokens)
        if on_tokens is not None:
            on_tokens(emitted)
        for row in [r for r, s in slots.items() if len(s.generated) >= max_new_tokens]:
            finished = slots.pop(row)
            done[finished.prompt] = finished
            nxt = next(order, None)
            if nxt is not None:
                slots[row] = spec.begin(row, nxt, prompt_ids[nxt])
    return [done[p] for p in range(len(prompt_ids))]
