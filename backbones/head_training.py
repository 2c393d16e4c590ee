"""Training exit heads: on frozen pooled states (fast) or jointly with the backbone (PABEE loss).

(a) DeeBERT's two-stage recipe: the backbone stays frozen, every layer's pooled state is computed
once, and each head is fitted on those arrays with minibatch Adam and per-head early stopping on
validation loss. On CPU this costs seconds once the states exist.

(b) Joint fine-tuning of backbone and heads with PABEE's weighted loss ``Σ l·CE_l / Σ l``. With
``skip_prob > 0`` every sample independently skips each layer's attention and feed-forward block
with that probability during training, so the fine-tuned model tolerates the skips that the
SkipBlock / SwitchableDecision environments make.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from exitgym.backbones.heads import ExitHeads, pabee_loss


def _seeded_global_rng(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` with torch's global RNG seeded from its ``config.seed`` and restored after.

    Dropout draws from the global generator, so without this the trained heads would depend on
    whatever random calls ran earlier in the process, and a cache rebuilt after a crash would not
    reproduce the one the user had.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(fn).bind(*args, **kwargs)
        bound.apply_defaults()
        with torch.random.fork_rng():
            torch.manual_seed(bound.arguments["config"].seed)
            return fn(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class FrozenTrainConfig:
    """Settings for fitting heads on precomputed pooled states."""

    epochs: int = 30
    """Upper bound on passes over the training states (early stopping usually ends sooner)."""
    lr: float = 3e-3
    """Adam learning rate of the heads."""
    batch_size: int = 256
    """Minibatch size."""
    weight_decay: float = 1e-4
    """AdamW weight decay (mild regularisation of the linear heads)."""
    patience: int = 3
    """Stop after this many epochs in which no head improved its validation loss."""
    seed: int = 0
    """Seed of the minibatch order."""


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings for joint backbone + heads fine-tuning."""

    epochs: int = 1
    """Passes over the training texts."""
    lr: float = 3e-5
    """AdamW learning rate of the backbone (linear decay to 0 after 6% warm-up)."""
    head_lr: float = 1e-3
    """Learning rate of the freshly initialised heads (they start from scratch)."""
    batch_size: int = 32
    """Minibatch size."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    skip_prob: float = 0.0
    """Per sample, layer and block: probability of skipping attention / FFN during training."""
    max_length: int = 128
    """Tokenizer truncation length."""
    seed: int = 0
    """Seed of the minibatch order and of the skip masks."""


@_seeded_global_rng
def train_frozen_heads(
    heads: ExitHeads,
    train_pooled: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    val_pooled: np.ndarray | torch.Tensor,
    val_labels: np.ndarray | torch.Tensor,
    config: FrozenTrainConfig = FrozenTrainConfig(),
) -> list[dict[str, Any]]:
    """Fit every head on fixed pooled states ``[N, L, H]``; keeps each head's best epoch.

    The loss is the sum of the per-layer cross-entropies: with a frozen backbone the heads do not
    interact, so this trains each one as if alone. Returns per-epoch history (train loss, per-layer
    validation loss and accuracy).
    """
    x_train, y_train = torch.as_tensor(np.asarray(train_pooled)), torch.as_tensor(train_labels)
    x_val, y_val = torch.as_tensor(np.asarray(val_pooled)), torch.as_tensor(val_labels)
    opt = torch.optim.AdamW(heads.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    num_layers = heads.num_layers
    best_loss = [math.inf] * num_layers
    best_state = [copy.deepcopy(h.state_dict()) for h in heads.heads]
    history: list[dict[str, Any]] = []
    stale = 0
    for epoch in range(config.epochs):
        heads.train()
        order = torch.randperm(len(x_train), generator=gen)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            logits = heads(x_train[idx])
            loss = nn.functional.cross_entropy(
                logits.flatten(0, 1), y_train[idx].repeat_interleave(num_layers), reduction="sum"
            ) / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        val_loss, val_acc = evaluate_heads(heads, x_val, y_val)
        improved = False
        for layer in range(num_layers):
            if val_loss[layer] < best_loss[layer] - 1e-5:
                best_loss[layer] = val_loss[layer]
                best_state[layer] = copy.deepcopy(heads.heads[layer].state_dict())
                improved = True
        history.append({"epoch": epoch + 1, "train_loss": total / len(x_train),
                        "val_loss": val_loss, "val_accuracy": val_acc})
        stale = 0 if improved else stale + 1
        if stale >= config.patience:
            break
    for layer, state in enumerate(best_state):
        heads.heads[layer].load_state_dict(state)
    heads.eval()
    return history


@torch.inference_mode()
def evaluate_heads(
    heads: ExitHeads, pooled: torch.Tensor, labels: torch.Tensor, batch_size: int = 4096
) -> tuple[list[float], list[float]]:
    """Per-layer mean cross-entropy and accuracy of the heads on pooled states."""
    heads.eval()
    logits = torch.cat([heads(pooled[i:i + batch_size]) for i in range(0, len(pooled), batch_size)])
    num_layers = logits.shape[1]
    ce = nn.functional.cross_entropy(
        logits.flatten(0, 1), labels.repeat_interleave(num_layers), reduction="none"
    ).reshape(-1, num_layers).mean(dim=0)
    acc = (logits.argmax(dim=-1) == labels[:, None]).float().mean(dim=0)
    return ce.tolist(), acc.tolist()


def skip_masks(
    batch: int, num_layers: int, prob: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent per-sample, per-layer bool masks ``[L, B]`` for skipping attention / FFN."""
    if not 0.0 <= prob < 1.0:
        raise ValueError(f"skip_prob must be in [0, 1), got {prob}")
    attn = torch.rand(num_layers, batch, generator=gen) < prob
    ffn = torch.rand(num_layers, batch, generator=gen) < prob
    return attn, ffn


def multi_exit_logits(
    backbone: Any,
    heads: ExitHeads,
    batch: dict[str, torch.Tensor],
    skip_attention: torch.Tensor | None = None,
    skip_ffn: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the backbone layer by layer and every head: logits ``[B, L, C]``.

    ``skip_attention`` / ``skip_ffn`` are bool ``[L, B]`` (None = run everything).
    """
    state = backbone.embed(batch)
    out = []
    for i in range(backbone.num_layers):
        state = backbone.layer(
            i, state,
            skip_attention=None if skip_attention is None else skip_attention[i],
            skip_ffn=None if skip_ffn is None else skip_ffn[i],
        )
        out.append(heads.head(i, backbone.pool(state)))
    return torch.stack(out, dim=1)


@_seeded_global_rng
def finetune(
    backbone: Any,
    heads: ExitHeads,
    texts: list[str],
    labels: np.ndarray,
    text_pairs: list[str] | None = None,
    config: FinetuneConfig = FinetuneConfig(),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Jointly fine-tune ``backbone.model`` and ``heads`` with the PABEE loss (in place).

    Returns per-step history (loss). Leaves both modules in eval mode.
    """
    gen = torch.Generator().manual_seed(config.seed)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    backbone_params = list(backbone.model.named_parameters())
    groups = [
        {"params": [p for n, p in backbone_params if not n.endswith(no_decay)],
         "lr": config.lr, "weight_decay": config.weight_decay},
        {"params": [p for n, p in backbone_params if n.endswith(no_decay)],
         "lr": config.lr, "weight_decay": 0.0},
        {"params": list(heads.parameters()), "lr": config.head_lr, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups)
    steps = config.epochs * math.ceil(len(texts) / config.batch_size)
    warmup = max(1, int(0.06 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    history: list[dict[str, Any]] = []
    backbone.model.train()
    heads.train()
    bar = tqdm(total=steps, desc="fine-tune backbone+heads", disable=not progress)
    with torch.enable_grad():
        for epoch in range(config.epochs):
            order = torch.randperm(len(texts), generator=gen).tolist()
            for start in range(0, len(order), config.batch_size):
                idx = order[start:start + config.batch_size]
                batch = backbone.tokenize(
                    [texts[i] for i in idx],
                    None if text_pairs is None else [text_pairs[i] for i in idx],
                    max_length=config.max_length,
                )
                attn, ffn = (None, None)
                if config.skip_prob > 0:
                    attn, ffn = skip_masks(len(idx), backbone.num_layers, config.skip_prob, gen)
                loss = pabee_loss(multi_exit_logits(backbone, heads, batch, attn, ffn), y_all[idx])
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [p for g in groups for p in g["params"]], max_norm=1.0)
                opt.step()
                sched.step()
                value = loss.item()
                history.append({"epoch": epoch + 1, "loss": value})
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}")
    bar.close()
    backbone.model.eval()
    heads.eval()
    return history


@torch.inference_mode()
def accuracy_under_skips(
    backbone: Any,
    heads: ExitHeads,
    texts: list[str],
    labels: np.ndarray,
    skip_attention_layers: tuple[int, ...] = (),
    skip_ffn_layers: tuple[int, ...] = (),
    text_pairs: list[str] | None = None,
    max_length: int = 128,
    batch_size: int = 128,
) -> list[float]:
    """Per-layer head accuracy when the given 1-based layers skip attention / FFN for everyone.

    Measures how well a (skip-trained) model tolerates a fixed skip pattern.
    """
    num_layers = backbone.num_layers
    for layer in (*skip_attention_layers, *skip_ffn_layers):
        if not 1 <= layer <= num_layers:
            raise ValueError(f"skip layer {layer} outside 1..{num_layers} (1-based)")
    was_training = backbone.model.training
    backbone.model.eval()
    heads.eval()
    correct = np.zeros(num_layers)
    y_all = np.asarray(labels)
    for start in range(0, len(texts), batch_size):
        stop = min(start + batch_size, len(texts))
        batch = backbone.tokenize(texts[start:stop],
                                  None if text_pairs is None else text_pairs[start:stop],
                                  max_length=max_length)
        n = stop - start
        attn = torch.zeros(num_layers, n, dtype=torch.bool)
        ffn = torch.zeros(num_layers, n, dtype=torch.bool)
        attn[[layer - 1 for layer in skip_attention_layers]] = True
        ffn[[layer - 1 for layer in skip_ffn_layers]] = True
        preds = multi_exit_logits(backbone, heads, batch, attn, ffn).argmax(-1).numpy()
        correct += (preds == y_all[start:stop, None]).sum(axis=0)
    backbone.model.train(was_training)
    return (correct / len(texts)).tolist()
