"""Fine-tuning speed: exitgym's trainer against a plain Hugging Face training step, same batches.

The plain step is what a user would write without exitgym: ``AutoModel`` forward, mean pooling of
the last layer, one linear classifier, cross-entropy, backward, ``AdamW`` over every parameter.
exitgym's step (:func:`exitgym.backbones.finetune.finetune`) runs the backbone layer by layer,
pools and classifies at every exit, and trains every head with the weighted loss, but freezes the
word embeddings. Both see the same length-bucketed batches of the benchmark's training texts, on
the same thread count; each side's wall time is the best of ``repeats`` timed runs (alternating,
so both see the same machine state).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np

FINETUNE_GOAL = 0.8
"""exitgym's fine-tuning steps/s must be at least this fraction of the plain HF step's."""


def _backbone(cfg: Any, device: str = "cpu") -> Any:
    from exitgym.backbones.registry import BACKBONE_ALIASES, load_backbone
    from exitgym.utils.devices import place

    if not cfg.quick:
        bb = load_backbone(cfg.data.backbone)
    else:
        from transformers import AutoTokenizer, BertConfig

        tokenizer = AutoTokenizer.from_pretrained(str(BACKBONE_ALIASES["minilm-l6"]()))
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=64)
        bb = load_backbone(config, tokenizer=tokenizer, seed=0)
    place(bb.model, device)  # fine-tuning trains where the backbone is
    return bb


def _plain_hf_seconds(model: Any, backbone: Any, data: Any, batches: list[np.ndarray],
                      num_labels: int, max_length: int) -> float:
    """Seconds for ``len(batches)`` plain training steps of ``model`` (a fresh copy), where the
    model is and with the mixed precision exitgym's trainer uses there (bfloat16 autocast on
    CUDA only), so the ratio compares like with like."""
    import torch
    from torch import nn

    from exitgym.utils.devices import autocast

    model = copy.deepcopy(model).train()
    device = next(model.parameters()).device
    head = nn.Linear(model.config.hidden_size, num_labels).to(device)
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=5e-5)
    labels = torch.as_tensor(np.asarray(data.labels), dtype=torch.long, device=device)
    tic = time.perf_counter()
    for idx in batches:
        batch = backbone.tokenize([data.texts[i] for i in idx], max_length=max_length)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device):
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            loss = nn.functional.cross_entropy(head(pooled).float(),
                                               labels[torch.as_tensor(idx, device=device)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tic


def _exitgym_seconds(bb: Any, data: Any, num_labels: int, config: Any) -> float:
    """Seconds of :func:`finetune` on a freshly loaded backbone (tokenising, bucketing and
    optimizer set-up included)."""
    from exitgym.backbones.finetune import finetune
    from exitgym.backbones.heads import ExitHeads, HeadsConfig

    heads = ExitHeads(HeadsConfig(num_layers=bb.num_layers, hidden_size=bb.hidden_size,
                                  num_labels=num_labels))
    tic = time.perf_counter()
    finetune(bb, heads, data, None, config, progress=False)
    if bb.device.type == "cuda":
        import torch

        torch.cuda.synchronize(bb.device)
    return time.perf_counter() - tic


def finetune_speed(cfg: Any, device: str = "cpu") -> dict[str, Any]:
    """Steps/s of exitgym's trainer and of the plain HF step on the same batches, both on
    ``device`` (the CPU bench's section: the CPU; the ``gpu`` section: CUDA)."""
    from exitgym.backbones.finetune import (
        FinetuneConfig,
        TextSet,
        bucketed_batches,
        token_lengths,
    )
    from exitgym.data.recipes import texts_of
    from exitgym.data.tasks import load_task
    from exitgym.utils.threads import torch_threads

    backbone = _backbone(cfg, device)
    task = load_task(cfg.data.task, max_samples=60 if cfg.quick else None)
    texts, pairs, labels = texts_of(task, "train")
    config = FinetuneConfig(max_length=cfg.data.max_length, checkpoint_seconds=math.inf)
    steps = 3 if cfg.quick else cfg.finetune_steps
    n = min(len(texts), steps * config.batch_size)
    data = TextSet(texts[:n], None if pairs is None else pairs[:n], labels[:n])
    batches = bucketed_batches(token_lengths(backbone, data, config.max_length),
                               config.batch_size, config.seed, 0)
    ours, plain = [], []
    with torch_threads() as threads:
        for _ in range(1 if cfg.quick else cfg.repeats_finetune):
            ours.append(_exitgym_seconds(_backbone(cfg, device), data, task.num_labels, config))
            plain.append(_plain_hf_seconds(backbone.model, backbone, data, batches,
                                           task.num_labels, config.max_length))
    ours_rate, plain_rate = len(batches) / min(ours), len(batches) / min(plain)
    return {"steps": len(batches), "batch_size": config.batch_size, "threads": threads,
            "mean_tokens": float(np.mean(token_lengths(backbone, data, config.max_length))),
            "exitgym_steps_per_s": ours_rate, "hf_steps_per_s": plain_rate,
            "ratio_to_hf": ours_rate / plain_rate, "goal": FINETUNE_GOAL,
            "goal_met": ours_rate / plain_rate >= FINETUNE_GOAL,
            "exitgym_s": ours, "hf_s": plain}
