"""Token-level early exit on a decoder LM for a batch of rows, each at its own token and layer.

The torch half of ``exitgym/TokenExit-v0`` and its native vector env (imported only in live mode
and when building the cached mode's tables). Every row generates one episode: token ``j`` enters
with input id ``x_j`` (the prompt's last token for ``j = 0``, then the previous token), climbs the
layers one :meth:`TokenRunner.advance` at a time, and leaves at :meth:`TokenRunner.exit`, where its
exit layer's head (final norm + LM head) picks the emitted token. Calls group the rows that sit at
the same layer into one batched layer call, so a vector env moves all its episodes per call.

Layers above an exit (``kv=``), each charged what it computes:

- ``copy``: the exit state is passed up and each skipped layer computes only its keys and values
  from it (CALM, ConsistentEE): ``(L − t)`` key/value projections;
- ``recompute``: skipped positions stay *pending* and are run through a layer, together with the
  next token that reaches it, in one chunk (EE-LLM, FREE): the chunk's whole layer cost;
- ``full``: every layer runs for the cache and only the output exits (CALM's oracle setting, which
  isolates decision quality). The reward charges the exit path (layers ``≤ t``: what a model with
  a free cache would pay); ``flops_computed`` also counts the layers run above the exit.

The reference is the full-depth model on the same prefix: in ``full`` mode the row's own layers;
otherwise a *shadow* cache fed the same tokens through every layer (evaluation only, never
charged). Agreement ``1[ŷ_t = y*]`` is CALM's consistency; the cross-entropy is ``−log p_t(y*)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from exitgym.backbones.decoder import DecoderBackbone
from exitgym.envs.observations import SoftmaxStats
from exitgym.envs.settings import KV_MODES


@dataclass(frozen=True)
class TokenOutcome:
    """What one token's exit produced (one per exiting row)."""

    emitted: int
    """The exit head's argmax: the token this policy generates."""
    reference: int
    """The full-depth model's token on the same prefix."""
    ce: float
    """``−log softmax(z_t)[reference]`` at the exit head (float64)."""
    flops: float
    """FLOPs charged for this token (see the module docstring)."""
    flops_computed: float
    """FLOPs that really ran for this token (``full``: every layer), shadow excluded."""
    full_flops: float
    """FLOPs of this token at full depth: the cost unit."""
    memorized: int
    """Smallest layer from which every full-depth head agrees with ``reference`` (1-based);
    ``L`` when not computed."""


def head_flops(backbone: Any, maps: Any, i: int) -> float:
    """FLOPs charged for one exit head at layer ``i`` (0-based): the final norm and LM head,
    plus the layer's distilled map when there are ``maps``."""
    return float(backbone.flops.head(1)) + (0.0 if maps is None else maps.flops(i))


def exit_head(backbone: Any, maps: Any, i: int, hidden: torch.Tensor) -> torch.Tensor:
    """Logits of the exit head at layer ``i`` (0-based) on ``hidden`` (``[..., H]`` ->
    ``[..., V]``): the layer's distilled map when there are ``maps``, then the final norm and the
    LM head (what :func:`head_flops` charges)."""
    return backbone.logits(hidden if maps is None else maps.apply(i, hidden))


def head_stats(logits: torch.Tensor) -> SoftmaxStats:
    """:func:`~exitgym.envs.observations.softmax_stats` of decoder logits ``[..., V]`` computed
    in torch (float64, a fused log-softmax) on the device, numpy arrays out. Why: on the host a
    49k-token vocabulary per row and layer cost a confidence rule's batched generation about a
    quarter of its wall time; the live env and the cached tables both use this one function, so
    their observations stay equal."""
    z = logits.double()
    prediction = z.argmax(dim=-1)
    logp = torch.log_softmax(z, dim=-1)  # fused: one pass for the max, the sum and the log
    entropy = -(logp.exp() * logp).sum(dim=-1) / float(np.log(z.shape[-1]))
    top2 = logp.topk(2, dim=-1).values.exp()
    host = [t.cpu().numpy() for t in (prediction, top2[..., 0], entropy,
                                     top2[..., 0] - top2[..., 1])]
    return SoftmaxStats(*host)


class TokenRunner:
    """``num_rows`` generation episodes stepped layer by layer (see the module docstring).

    Args:
        backbone: the decoder.
        num_rows: rows (episodes run side by side).
        capacity: longest prompt plus ``max_new_tokens`` (cache positions per row).
        kv: ``copy``, ``recompute`` or ``full``.
        teacher_forcing: feed the full-depth token instead of the emitted one.
        head_every_layer: the observation reads each layer's head (charged); else only the exit.
        policy_flops: charged per decision (every layer visited).
        memorized: compute each token's memorized layer (L extra heads, not charged).
        reference: run the full-depth reference (``copy`` / ``recompute``: a shadow cache);
            without it (deployment) ``reference`` and ``ce`` of an outcome are −1 and NaN.
        maps: distilled heads (:class:`~exitgym.backbones.decoder_heads.LayerMaps`) in front
            of the LM head, charged with it; None: the model's own head at every layer.
        stats: also compute each head's :func:`head_stats`, batched with the head
            (``stats[row][i]``), for the ``features`` view.
    """

    def __init__(self, backbone: DecoderBackbone, num_rows: int, capacity: int, kv: str,
                 teacher_forcing: bool, head_every_layer: bool, policy_flops: float = 0.0,
                 memorized: bool = False, reference: bool = True, maps: Any = None,
                 stats: bool = False) -> None:
        if kv not in KV_MODES:
            raise ValueError(f"unknown kv mode {kv!r}; allowed: {list(KV_MODES)}")
        self.bb, self.kv, self.teacher_forcing = backbone, kv, teacher_forcing
        self.head_every_layer, self.policy_flops = head_every_layer, float(policy_flops)
        self.need_memorized = memorized
        self.maps = maps
        self.L, self.H = backbone.num_layers, backbone.hidden_size
        self.cache = backbone.new_cache(num_rows, capacity)
        self.with_reference = reference
        self.shadow = (backbone.new_cache(num_rows, capacity)
                       if kv != "full" and reference else None)
        # Where and in which dtype the decoder runs: the states live there too.
        self._like = {"device": backbone.device, "dtype": next(backbone.model.parameters()).dtype}
        self.states = (torch.zeros(num_rows, capacity, self.H, **self._like)
                       if kv == "recompute" else None)
        self.hidden = torch.zeros(num_rows, self.L, self.H, **self._like)  # after each layer
        self.layer = np.full(num_rows, -1, dtype=np.int64)  # 0-based layer of the current token
        self.input_id = np.zeros(num_rows, dtype=np.int64)
        self.flops = np.zeros(num_rows)  # charged so far for the current token
        self.extra = np.zeros(num_rows)  # computed beyond the charge (full mode's upper layers)
        self.logits: list[dict[int, torch.Tensor]] = [{} for _ in range(num_rows)]
        self.want_stats = stats
        self.stats: list[dict[int, SoftmaxStats]] = [{} for _ in range(num_rows)]
        self._unfilled: dict[int, int] = {}  # row -> exit layer, KV above it not yet written

    # ---- episode and token starts -------------------------------------------------------------
    @torch.no_grad()
    def begin(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> None:
        """Start episodes: clear the rows, prefill ``prompt[:-1]`` at full depth (not charged),
        and start token 0 from the prompt's last token."""
        for row, prompt in zip(rows, prompts, strict=True):
            if len(prompt) == 0:
                raise ValueError("every prompt needs at least one token")
            self._unfilled.pop(int(row), None)  # a finished episode's fill is moot
            for cache in (self.cache, self.shadow):
                if cache is not None:
                    cache.lengths[:, row] = 0
                    if len(prompt) > 1:
                        self._prefill(cache, row, list(prompt[:-1]))
        self.start([int(r) for r in rows], [int(p[-1]) for p in prompts])

    def _prefill(self, cache, row: int, ids: list[int]) -> None:  # noqa: ANN001
        hidden = self.bb.fill_row(ids, cache, row)
        if self.states is not None:  # prompt positions are never pending, but keep them exact
            self.states[row, : len(ids)] = hidden

    @torch.no_grad()
    def start(self, rows: Sequence[int], input_ids: Sequence[int]) -> None:
        """Token start: embed each row's input token and run layer 1 (it always runs)."""
        idx = torch.tensor(list(rows), dtype=torch.long)
        self.input_id[list(rows)] = list(input_ids)
        self.flops[list(rows)] = self.bb.flops.embeddings(1)
        self.extra[list(rows)] = 0.0
        for row in rows:
            self.logits[row], self.stats[row] = {}, {}
        embedded = self.bb.embed(torch.tensor(list(input_ids))[:, None], self.cache, idx)
        self._run(0, idx, embedded[:, 0])

    # ---- stepping -------------------------------------------------------------------------
    @torch.no_grad()
    def advance(self, rows: Sequence[int]) -> None:
        """Each row's current token climbs one layer (rows at the same layer run together)."""
        targets = self.layer[list(rows)] + 1
        if (targets >= self.L).any():
            raise ValueError("advance() past the last layer; the last layer always exits")
        for target in np.unique(targets):
            group = torch.tensor([r for r, t in zip(rows, targets, strict=True) if t == target])
            self._run(int(target), group, self.hidden[group, target - 1])

    def _run(self, i: int, rows: torch.Tensor, inputs: torch.Tensor) -> None:
        """Layer ``i`` for the current tokens of ``rows`` (with pending positions in recompute)."""
        bb, lengths = self.bb, self.cache.lengths
        pos = lengths[0, rows] - (1 if i > 0 else 0)  # the current token's position
        if self.states is None:  # one position per row: no chunk to assemble
            out = bb.layer(i, inputs[:, None], self.cache, rows)
            self.hidden[rows, i] = out[:, 0]
            idx = rows.numpy()
            self.flops[idx] += bb.flops.layer(1, pos.numpy() + 1) + self.policy_flops
            self.layer[idx] = i
            if self.head_every_layer:
                self._heads(rows, i)
            return
        pending = pos - lengths[i, rows]
        width = int(pending.max()) + 1
        chunk = torch.zeros(len(rows), width, self.H, **self._like)
        valid = torch.arange(width)[None, :] <= pending[:, None]
        for k, row in enumerate(rows.tolist()):
            p = int(pending[k])
            if p:
                chunk[k, :p] = self.states[row, int(lengths[i, row]): int(pos[k])]
            chunk[k, p] = inputs[k]
        out = bb.layer(i, chunk, self.cache, rows, valid)
        for k, row in enumerate(rows.tolist()):
            p = int(pending[k])
            self.states[row, int(pos[k]) - p: int(pos[k]) + 1] = out[k, : p + 1]
            self.hidden[row, i] = out[k, p]
            self.flops[row] += bb.flops.layer(p + 1, int(pos[k]) + 1) + self.policy_flops
        self.layer[rows.numpy()] = i
        if self.head_every_layer:
            self._heads(rows, i)

    def head(self, i: int, hidden: torch.Tensor) -> torch.Tensor:
        """Layer ``i``'s exit head on ``hidden`` (``[..., H]`` -> ``[..., V]``)."""
        return exit_head(self.bb, self.maps, i, hidden)

    def head_flops(self, i: int) -> float:
        """What one exit head at layer ``i`` is charged."""
        return head_flops(self.bb, self.maps, i)

    def _heads(self, rows: torch.Tensor, i: int) -> None:
        logits = self.head(i, self.hidden[rows, i])
        stats = head_stats(logits) if self.want_stats else None
        for k, row in enumerate(rows.tolist()):
            self.logits[row][i] = logits[k]
            self.flops[row] += self.head_flops(i)
            if stats is not None:
                self.stats[row][i] = SoftmaxStats(*(getattr(stats, f.name)[k]
                                                    for f in fields(SoftmaxStats)))

    def current_logits(self, row: int) -> torch.Tensor:
        """The exit head at the row's current layer (computed, and charged, on first use)."""
        i = int(self.layer[row])
        if i not in self.logits[row]:
            self._heads(torch.tensor([row]), i)
        return self.logits[row][i]

    # ---- exits ----------------------------------------------------------------------------
    @torch.no_grad()
    def exit(self, rows: Sequence[int], fill: bool = True) -> list[TokenOutcome]:
        """Exit the current tokens of ``rows`` and fill the layers above them.

        Returns one :class:`TokenOutcome` per row (every FLOP of the fill charged).
        ``fill=False`` (``copy`` and ``recompute``) leaves the keys and values of the layers
        above for :meth:`fill_pending`, which writes those of every row exited since in one call
        per layer index: a synchronous batch (``exitgym.generate``) fills once per token step
        instead of once per exit layer. The next token must not start before it.
        """
        rows = [int(r) for r in rows]
        exit_layers = self.layer[rows].copy()
        logits = torch.stack([self.current_logits(r) for r in rows])
        emitted = logits.argmax(dim=-1).tolist()  # one host read for every row
        self._charge_above(rows, exit_layers)
        if fill or self.kv == "full":  # full: the reference reads the row's upper layers
            self._fill_above(rows, exit_layers)
        else:
            self._unfilled.update(zip(rows, exit_layers.tolist(), strict=True))
        if self.with_reference:
            ref_logits, ref_hidden = self._reference(rows)
            reference = ref_logits.argmax(dim=-1)
            logp = torch.log_softmax(logits.double(), dim=-1)
            ce = (-logp[torch.arange(len(rows)), reference]).tolist()
        else:
            reference = torch.full((len(rows),), -1)
            ce = [float("nan")] * len(rows)
        outcomes, references = [], reference.tolist()
        for k, row in enumerate(rows):
            pos = int(self.cache.lengths[0, row]) - 1
            memorized = self.L
            if self.need_memorized and self.with_reference:
                heads = (self.bb.logits(ref_hidden[k]) if self.maps is None else torch.stack(
                    [self.head(i, ref_hidden[k, i]) for i in range(self.L)])).argmax(dim=-1)
                wrong = np.flatnonzero((heads != reference[k]).cpu().numpy())
                memorized = int(wrong[-1]) + 2 if wrong.size else 1
            outcomes.append(TokenOutcome(
                emitted=int(emitted[k]), reference=int(references[k]), ce=float(ce[k]),
                flops=float(self.flops[row]),
                flops_computed=float(self.flops[row] + self.extra[row]),
                full_flops=float(self.bb.flops.token(pos + 1)), memorized=memorized))
        return outcomes

    @torch.no_grad()
    def next_token(self, rows: Sequence[int], outcomes: Sequence[TokenOutcome]) -> None:
        """Start each row's next token (the reference under teacher forcing)."""
        ids = [o.reference if self.teacher_forcing else o.emitted for o in outcomes]
        self.start(list(rows), ids)

    def fill_pending(self) -> None:
        """Fill the layers above every exit made with ``fill=False`` since the last call."""
        if self._unfilled:
            rows = list(self._unfilled)
            self._fill_above(rows, np.array([self._unfilled[r] for r in rows]))
            self._unfilled = {}

    def _charge_above(self, rows: list[int], exit_layers: np.ndarray) -> None:
        """``copy``: charge the ``L − 1 − t`` key/value projections above each exit."""
        if self.kv == "copy":
            self.flops[rows] += (self.L - 1 - exit_layers) * self.bb.flops.kv_only(1)

    def _fill_above(self, rows: list[int], exit_layers: np.ndarray) -> None:
        """Keys and values of the layers above each exit (``copy``, ``full``; none in recompute),
        one call per layer index over every row exited below it."""
        if self.kv == "recompute":
            return
        for i in range(int(exit_layers.min()) + 1, self.L):
            group = [r for r, t in zip(rows, exit_layers, strict=True) if t < i]
            idx = torch.tensor(group)
            if self.kv == "copy":
                exit_state = self.hidden[idx, exit_layers[np.isin(rows, group)]]
                self.bb.write_kv(i, exit_state[:, None], self.cache, idx)
            else:
                pos = self.cache.lengths[0, idx] - 1
                out = self.bb.layer(i, self.hidden[idx, i - 1][:, None], self.cache, idx)
                self.hidden[idx, i] = out[:, 0]
                self.extra[group] += self.bb.flops.layer(1, pos.numpy() + 1)

    def _reference(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-depth last-layer logits ``[b, V]`` and every layer's state ``[b, L, H]``."""
        idx = torch.tensor(rows)
        if self.shadow is None:  # full mode: the row's own layers are the full-depth model
            states = self.hidden[idx]
        else:
            hidden = self.bb.embed(torch.tensor(self.input_id[rows])[:, None], self.shadow, idx)
            layers = []
            for i in range(self.L):
                hidden = self.bb.layer(i, hidden, self.shadow, idx)
                layers.append(hidden[:, 0])
            states = torch.stack(layers, dim=1)
        return self.bb.logits(states[:, -1]), states
