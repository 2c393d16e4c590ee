"""The torch half of the skip environments on a decoder LM: per-layer skips held for a whole
greedy continuation, counting the FLOPs that really run.

:class:`DecoderSkipExecutor` has the interface of :class:`~exitgym.envs.skip_live.SkipExecutor`
that the skip families step (``start``, ``run_layer``, ``pooled``, ``cost``, ``denominator``), so
``SkipBlock-v0`` and ``SwitchableDecision-v0`` and their vector envs run a decoder with their own
step code. An episode is one prompt:

- ``start`` embeds the prompt and runs layer 1 on all its positions (the prefill's first layer);
- ``run_layer`` runs the next layer of the prompt with each row's decision and *records* it: the
  decision holds for every later position, the generated tokens included;
- :meth:`DecoderSkipExecutor.continue_rows` (at the exit or after the last layer) emits the first
  token from the answering layer's state and generates the rest greedily, one token at a time
  through the same skips; layers above an exit are skipped entirely.

A skipped attention sub-block writes no keys or values; because the skip holds for every
position, that layer's cache stays empty for the episode and no later token needs what it would
have written (exitgym's cache addresses keys by fill count, so a layer with holes would shift
positions). FLOPs (:class:`~exitgym.backbones.decoder_flops.DecoderFlops`): the prompt's chunk
(``k = n`` queries over ``n`` keys) and each generated token (one query over the keys so far) pay
the sub-blocks they ran, the embeddings and one LM head per emitted token.

The reference is the full-depth greedy continuation of the prompt (computed once per prompt,
never charged), and the cross-entropy is the skipped model's on that continuation, teacher-forced
in one batched pass with the same skips (evaluation only, never charged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from exitgym.backbones.decoder import DecoderBackbone, KVCache
from exitgym.envs.skip_live import Cohort

__all__ = ["DecoderOutcome", "DecoderSkipExecutor", "DecoderState"]


@dataclass(eq=False)
class DecoderState:
    """The prompts of ``B`` episodes after their last layer run, and the decisions so far."""

    cache: KVCache
    """Keys and values of the layers whose attention ran (a skipped layer's stays empty)."""
    hidden: torch.Tensor
    """``[B, W, H]`` prompt states after the last layer run (right-padded)."""
    valid: torch.Tensor
    """bool ``[B, W]``: real prompt positions."""
    skip_attention: torch.Tensor
    """bool ``[B, L]``: attention skipped at each layer (False where not decided yet)."""
    skip_ffn: torch.Tensor
    """bool ``[B, L]``: feed-forward block skipped at each layer."""

    def select(self, rows: torch.Tensor) -> DecoderState:
        """The state of some rows (copies), what :meth:`Cohort.select` compacts."""
        return DecoderState(self.cache.select(rows), self.hidden[rows], self.valid[rows],
                            self.skip_attention[rows], self.skip_ffn[rows])


@dataclass(frozen=True, eq=False)
class DecoderOutcome:
    """What :meth:`DecoderSkipExecutor.continue_rows` produced for ``b`` rows."""

    generated: np.ndarray
    """int64 ``[b, T]``: the greedy continuation under the held skips."""
    flops: np.ndarray
    """float64 ``[b]``: FLOPs of the continuation (every LM head, tokens 2..T through the
    layers run)."""
    ce: np.ndarray
    """float64 ``[b]``: mean ``−log p(y*_j)`` of the reference continuation, teacher-forced."""
    skip_attention: np.ndarray
    """bool ``[b, L]``: the skips held (layers above an exit count as skipped)."""
    skip_ffn: np.ndarray
    """bool ``[b, L]``."""


def _pad(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids ``[B, W]`` and the bool mask of real positions."""
    lengths = torch.tensor([len(s) for s in sequences])
    ids = torch.zeros(len(sequences), int(lengths.max()), dtype=torch.long)
    for b, seq in enumerate(sequences):
        ids[b, : len(seq)] = torch.as_tensor(list(seq))
    return ids, torch.arange(ids.shape[1])[None, :] < lengths[:, None]


class DecoderSkipExecutor:
    """Runs cohorts of prompt episodes through a decoder with per-row held skips.

    Args:
        backbone: the decoder (at least 2 layers: layer 1 always runs).
        prompts: token ids of every prompt.
        max_new_tokens: ``T``, tokens generated per episode.
    """

    def __init__(self, backbone: DecoderBackbone, prompts: Sequence[Sequence[int]],
                 max_new_tokens: int) -> None:
        if backbone.num_layers < 2:
            raise ValueError("skip environments need a backbone with at least 2 layers (layer 1 "
                             "always runs; decisions start at layer 2)")
        self.backbone = backbone
        self.prompts = [list(p) for p in prompts]
        self.max_new_tokens = int(max_new_tokens)
        self.num_layers = int(backbone.num_layers)
        self.flops_model = backbone.flops
        self.denominator = self.full_flops(np.array([len(p) for p in self.prompts], np.float64))
        """float64 ``[N]``: FLOPs of the episode at full depth (prefill and ``T`` tokens)."""
        self._references: dict[int, list[int]] = {}

    def full_flops(self, n: np.ndarray) -> np.ndarray:
        """Full-depth FLOPs of an episode on ``n``-token prompts: the prefill (with the LM head
        on its last position, which emits token 1) and tokens 2..T, token ``j`` fed at position
        ``n + j − 2`` (``DecoderFlops.token(n + j − 1)``)."""
        f = self.flops_model
        total = np.asarray(f.prompt(n), dtype=np.float64)
        for j in range(1, self.max_new_tokens):
            total = total + f.token(n + j)
        return total

    def reference(self, sample_id: int) -> list[int]:
        """The full-depth greedy continuation of a prompt (computed once; never charged)."""
        sid = int(sample_id)
        if sid not in self._references:
            with torch.inference_mode():
                out = self.backbone.greedy([self.prompts[sid]], self.max_new_tokens)
            self._references[sid] = out[0].tolist()
        return self._references[sid]

    # ---- the prefill, one decided layer at a time -------------------------------------------
    @torch.inference_mode()
    def start(self, sample_ids: np.ndarray, env_ids: np.ndarray) -> Cohort:
        """Embed the prompts and run layer 1 on them in full (one batched call)."""
        sample_ids = np.asarray(sample_ids, dtype=np.int64)
        ids, valid = _pad([self.prompts[s] for s in sample_ids])
        bb, f, size = self.backbone, self.flops_model, len(sample_ids)
        cache = bb.new_cache(size, ids.shape[1] + self.max_new_tokens)
        hidden = bb.layer(0, bb.embed(ids, cache), cache, valid=valid)
        n = valid.sum(dim=1).numpy().astype(np.int64)
        nf = n.astype(np.float64)
        flops = np.asarray(f.embeddings(nf) + f.attention(nf, nf) + f.ffn(nf), dtype=np.float64)
        skips = torch.zeros(size, self.num_layers, dtype=torch.bool)
        zeros = np.zeros(size, dtype=np.int64)
        return Cohort(DecoderState(cache, hidden, valid, skips, skips.clone()), 0,
                      np.asarray(env_ids, dtype=np.int64).copy(), sample_ids.copy(), n, n.copy(),
                      flops, zeros, zeros.copy(), zeros.copy(), np.zeros(size, dtype=np.float64))

    def _run(self, i: int, hidden: torch.Tensor, cache: KVCache, valid: torch.Tensor | None,
             skip_attention: torch.Tensor, skip_ffn: torch.Tensor) -> torch.Tensor:
        """Layer ``i`` of every row with its own skips: one call per distinct choice."""
        pattern = skip_attention.long() * 2 + skip_ffn.long()  # 3 = the whole layer skipped
        out = hidden
        for p in pattern.unique().tolist():
            if p == 3:
                continue
            att, ffn = not p & 2, not p & 1
            chosen = pattern == p
            if bool(chosen.all()):
                return self.backbone.layer(i, hidden, cache, valid=valid, attention=att, ffn=ffn)
            rows = chosen.nonzero().flatten()
            if out is hidden:
                out = hidden.clone()
            out[rows] = self.backbone.layer(i, hidden[rows], cache, rows,
                                            None if valid is None else valid[rows],
                                            attention=att, ffn=ffn)
        return out

    @torch.inference_mode()
    def run_layer(self, cohort: Cohort, skip_attention: np.ndarray, skip_ffn: np.ndarray) -> None:
        """Run the prompts' next layer with per-row skips, record them, add the FLOPs run."""
        i, skip_att, skip_f = cohort.next_layer(self.num_layers, skip_attention, skip_ffn)
        state = cohort.state
        state.skip_attention[:, i] = torch.from_numpy(skip_att)
        state.skip_ffn[:, i] = torch.from_numpy(skip_f)
        state.hidden = self._run(i, state.hidden, state.cache, state.valid,
                                 state.skip_attention[:, i], state.skip_ffn[:, i])
        n = cohort.lengths.astype(np.float64)
        cohort.book_layer(skip_att, skip_f, self.flops_model.attention(n, n),
                          self.flops_model.ffn(n))

    @torch.inference_mode()
    def pooled(self, cohort: Cohort) -> np.ndarray:
        """float32 ``[B, H]``: the final norm of each prompt's last state (what the LM head
        reads; it predicts the first generated token)."""
        last = torch.from_numpy(cohort.lengths - 1)
        hidden = cohort.state.hidden[torch.arange(cohort.size), last]
        return self.backbone.final_norm(hidden).float().cpu().numpy().astype(np.float32,
                                                                            copy=False)

    def cost(self, cohort: Cohort) -> np.ndarray:
        """float64 ``[B]`` cost fraction spent so far (FLOPs / the full-depth episode)."""
        return cohort.flops / self.denominator[cohort.sample_ids]

    # ---- the continuation ---------------------------------------------------------------------
    @torch.inference_mode()
    def continue_rows(self, cohort: Cohort) -> DecoderOutcome:
        """Generate every row's continuation with its skips held (layers above the cohort's
        current layer skipped: the exit), and score the reference under the same skips.

        Writes the generated tokens' keys and values into the cohort's cache (call it once, at
        the end of the episode).
        """
        bb, f, T, L = self.backbone, self.flops_model, self.max_new_tokens, self.num_layers
        state, size = cohort.state, cohort.size
        skip_att, skip_f = state.skip_attention.clone(), state.skip_ffn.clone()
        skip_att[:, cohort.layer + 1:] = True
        skip_f[:, cohort.layer + 1:] = True
        n = cohort.lengths
        last = state.hidden[torch.arange(size), torch.from_numpy(n - 1)]
        token = bb.logits(last).argmax(dim=-1)
        out = [token]
        att_on = (~skip_att).numpy()
        ffn_runs = (~skip_f).numpy().sum(axis=1)
        flops = np.full(size, float(f.head(1)))
        for j in range(1, T):
            hidden = bb.embed(token[:, None], state.cache)
            for i in range(L):
                hidden = self._run(i, hidden, state.cache, None, skip_att[:, i], skip_f[:, i])
            token = bb.logits(hidden[:, 0]).argmax(dim=-1)
            out.append(token)
            visible = (n + j).astype(np.float64)
            flops = flops + f.embeddings(1) + f.head(1) + ffn_runs * f.ffn(1) + \
                att_on.sum(axis=1) * f.attention(1, visible)
        generated = torch.stack(out, dim=1).cpu().numpy().astype(np.int64)
        ce = self._teacher_forced_ce(cohort.sample_ids, skip_att, skip_f)
        return DecoderOutcome(generated, flops, ce, skip_att.numpy(), skip_f.numpy())

    def _teacher_forced_ce(self, sample_ids: np.ndarray, skip_att: torch.Tensor,
                           skip_f: torch.Tensor) -> np.ndarray:
        """Mean cross-entropy of each reference continuation under the skips (one pass)."""
        bb, T = self.backbone, self.max_new_tokens
        refs = [self.reference(s) for s in sample_ids]
        ids, valid = _pad([self.prompts[s] + r[:-1] for s, r in zip(sample_ids, refs,
                                                                        strict=True)])
        cache = bb.new_cache(len(refs), ids.shape[1])
        hidden = bb.embed(ids, cache)
        for i in range(self.num_layers):
            hidden = self._run(i, hidden, cache, valid, skip_att[:, i], skip_f[:, i])
        ce = np.empty(len(refs), dtype=np.float64)
        for b, (sid, ref) in enumerate(zip(sample_ids, refs, strict=True)):
            start = len(self.prompts[sid]) - 1
            logp = torch.log_softmax(bb.logits(hidden[b, start:start + T]).double(), dim=-1)
            ce[b] = float(-logp[torch.arange(T), torch.tensor(ref)].mean())
        return ce

    def decode(self, ids: Sequence[int]) -> Any:
        """The text of token ids (None without a tokenizer)."""
        tok = self.backbone.tokenizer
        return None if tok is None else tok.decode(list(ids))
