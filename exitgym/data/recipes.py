"""The exit-head recipes of ``prepare``: ``joint``, ``two-stage`` and ``frozen``.

- ``joint`` (PABEE, ConsistentEE's initialisation): backbone and every head are fine-tuned together
  with the weighted loss ``Σ_l l·CE_l / Σ_l l``; early layers learn to be classifiers too.
- ``two-stage`` (DeeBERT): the backbone is fine-tuned with the last head only, then frozen, and the
  other heads are fitted on its pooled states; the last exit is as good as plain fine-tuning, the
  early exits read features that were never asked to classify.
- ``frozen``: heads on the pretrained backbone. A probe of what each layer already knows; on a
  sentence-similarity backbone depth buys almost nothing (see ``docs/design.md``).

Every recipe returns the heads, a JSON-able history and, where training already computed them, the
pooled states of the train / validation splits (the caches reuse them instead of recomputing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exitgym.data.tasks import Task

CHECKPOINT_DIR = "training"
"""Sub-folder of a prepared directory holding the resumable fine-tuning checkpoint."""


def texts_of(task: Task, split: str) -> tuple[list[str], list[str] | None, Any]:
    """``(texts, pairs or None, int64 labels)`` of one split."""
    import numpy as np

    ds = task.split(split)
    pairs = list(ds["text_pair"]) if task.has_pair else None
    return list(ds["text"]), pairs, np.asarray(list(ds["label"]), dtype=np.int64)


def train_heads(config: Any, task: Task, bb: Any, pooled: dict[str, Any], directory: Path,
                progress: bool) -> tuple[Any, dict[str, Any]]:
    """Train the heads of ``config.heads`` (and the backbone, in place, for fine-tuned recipes).

    ``pooled`` (split -> ``(states, lengths)``) is filled with what training computed anyway.
    """
    import torch

    from exitgym.backbones.heads import ExitHeads, HeadsConfig

    heads_cfg = HeadsConfig(num_layers=bb.num_layers, hidden_size=bb.hidden_size,
                            num_labels=task.num_labels, kind=config.head_kind,
                            label_names=task.label_names)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        heads = ExitHeads(heads_cfg)
    history: dict[str, Any] = {"recipe": config.heads}
    if config.heads in ("joint", "two-stage"):
        history["finetune"] = _finetune_stage(config, task, bb, heads, pooled, directory,
                                              progress)
        bb.invalidate_fingerprint()
    if config.heads in ("frozen", "two-stage"):
        keep_last = heads.heads[-1].state_dict() if config.heads == "two-stage" else None
        history["heads"] = _frozen_stage(config, task, bb, heads, pooled, progress)
        if keep_last is not None:
            # DeeBERT's second stage fits the other exits; the last one stays as fine-tuned.
            heads.heads[-1].load_state_dict(keep_last)
    return heads, history


def _finetune_stage(config: Any, task: Task, bb: Any, heads: Any, pooled: dict[str, Any],
                    directory: Path, progress: bool) -> dict[str, Any]:
    from exitgym.backbones.finetune import FinetuneConfig, TextSet, finetune

    texts, pairs, labels = texts_of(task, "train")
    n = config.finetune_samples or len(texts)
    ft_cfg = FinetuneConfig(
        epochs=config.epochs or 1, lr=config.lr or 5e-5, head_lr=config.head_lr,
        batch_size=config.train_batch_size or 32,
        loss="weighted" if config.heads == "joint" else "last",
        skip_prob=config.skip_prob, max_length=config.max_length,
        evals_per_epoch=config.evals_per_epoch, patience=config.patience or 2, seed=config.seed)
    train = TextSet(texts[:n], None if pairs is None else pairs[:n], labels[:n])
    validation = TextSet(*texts_of(task, "validation"))
    result = finetune(bb, heads, train, validation, ft_cfg,
                      checkpoint_dir=directory / CHECKPOINT_DIR, progress=progress)
    if result["validation"] is not None:
        pooled["validation"] = (result["validation"]["pooled"], result["validation"]["lengths"])
    last = [r for r in result["history"] if "val_accuracy" in r]
    return {"steps": result["steps"], "best_step": result["best_step"],
            "history": result["history"],
            "val_accuracy": last[-1]["val_accuracy"] if last else None}


def _frozen_stage(config: Any, task: Task, bb: Any, heads: Any, pooled: dict[str, Any],
                  progress: bool) -> list[dict[str, Any]]:
    from exitgym.backbones.cache import compute_pooled
    from exitgym.backbones.head_training import FrozenTrainConfig, train_frozen_heads

    for split in ("train", "validation"):
        if split not in pooled:
            texts, pairs, _ = texts_of(task, split)
            pooled[split] = compute_pooled(bb, texts, pairs, max_length=config.max_length,
                                           batch_size=config.batch_size, progress=progress,
                                           desc=f"{split}: pooled states")
    is_frozen = config.heads == "frozen"
    train_cfg = FrozenTrainConfig(
        epochs=(config.epochs if is_frozen else None) or 30,
        lr=(config.lr if is_frozen else None) or 3e-3,
        batch_size=(config.train_batch_size if is_frozen else None) or 256,
        patience=(config.patience if is_frozen else None) or 3, seed=config.seed)
    return train_frozen_heads(heads, pooled["train"][0], texts_of(task, "train")[2],
                              pooled["validation"][0], texts_of(task, "validation")[2], train_cfg)
