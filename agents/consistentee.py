"""The ConsistentEE training schedule on a per-layer cache (frozen backbone, trainable heads).

ConsistentEE alternates (docs/design.md):

1. heads trained with the weighted cross-entropy ``Σ_l l·CE_l / Σ_l l``;
2. memorized layers recomputed from the new heads (ConsistentEE Eq. 7);
3. the exit policy (one small net per layer, :mod:`exitgym.agents.consistentee_policy`) trained
   by REINFORCE with the mean-of-K baseline, the heads frozen (``make_env`` picks the reward);
4. the heads trained with the policy frozen, each sample's loss only at the layer where the
   (greedy) policy exits it;
5. repeat 2-4, and end with 2-3, so the returned policy was trained on the returned heads.

With a frozen backbone the heads only read ``LayerCache.pooled``, so they are trained here on the
cached pooled states: :class:`CachedHeads` is one linear classifier per layer, and every change of
the heads produces a *new* :class:`LayerCache` (frozen dataclass: ``dataclasses.replace`` with new
logits; correctness, memorized and oracle layers are recomputed by the cache itself). The env of
each policy phase is rebuilt on that cache by the user's ``make_env(cache)``.

Not implemented: joint training with a *live* (trainable) backbone. That needs the backbone's
gradients through every layer an episode ran, i.e. the live env and
``exitgym.backbones.head_training.finetune``; this module covers the frozen-backbone schedule,
which is what the cached envs support. :meth:`CachedHeads.to_exit_heads` exports the trained heads
as ``exitgym.backbones.heads.ExitHeads`` for live envs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exitgym.agents.base import evaluate
from exitgym.agents.consistentee_policy import PerLayerReinforce, official_reinforce
from exitgym.agents.reinforce import ReinforceConfig
from exitgym.agents.rollout import env_attr
from exitgym.backbones.layer_cache import LayerCache


@dataclass(frozen=True)
class ConsistentEEConfig:
    """Hyper-parameters of the alternating schedule."""

    rounds: int = 2
    """Repetitions of steps 2-4."""
    head_epochs: int = 10
    """Epochs of each head-training phase."""
    head_lr: float = 1e-2
    """Adam learning rate of the heads."""
    head_batch_size: int = 256
    """Samples per head gradient step."""
    policy_updates: int = 100
    """REINFORCE updates per policy phase."""
    reinforce: ReinforceConfig = field(default_factory=official_reinforce)
    """Config of the policy phases (default: the official mean-of-K baseline, K = 8, per-layer
    nets of width 32; see :mod:`exitgym.agents.consistentee_policy`)."""
    seed: int = 0
    """Seeds head initialisation and shuffling."""


class CachedHeads(nn.Module):
    """One linear head per layer on cached pooled states: ``[N, L, H] -> [N, L, C]``."""

    def __init__(self, num_layers: int, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_layers, hidden_size, num_labels) * 0.02)
        self.bias = nn.Parameter(torch.zeros(num_layers, num_labels))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nlh,lhc->nlc", pooled, self.weight) + self.bias

    def apply_to(self, cache: LayerCache, tag: str) -> LayerCache:
        """A new cache with these heads' logits (any split of the same backbone)."""
        with torch.no_grad():
            logits = self(torch.from_numpy(np.array(cache.pooled))).numpy().astype(np.float32)
        return replace(cache, logits=logits, meta={**cache.meta, "heads": tag})

    def to_exit_heads(self, label_names: tuple[str, ...] = ()) -> Any:
        """Export as :class:`exitgym.backbones.heads.ExitHeads` (linear kind) for live envs."""
        from exitgym.backbones.heads import ExitHeads, HeadsConfig

        num_layers, hidden, labels = self.weight.shape
        heads = ExitHeads(HeadsConfig(num_layers, hidden, labels, kind="linear",
                                      label_names=label_names))
        with torch.no_grad():
            for i, head in enumerate(heads.heads):
                linear = head[-1]
                linear.weight.copy_(self.weight[i].T)
                linear.bias.copy_(self.bias[i])
        return heads.eval()


HEADS_KEYS = ("weight", "bias")
"""Tensors of a saved :class:`CachedHeads`: ``weight [L, H, C]`` and ``bias [L, C]``."""


def save_heads(heads: CachedHeads, path: str | Path) -> Path:
    """Write ``heads`` as safetensors (atomically): what makes a ConsistentEE result
    self-contained, since its policy was trained on these heads, not the prepared ones."""
    from safetensors.torch import save_file

    from exitgym.utils.atomic import atomic_write

    state = {k: v.detach().contiguous().cpu() for k, v in heads.state_dict().items()}
    return atomic_write(Path(path), lambda tmp: save_file(state, str(tmp)))


def load_heads(path: str | Path) -> CachedHeads:
    """Inverse of :func:`save_heads` (safetensors, no pickle).

    Raises:
        FileNotFoundError / ValueError: no file, or not the tensors of :data:`HEADS_KEYS`.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved exit heads at {path}")
    state = load_file(str(path))
    if sorted(state) != sorted(HEADS_KEYS) or state["weight"].ndim != 3:
        raise ValueError(f"{path}: not saved CachedHeads (want tensors {list(HEADS_KEYS)}, "
                         f"weight [layers, hidden, labels]; got "
                         f"{ {k: list(v.shape) for k, v in state.items()} })")
    heads = CachedHeads(*state["weight"].shape)
    heads.load_state_dict(state)
    return heads


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ConsistentEE step 1: ``Σ_l l·CE_l / Σ_l l``, batch mean (``logits [B, L, C]``)."""
    num_layers = logits.shape[1]
    targets = labels[:, None].expand(-1, num_layers)
    ce = nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    w = torch.arange(1, num_layers + 1, dtype=ce.dtype)
    return ((ce * w).sum(1) / w.sum()).mean()


def exit_layer_ce(
    logits: torch.Tensor, labels: torch.Tensor, exit_layer: torch.Tensor
) -> torch.Tensor:
    """ConsistentEE step 4: cross-entropy only at each sample's (1-based) exit layer."""
    picked = logits[torch.arange(len(labels)), exit_layer - 1]
    return nn.functional.cross_entropy(picked, labels)


def train_heads(
    heads: CachedHeads, cache: LayerCache, loss_fn: Callable[..., torch.Tensor],
    epochs: int, lr: float, batch_size: int, seed: int, exit_layer: np.ndarray | None = None,
) -> list[float]:
    """Train ``heads`` in place on the cache; returns the mean loss of each epoch."""
    gen = torch.Generator().manual_seed(seed)
    pooled = torch.from_numpy(np.array(cache.pooled))  # a copy: cache arrays are read-only
    labels = torch.from_numpy(np.array(cache.labels))
    exits = torch.as_tensor(exit_layer) if exit_layer is not None else None
    opt = torch.optim.Adam(heads.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for idx in torch.randperm(cache.num_samples, generator=gen).split(batch_size):
            logits = heads(pooled[idx])
            loss = (loss_fn(logits, labels[idx]) if exits is None
                    else loss_fn(logits, labels[idx], exits[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        losses.append(total / count)
    return losses


class ConsistentEE:
    """Runs the alternating schedule; holds the current heads, cache and policy trainer.

    Args:
        cache: Training-split cache (its pooled states are what the heads read).
        make_env: Builds the training env on a cache, e.g. ``lambda c: gym.make_vec(
            "exitgym/EarlyExit-v0", num_envs=64, cache=c, reward="hardness",
            observation="hidden+depth", vectorization_mode="vector_entry_point")`` (the
            per-layer policy reads ``hidden+depth``). Called after every head phase.
        config: Schedule hyper-parameters.
    """

    def __init__(self, cache: LayerCache, make_env: Callable[[LayerCache], Any],
                 config: ConsistentEEConfig | None = None,
                 policy_cache: LayerCache | None = None) -> None:
        self.config = config or ConsistentEEConfig()
        self.base_cache, self.make_env = cache, make_env
        self.policy_base = policy_cache
        """Rows the policy phases train on (the held-out ``policy`` split: the heads are never
        fit on them); None: the heads' own rows."""
        torch.manual_seed(self.config.seed)
        self.heads = CachedHeads(cache.num_layers, cache.hidden_size, cache.num_labels)
        self.cache: LayerCache = cache
        self.agent: PerLayerReinforce | None = None
        self.log: list[dict[str, Any]] = []

    def _record(self, phase: str, **values: Any) -> None:
        acc = self.cache.correct.mean(axis=0)
        self.log.append({"phase": phase, "layer_accuracy": acc.round(4).tolist(),
                         "mean_memorized": float(self.cache.memorized.mean()), **values})

    def run(self) -> ConsistentEE:
        """Steps 1-4, then ``rounds - 1`` more repetitions of 2-4, then a last policy phase."""
        cfg = self.config
        losses = train_heads(self.heads, self.base_cache, weighted_ce, cfg.head_epochs,
                             cfg.head_lr, cfg.head_batch_size, cfg.seed)
        self.cache = self.heads.apply_to(self.base_cache, "consistentee-weighted")
        self._record("heads-weighted", loss=losses[-1])
        for r in range(cfg.rounds):
            exits = self._policy_phase(r)
            if self.policy_base is not None:  # step 4 needs the exits of the heads' own rows
                exits = self._greedy_exits(self.make_env(self.cache))
            losses = train_heads(self.heads, self.base_cache, exit_layer_ce, cfg.head_epochs,
                                 cfg.head_lr, cfg.head_batch_size, cfg.seed + r + 1, exits)
            self.cache = self.heads.apply_to(self.base_cache, f"consistentee-round{r}")
            self._record("heads-at-exit", round=r, loss=losses[-1])
        # The schedule ends on a policy phase: the returned policy was trained on the returned
        # heads (their memorized layers and confidences), not on the heads before the last
        # head phase.
        self._policy_phase(cfg.rounds)
        return self

    def _greedy_exits(self, env: Any) -> np.ndarray:
        """The current policy's greedy exit layer of every sample of ``env``."""
        assert self.agent is not None
        result = evaluate(self.agent.policy, env)
        return np.array([rec.exit_layer for rec in result.records], dtype=np.int64)

    def _policy_phase(self, r: int) -> np.ndarray:
        """Steps 2-3 on the current heads (applied to the policy rows); the greedy exit layers
        of the result on those rows."""
        rows = (self.cache if self.policy_base is None
                else self.heads.apply_to(self.policy_base, self.cache.meta.get("heads", "")))
        env = self.make_env(rows)  # step 2: memorized layers come with the new cache
        if self.agent is None:
            self.agent = PerLayerReinforce(env, self.config.reinforce)
        else:  # keep training the same policy on the env of the new heads
            old = env_attr(self.agent.env, "reward_shape")
            self.agent.env = env
            shape = env_attr(env, "reward_shape")
            if self.config.reinforce.target_cost is not None and old is not None:
                shape.alpha = old.alpha  # the budget multiplier carries over, not restarts
        self.agent.learn(self.config.policy_updates)
        result = evaluate(self.agent.policy, env)
        self._record("policy", round=r, accuracy=result.accuracy, cost=result.cost)
        return np.array([rec.exit_layer for rec in result.records], dtype=np.int64)

    def cache_for(self, other: LayerCache) -> LayerCache:
        """The current heads applied to another split (evaluate on validation / test with it)."""
        return self.heads.apply_to(other, self.cache.meta.get("heads", "consistentee"))
