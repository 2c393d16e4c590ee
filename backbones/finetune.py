"""Fine-tuning a backbone with its exit heads: fast on CPU, early-stopped, resumable, reproducible.

One trainer serves every recipe that moves backbone weights (``exitgym.data.recipes``): the loss
is a weighted sum of per-exit cross-entropies, ``Σ_l w_l·CE_l / Σ_l w_l``, with PABEE's
``w_l = l`` for the joint recipe and ``w = (0, …, 0, 1)`` for the first stage of DeeBERT's
two-stage recipe. What makes it fast (measured on a 2-core CPU, see ``docs/design.md``):

- length-bucketed batches: texts are tokenized once, and each batch holds texts of similar length,
  so padding costs almost nothing;
- the word-embedding matrix (half of MiniLM's weights) is frozen, so AdamW never touches it;
- a thread count that does not oversubscribe the machine
  (:func:`~exitgym.utils.threads.torch_threads`).

What makes it honest: validation is evaluated ``evals_per_epoch`` times per epoch and the best
state (by the validation value of the training objective) is returned, with early stopping after
``patience`` evaluations without improvement; the batch order, dropout and skip masks derive from
``seed`` only, so two processes produce the same bits; a checkpoint (safetensors + JSON, never a
pickle) is written at least every ``checkpoint_seconds`` and at each evaluation, and a run killed
at any point resumes from it to exactly the uninterrupted result.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from exitgym.backbones.cache import compute_pooled
from exitgym.backbones.heads import (
    EXIT_LOSSES,
    ExitHeads,
    evaluate_heads,
    exit_weights,
    weighted_exit_loss,
)
from exitgym.utils.atomic import atomic_write
from exitgym.utils.devices import autocast
from exitgym.utils.threads import torch_threads
from exitgym.utils.torch_state import load_optimizer_tensors, optimizer_tensors

CHECKPOINT_META = "finetune.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one fine-tuning run (the recipe picks ``loss``)."""

    epochs: int = 1
    """Upper bound on passes over the training texts (early stopping may end sooner)."""
    lr: float = 5e-5
    """AdamW learning rate of the backbone (linear warm-up, then linear decay to 0)."""
    head_lr: float = 1e-3
    """Learning rate of the freshly initialised heads."""
    batch_size: int = 32
    """Texts per step."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and norms)."""
    warmup: float = 0.06
    """Fraction of the steps spent warming the learning rate up."""
    loss: str = "weighted"
    """Which exits the loss trains, one of :data:`~exitgym.backbones.heads.EXIT_LOSSES`."""
    skip_prob: float = 0.0
    """Per sample, layer and block: probability of skipping attention / FFN during training."""
    max_length: int = 128
    """Tokenizer truncation length."""
    freeze_embeddings: bool = True
    """Keep the word-embedding matrix fixed (faster, and rare words keep pretrained vectors)."""
    evals_per_epoch: int = 2
    """Validation evaluations per epoch (the last one at the epoch's end)."""
    patience: int = 2
    """Stop after this many evaluations without a better validation loss."""
    checkpoint_seconds: float = 60.0
    """Write a resumable checkpoint when this many seconds passed since the last one."""
    seed: int = 0
    """Seed of the batch order, dropout and skip masks."""

    def __post_init__(self) -> None:
        if self.loss not in EXIT_LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; allowed: {list(EXIT_LOSSES)}")
        if not 0.0 <= self.skip_prob < 1.0:
            raise ValueError(f"skip_prob must be in [0, 1), got {self.skip_prob}")
        for name in ("epochs", "batch_size", "evals_per_epoch", "patience", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class TextSet:
    """Texts (and pairs) with integer labels: one split as the trainer sees it."""

    texts: Sequence[str]
    pairs: Sequence[str] | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


def token_lengths(backbone: Any, data: TextSet, max_length: int) -> np.ndarray:
    """Tokens per text after truncation (what a batch of it would be padded to)."""
    encoded = backbone.tokenizer(list(data.texts), None if data.pairs is None else list(data.pairs),
                                 truncation=True, max_length=max_length)
    return np.asarray([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)


def bucketed_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                     pool: int = 50) -> list[np.ndarray]:
    """One epoch's batches: shuffle, sort pools of ``pool`` batches by length, shuffle the batches.

    Batches stay random in content and order, but hold texts of similar length. Depends only on
    ``(seed, epoch)``, so a resumed run recomputes the same schedule.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    chunk = batch_size * pool
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(-lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def multi_exit_forward(backbone: Any, heads: ExitHeads, batch: dict[str, torch.Tensor],
                       layers: Sequence[int], skip_attention: torch.Tensor | None = None,
                       skip_ffn: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[B, len(layers), C]`` of the heads at 0-based ``layers``, and pooled ``[B, L, H]``
    states of every layer (detached; the caches reuse them)."""
    state = backbone.embed(batch)
    logits, pooled = [], []
    wanted = set(layers)
    for i in range(backbone.num_layers):
        state = backbone.layer(i, state,
                               skip_attention=None if skip_attention is None else skip_attention[i],
                               skip_ffn=None if skip_ffn is None else skip_ffn[i])
        vec = backbone.pool(state)
        pooled.append(vec.detach())
        if i in wanted:
            logits.append(heads.head(i, vec))
    return torch.stack(logits, dim=1), torch.stack(pooled, dim=1)


def evaluate(backbone: Any, heads: ExitHeads, data: TextSet, max_length: int,
             batch_size: int = 128) -> dict[str, Any]:
    """Per-exit CE and accuracy on ``data``, with the pooled states and lengths they came from.

    The states are computed exactly as the per-layer caches compute them
    (:func:`~exitgym.backbones.cache.compute_pooled`), so a caller may store them as the cache.
    """
    pooled, lengths = compute_pooled(backbone, data.texts, data.pairs, max_length=max_length,
                                     batch_size=batch_size, progress=False)
    ce, acc = evaluate_heads(heads, torch.from_numpy(pooled),
                             torch.as_tensor(np.asarray(data.labels), dtype=torch.long))
    return {"val_loss": ce, "val_accuracy": acc, "pooled": pooled, "lengths": lengths}


def _tokenize(backbone: Any, data: TextSet, idx: np.ndarray, max_length: int) -> dict:
    return backbone.tokenize([data.texts[i] for i in idx],
                             None if data.pairs is None else [data.pairs[i] for i in idx],
                             max_length=max_length)


def _param_groups(backbone: Any, heads: ExitHeads, config: FinetuneConfig) -> list[dict]:
    if config.freeze_embeddings:
        backbone.model.get_input_embeddings().weight.requires_grad_(False)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    named = [(n, p) for n, p in backbone.model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if not n.endswith(no_decay)],
         "lr": config.lr, "weight_decay": config.weight_decay},
        {"params": [p for n, p in named if n.endswith(no_decay)],
         "lr": config.lr, "weight_decay": 0.0},
        {"params": list(heads.parameters()), "lr": config.head_lr, "weight_decay": 0.0},
    ]


def _lr_factor(step: int, total: int, warmup: float) -> float:
    warm = max(1, int(warmup * total))
    return min((step + 1) / warm, max(0.0, (total - step) / max(1, total - warm)))


def _state_tensors(backbone: Any, heads: ExitHeads, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {f"{prefix}backbone.{k}": v.detach().clone().contiguous()
           for k, v in backbone.model.state_dict().items()}
    out.update({f"{prefix}heads.{k}": v.detach().clone().contiguous()
                for k, v in heads.state_dict().items()})
    return out


def _load_state(backbone: Any, heads: ExitHeads, tensors: dict[str, torch.Tensor],
                prefix: str = "") -> None:
    def part(name: str) -> dict[str, torch.Tensor]:
        start = f"{prefix}{name}."
        return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start)}

    backbone.model.load_state_dict(part("backbone"), strict=True)
    heads.load_state_dict(part("heads"), strict=True)


class _Run:
    """Mutable progress of one fine-tuning run: what a checkpoint stores."""

    def __init__(self) -> None:
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_loss = math.inf
        self.best_step = -1
        self.best: dict[str, torch.Tensor] | None = None
        self.stale = 0
        self.stopped = False


def finetune(backbone: Any, heads: ExitHeads, train: TextSet, validation: TextSet | None,
             config: FinetuneConfig = FinetuneConfig(), *, checkpoint_dir: Path | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``backbone.model`` and ``heads`` in place; leave both in eval mode at their best.

    Args:
        train: the texts the weights are fit on.
        validation: the texts that pick the best state and stop early (None: keep the last).
        checkpoint_dir: where a resumable checkpoint lives while training runs; a matching one
            found there is resumed from. The caller removes it once the result is saved.

    Returns:
        ``{"history": [...], "best_step", "steps", "validation": evaluate(...) of the returned
        state or None}`` (its pooled states let the caller skip recomputing validation).
    """
    with torch_threads(), torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return _finetune(backbone, heads, train, validation, config, checkpoint_dir, progress)


def _finetune(backbone: Any, heads: ExitHeads, train: TextSet, validation: TextSet | None,
              config: FinetuneConfig, checkpoint_dir: Path | None, progress: bool) -> dict:
    num_layers = backbone.num_layers
    device = backbone.device  # the heads train where the backbone is; back on the CPU at the end
    heads.to(device)
    weights = exit_weights(config.loss, num_layers)
    layers = [i for i in range(num_layers) if weights[i] > 0]
    weights = weights[layers]
    groups = _param_groups(backbone, heads, config)
    # fused: one kernel per step (7 ms instead of 44 ms for MiniLM's 11 M trained weights on a CPU).
    opt = torch.optim.AdamW(groups, fused=True)
    lengths = token_lengths(backbone, train, config.max_length)
    per_epoch = len(bucketed_batches(lengths, config.batch_size, config.seed, 0))
    total = config.epochs * per_epoch
    evals = sorted({min(per_epoch, math.ceil(per_epoch * (k + 1) / config.evals_per_epoch))
                    for k in range(config.evals_per_epoch)})
    y_train = torch.as_tensor(np.asarray(train.labels), dtype=torch.long, device=device)
    run = _Run()
    key = _checkpoint_key(config, backbone, heads, train, validation)
    if checkpoint_dir is not None:
        _resume(checkpoint_dir, key, backbone, heads, opt, run)
    last_save = time.monotonic()
    last_eval: dict[str, Any] | None = None
    bar = tqdm(total=total, initial=run.step, desc=f"fine-tune ({config.loss} loss)",
               unit="step", disable=not progress)
    if run.step and progress:
        bar.write(f"resuming fine-tuning at step {run.step} of {total} from {checkpoint_dir}")
    schedule: tuple[int, list[np.ndarray]] = (-1, [])  # (epoch, its batches), built per epoch
    while run.step < total and not run.stopped:
        if run.best_step == run.step and run.best is None:
            # The weights about to change are the best seen so far: keep a copy.
            run.best = _state_tensors(backbone, heads)
        epoch, pos = divmod(run.step, per_epoch)
        if schedule[0] != epoch:
            schedule = (epoch, bucketed_batches(lengths, config.batch_size, config.seed, epoch))
        batch_idx = schedule[1][pos]
        backbone.model.train()
        heads.train()
        attn = ffn = None
        if config.skip_prob > 0:
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + run.step)
            attn = torch.rand(num_layers, len(batch_idx), generator=gen) < config.skip_prob
            ffn = torch.rand(num_layers, len(batch_idx), generator=gen) < config.skip_prob
        with torch.enable_grad(), autocast(device):  # bfloat16 on CUDA only
            logits, _ = multi_exit_forward(
                backbone, heads, _tokenize(backbone, train, batch_idx, config.max_length),
                layers, attn, ffn)
            loss = weighted_exit_loss(logits.float(), y_train[torch.as_tensor(batch_idx)],
                                      weights.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], max_norm=1.0)
        factor = _lr_factor(run.step, total, config.warmup)
        # opt.param_groups, not ``groups``: loading a checkpoint replaces the optimizer's dicts.
        for group, base in zip(opt.param_groups, (config.lr, config.lr, config.head_lr),
                               strict=True):
            group["lr"] = base * factor
        opt.step()
        run.step += 1
        record: dict[str, Any] = {"step": run.step, "epoch": epoch + 1, "loss": loss.item()}
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        at_eval = pos + 1 in evals
        if at_eval and validation is not None:
            last_eval = evaluate(backbone, heads, validation, config.max_length)
            objective = float(np.dot(weights.numpy(), np.asarray(last_eval["val_loss"])[layers]))
            record.update(val_objective=objective, val_loss=last_eval["val_loss"],
                          val_accuracy=last_eval["val_accuracy"])
            if objective < run.best_loss - 1e-6:
                run.best_loss, run.best_step, run.stale = objective, run.step, 0
                run.best = None  # the current weights are the best: copied before they change
            else:
                run.stale += 1
                run.stopped = run.stale >= config.patience
            bar.write(f"step {run.step}: validation accuracy per exit "
                      + " ".join(f"{a:.3f}" for a in last_eval["val_accuracy"]))
        run.history.append(record)
        if checkpoint_dir is not None and (
                at_eval or time.monotonic() - last_save >= config.checkpoint_seconds):
            _save(checkpoint_dir, key, backbone, heads, opt, run)
            last_save = time.monotonic()
    bar.close()
    final_is_best = run.best_step in (-1, run.step)
    if not final_is_best:
        _load_state(backbone, heads, run.best)
        last_eval = None
    backbone.model.eval()
    heads.eval().cpu()  # head logits of the caches are computed on the CPU
    return {"history": run.history, "best_step": run.best_step if run.best_step >= 0 else run.step,
            "steps": run.step, "validation": last_eval if final_is_best else None}


def _checkpoint_key(config: FinetuneConfig, backbone: Any, heads: ExitHeads, train: TextSet,
                    validation: TextSet | None) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: settings, starting weights and data sizes."""
    return {"config": {k: v for k, v in asdict(config).items() if k != "checkpoint_seconds"},
            "backbone": backbone.fingerprint(), "heads": heads.fingerprint(),
            "train": len(train), "validation": None if validation is None else len(validation)}


def _save(directory: Path, key: dict, backbone: Any, heads: ExitHeads, opt: Any,
          run: _Run) -> None:
    """Tensors to a new ``finetune-<step>.safetensors``, then the JSON that names it, then the
    older tensor files go: killed at any point, the JSON names a complete, matching file."""
    from safetensors.torch import save_file

    tensors = _state_tensors(backbone, heads)
    optim, param_groups = optimizer_tensors(opt)
    tensors.update(optim)
    if run.best is not None:
        tensors.update({f"best.{k}": v for k, v in run.best.items()})
    tensors["rng.torch"] = torch.random.get_rng_state()
    name = f"finetune-{run.step:07d}.safetensors"
    meta = {"key": key, "tensors": name, "step": run.step, "history": run.history,
            "best_loss": run.best_loss, "best_step": run.best_step, "stale": run.stale,
            "stopped": run.stopped, "param_groups": param_groups}
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / name,
                 lambda tmp: save_file(tensors, str(tmp), metadata={"step": str(run.step)}))
    atomic_write(directory / CHECKPOINT_META,
                 lambda tmp: tmp.write_text(json.dumps(meta, default=float)))
    for old in directory.glob("finetune-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _resume(directory: Path, key: dict, backbone: Any, heads: ExitHeads, opt: Any,
            run: _Run) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    meta_path = directory / CHECKPOINT_META
    if not meta_path.is_file():
        return
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != json.loads(json.dumps(key)):
            return  # another run's checkpoint (other settings or data): start afresh
        tensor_path = directory / meta["tensors"]
        with safe_open(str(tensor_path), framework="pt") as handle:
            if (handle.metadata() or {}).get("step") != str(meta["step"]):
                return
        tensors = load_file(str(tensor_path))
    except (OSError, ValueError, KeyError, TypeError):
        return  # damaged or incomplete: start afresh rather than continue from something unknown
    _load_state(backbone, heads, tensors)
    load_optimizer_tensors(opt, tensors, meta["param_groups"])
    torch.random.set_rng_state(tensors["rng.torch"])
    run.step, run.history = int(meta["step"]), list(meta["history"])
    run.best_loss, run.best_step = float(meta["best_loss"]), int(meta["best_step"])
    run.stale, run.stopped = int(meta["stale"]), bool(meta["stopped"])
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    run.best = best or None
