"""Training exit heads on a frozen backbone's pooled states, and measuring heads under skips.

Every layer's pooled state is computed once and each head is fitted on those arrays with minibatch
AdamW and per-head early stopping on validation loss: seconds on CPU once the states exist. This is
the ``frozen`` recipe (a probe of what each layer already knows) and the second stage of DeeBERT's
``two-stage`` recipe (after the backbone was fine-tuned with its last head by
:mod:`exitgym.backbones.finetune`).
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

from exitgym.backbones.finetune import multi_exit_forward
from exitgym.backbones.heads import ExitHeads, evaluate_heads


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
        logits, _ = multi_exit_forward(backbone, heads, batch, range(num_layers), attn, ffn)
        preds = logits.argmax(-1).numpy()
        correct += (preds == y_all[start:stop, None]).sum(axis=0)
    backbone.model.train(was_training)
    return (correct / len(texts)).tolist()
