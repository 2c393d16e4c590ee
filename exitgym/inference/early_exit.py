"""Early-exit deployment: the live backbone run layer by layer until a learned policy exits.

This is what a user ships after training: texts in, predictions out, and the work saved is real
time saved because later layers are really not run. After every layer the exit head answers, the
policy sees the same observation it was trained on (computed by the env's own observation views,
:mod:`exitgym.envs.observations`, over the layers run so far, with the same cost fractions), and
the rows that exit leave the batch (:meth:`State.select
<exitgym.backbones.base.State.select>`), so later layers run on fewer rows and shorter padding.

Two modes, one code path: ``batch_size=1`` (each text alone, stop at its exit) and
``batch_size>1`` with compaction (texts sorted by length, exited rows removed after each layer).
Both give the decisions of the cached environment on the same texts (tested).

:func:`exitgym.inference.infer` dispatches a run of this environment here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exitgym.backbones.base import check_texts
from exitgym.envs.observations import CombinedView, ViewInputs, make_observation
from exitgym.utils.devices import resolve_device

__all__ = ["ExitInference", "InferenceResult", "check_batch_size"]

EXIT = 1
"""The exit action of the early-exit environments (0 continues)."""


class AnswerStats:
    """What every deployment result derives from its arrays (``predictions``, ``label_names``,
    ``cost``, ``flops``, ``full_flops``, ``seconds``): the exit and the skip engines' alike."""

    predictions: np.ndarray
    label_names: tuple[str, ...]
    cost: np.ndarray
    flops: np.ndarray
    full_flops: np.ndarray
    seconds: float

    @property
    def labels(self) -> list[str]:
        """Predicted label names (ids as strings when the heads carry no names)."""
        names = self.label_names
        return [names[p] if names else str(int(p)) for p in self.predictions]

    @property
    def mean_cost(self) -> float:
        """Mean FLOPs fraction over texts (docs/design.md metrics)."""
        return float(self.cost.mean())

    @property
    def flops_speedup(self) -> float:
        """Total full-model FLOPs / total FLOPs spent: the speed-up wall-clock time can reach."""
        return float(self.full_flops.sum() / self.flops.sum())

    @property
    def texts_per_second(self) -> float:
        return float(len(self.predictions) / self.seconds) if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class InferenceResult(AnswerStats):
    """Per-text outcome of one inference call, in the order the texts were given."""

    predictions: np.ndarray
    """int64 ``[N]`` predicted label ids (the exit head's argmax at the exit layer)."""
    exit_layers: np.ndarray
    """int64 ``[N]`` 1-based layer each text exited at (``L`` = ran the whole model)."""
    cost: np.ndarray
    """float64 ``[N]`` cost fraction ``c_t`` (FLOPs spent / FLOPs of the full model + head)."""
    flops: np.ndarray
    """float64 ``[N]`` absolute FLOPs spent (embeddings, layers, heads, policy)."""
    full_flops: np.ndarray
    """float64 ``[N]`` FLOPs of the full model with its final head on the same text."""
    lengths: np.ndarray
    """int64 ``[N]`` real token counts (what FLOPs are counted on)."""
    num_layers: int
    """``L``, the backbone's depth."""
    seconds: float
    """Wall-clock seconds of the call (tokenization, layers, heads and policy)."""
    label_names: tuple[str, ...] = ()
    """Label vocabulary of the heads (empty when the heads carry none)."""
    operating_point: dict[str, Any] = field(default_factory=dict)
    """The reading deployed (``budget=`` / ``tau=``; empty: greedy), as chosen on validation."""
    observations: np.ndarray | None = field(default=None, repr=False)
    """float32 ``[N, L, d]`` observations the policy saw (only with ``record=True``; rows after
    a text's exit are zero)."""


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return int(batch_size)


class ExitInference:
    """A backbone, its exit heads and an exit policy, ready to answer texts (load once, call often).

    Args:
        policy: Any :class:`~exitgym.agents.base.Policy` (``act(obs [B, d], infos) -> [B]``, 1 =
            exit) trained on the early-exit env; stateful rules are reset per batch.
        backbone: The :class:`~exitgym.backbones.base.Backbone` the heads were trained on; it needs
            a tokenizer.
        heads: The :class:`~exitgym.backbones.heads.ExitHeads` (one per layer).
        observation: View spec the policy reads; default the policy's ``required_observation``.
        policy_flops: FLOPs charged per policy evaluation, exactly as the training env charged
            them (``policy_flops=`` of ``gym.make``); they enter the ``cost`` feature.
        max_length: Tokenizer truncation; use the cache's (128 by default) so tokens match.
        device: Where backbone and heads run (:func:`~exitgym.utils.devices.resolve_device`);
            None: where the backbone already is.
    """

    def __init__(
        self,
        policy: Any,
        backbone: Any,
        heads: Any,
        *,
        observation: str | None = None,
        policy_flops: float = 0.0,
        max_length: int = 128,
        device: str | None = None,
    ) -> None:
        if not callable(getattr(policy, "act", None)):
            raise TypeError(f"policy must have act(obs, infos) (the Policy protocol), got "
                            f"{type(policy).__name__}")
        for name, obj in (("backbone", backbone), ("heads", heads)):
            if not hasattr(obj, "num_layers"):
                raise TypeError(f"{name} must be a loaded model object, got {type(obj).__name__}")
        if getattr(backbone, "tokenizer", None) is None:
            raise ValueError(f"backbone {backbone.name!r} has no tokenizer; inference needs one")
        if heads.num_layers != backbone.num_layers:
            raise ValueError(f"heads have {heads.num_layers} layers but the backbone has "
                             f"{backbone.num_layers}")
        policy_flops = float(policy_flops)
        if not np.isfinite(policy_flops) or policy_flops < 0:
            raise ValueError(f"policy_flops must be a finite number >= 0, got {policy_flops!r}")
        spec = observation or getattr(policy, "required_observation", None) or "features"
        self.view: CombinedView = make_observation(spec)
        self.policy, self.backbone, self.heads = policy, backbone, heads
        self.policy_flops = policy_flops
        self.max_length = int(max_length)
        self.num_layers = int(backbone.num_layers)
        self.num_labels = int(heads.config.num_labels)
        self.obs_dim = self.view.dim(backbone.hidden_size, self.num_labels)
        want = getattr(getattr(policy, "config", None), "obs_dim", None)
        if want is not None and int(want) != self.obs_dim:
            raise ValueError(f"policy expects observations of size {want} but {spec!r} has "
                             f"{self.obs_dim} entries for this backbone and heads")
        self.head_flops = float(heads.flops(backbone.flops))
        self._needs_pooled = any(p.name in ("hidden", "prev") for p in self.view.parts)
        if device is not None:
            backbone.model.to(resolve_device(device))
        self.device = backbone.device
        backbone.model.eval()
        heads.eval().to(self.device)

    # ---- FLOPs (the cache's formulas, docs/design.md) --------------------------------------
    def flops_table(self, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(spent [N, L], full [N])``: FLOPs spent when exiting after each layer, and the
        full model with its final head, computed exactly as :class:`LayerCache` does."""
        n = np.asarray(lengths, dtype=np.float64)
        model = self.backbone.flops
        embed = np.asarray(model.embeddings(n), dtype=np.float64) * np.ones_like(n)
        per_layer = np.repeat(np.asarray(model.layer(n), dtype=np.float64)[:, None],
                              self.num_layers, axis=1)
        steps = np.arange(1, self.num_layers + 1)[None, :]
        cum = embed[:, None] + np.cumsum(per_layer, axis=1) + self.head_flops * steps
        full = embed + per_layer.sum(axis=1) + self.head_flops
        return cum + self.policy_flops * steps, full

    # ---- the deployment loop ------------------------------------------------------------------
    def __call__(
        self,
        texts: Sequence[str],
        *,
        text_pairs: Sequence[str] | None = None,
        batch_size: int = 1,
        record: bool = False,
    ) -> InferenceResult:
        """Answer ``texts`` with early exit; ``batch_size > 1`` batches with compaction."""
        texts = check_texts(texts)
        batch_size = check_batch_size(batch_size)
        start = time.perf_counter()
        encoded, lengths, order = self._encode(texts, text_pairs)
        n, num_layers = len(texts), self.num_layers
        spent, full = self.flops_table(lengths)
        cost_table = spent / full[:, None]
        exit_layer = np.zeros(n, dtype=np.int64)
        prediction = np.zeros(n, dtype=np.int64)
        observed = np.zeros((n, num_layers, self.obs_dim), dtype=np.float32) if record else None
        with torch.inference_mode():
            for lo in range(0, n, batch_size):
                idx = order[lo:lo + batch_size]
                self._run_batch(encoded, idx, cost_table, exit_layer, prediction, observed)
        rows = np.arange(n)
        return InferenceResult(
            predictions=prediction, exit_layers=exit_layer,
            cost=cost_table[rows, exit_layer - 1], flops=spent[rows, exit_layer - 1],
            full_flops=full, lengths=lengths, num_layers=num_layers,
            seconds=time.perf_counter() - start,
            label_names=tuple(self.heads.config.label_names), observations=observed,
        )

    def _encode(
        self, texts: list[str], text_pairs: Sequence[str] | None
    ) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]:
        """Tokenize once; lengths and the longest-first order batches are cut from."""
        pairs = None if text_pairs is None else check_texts(text_pairs, "text_pairs")
        encoded = self.backbone.tokenize(texts, pairs, max_length=self.max_length)
        lengths = encoded["attention_mask"].sum(dim=1).numpy().astype(np.int64)
        order = np.argsort(-lengths, kind="stable")
        return encoded, lengths, order

    def _run_batch(
        self,
        encoded: dict[str, torch.Tensor],
        idx: np.ndarray,
        cost_table: np.ndarray,
        exit_layer: np.ndarray,
        prediction: np.ndarray,
        observed: np.ndarray | None,
    ) -> None:
        """One batch: step layers, ask the policy, drop exited rows, until every row exited."""
        bb, heads, view, num_layers = self.backbone, self.heads, self.view, self.num_layers
        size = len(idx)
        index = torch.from_numpy(idx)
        lengths = encoded["attention_mask"][index].sum(dim=1).numpy()  # host copy: no syncs
        state = bb.embed({k: v[index, :int(lengths.max())] for k, v in encoded.items()})
        logits_buf = np.zeros((size, num_layers, self.num_labels), dtype=np.float32)
        pooled_buf = (np.zeros((size, num_layers, bb.hidden_size), dtype=np.float32)
                      if self._needs_pooled else np.zeros((size, num_layers, 0), dtype=np.float32))
        costs = cost_table[idx]
        obs_buf = np.zeros((size, self.obs_dim), dtype=np.float32)
        self.policy.reset(size)
        alive = np.arange(size)  # batch positions still running, aligned with state's rows
        rows: np.ndarray | slice = slice(None)  # ``alive`` as a cheap slice until a row exits
        for i in range(num_layers):
            state = bb.layer(i, state)
            pooled = bb.pool(state)
            # One device-to-host copy per layer (logits, and pooled states when the view reads
            # them); the decisions are host-side and compaction indexes on the device.
            logits = heads.head(i, pooled).float()
            read = (torch.cat([logits, pooled.float()], dim=1) if self._needs_pooled
                    else logits).cpu().numpy()
            logits_buf[rows, i] = read[:, :self.num_labels]
            if self._needs_pooled:
                pooled_buf[rows, i] = read[:, self.num_labels:]
            last = i == num_layers - 1
            if not last or observed is not None:  # the last layer needs no decision
                inputs = ViewInputs(pooled=pooled_buf[rows, :i + 1],
                                    logits=logits_buf[rows, :i + 1], cost=costs[rows, :i + 1],
                                    num_layers=num_layers)
                obs_buf[rows] = view.compute(inputs)[:, -1]
            if observed is not None:
                observed[idx[alive], i] = obs_buf[alive]
            if last:
                leaving = np.ones(len(alive), dtype=bool)
            else:
                # The policy sees every slot (exited ones hold their last observation and are
                # ignored), so stateful rules keep one slot per text as in the vector env.
                actions = np.asarray(self.policy.act(obs_buf, {}, deterministic=True))
                leaving = actions.reshape(size, -1)[rows, 0] == EXIT
            if leaving.any():
                gone = alive[leaving]
                exit_layer[idx[gone]] = i + 1
                prediction[idx[gone]] = logits_buf[gone, i].argmax(axis=-1)
                if leaving.all():
                    return
                keep = np.flatnonzero(~leaving)
                alive = rows = alive[keep]
                state = state.select(torch.from_numpy(keep).to(self.device),
                                     width=int(lengths[alive].max()))

    def full_depth(
        self,
        texts: Sequence[str],
        *,
        text_pairs: Sequence[str] | None = None,
        batch_size: int = 1,
    ) -> InferenceResult:
        """The baseline a user would otherwise deploy: the model's plain forward + last head.

        Same tokenization and batching (longest first) as :meth:`__call__`, so the wall-clock
        ratio of the two measures what early exit saves.
        """
        texts = check_texts(texts)
        batch_size = check_batch_size(batch_size)
        start = time.perf_counter()
        encoded, lengths, order = self._encode(texts, text_pairs)
        n, last = len(texts), self.num_layers - 1
        prediction = np.zeros(n, dtype=np.int64)
        bb = self.backbone
        with torch.inference_mode():
            for lo in range(0, n, batch_size):
                idx = order[lo:lo + batch_size]
                index = torch.from_numpy(idx)
                width = int(encoded["attention_mask"][index].sum(dim=1).max())
                pooled = bb.plain_pooled({k: v[index, :width] for k, v in encoded.items()})
                prediction[idx] = self.heads.head(last, pooled).argmax(dim=-1).cpu().numpy()
        _, full = self.flops_table(lengths)  # embeddings + L layers + the final head
        return InferenceResult(
            predictions=prediction, exit_layers=np.full(n, self.num_layers, dtype=np.int64),
            cost=np.ones(n), flops=full.copy(), full_flops=full, lengths=lengths,
            num_layers=self.num_layers, seconds=time.perf_counter() - start,
            label_names=tuple(self.heads.config.label_names),
        )

    # ---- construction from a trained run ------------------------------------------------------
    @classmethod
    def from_run(
        cls, run_dir: str | Path, *, backbone: Any | None = None, heads: Any | None = None,
        policy: Any | None = None, device: str | None = None,
    ) -> ExitInference:
        """Load a complete run directory of ``exitgym train`` (safetensors + JSON; no pickle).

        The backbone and heads default to the prepared ones the run trained on (its task,
        backbone, heads mode and prepare options; fine-tuned weights included); ``policy``
        replaces the run's greedy policy by a reading of it (an operating point).
        """
        from exitgym.experiments.policies import load_exit_run

        saved, spec = load_exit_run(run_dir)
        policy = saved if policy is None else policy
        prepare_options = dict(spec.prepare)
        if backbone is None or heads is None:
            from exitgym.data.prepare import load_heads, load_prepared_backbone
            from exitgym.experiments.binding import check_data, check_fingerprints

            check_data(run_dir, spec)  # changed data would re-prepare other heads: refused
            names = {"task": spec.task, "backbone": spec.backbone, "heads": spec.heads,
                     **prepare_options}
            if backbone is None:
                backbone = load_prepared_backbone(**names)
                check_fingerprints(run_dir, None,
                                   {"backbone_fingerprint": backbone.fingerprint()})
            if heads is None:
                heads = load_heads(**names)
                check_fingerprints(run_dir, None, {"heads_fingerprint": heads.fingerprint()})
        return cls(policy, backbone, heads, observation=spec.kwargs.get("observation"),
                   policy_flops=float(spec.kwargs.get("policy_flops") or 0.0),
                   max_length=int(prepare_options.get("max_length", 128)), device=device)
