"""``prepare``: task + backbone -> exit heads -> per-layer caches, and the per-layer accuracy table.

Everything an exit environment reads is produced here once and then only looked up: heads are
trained (frozen backbone, or joint fine-tuning) and saved under
``cache_dir()/prepared/<task>__<backbone>__<heads>-<hash>/``, and each split's cache goes to
``cache_dir()/caches/``. Every artefact is keyed by fingerprints of what it was built from
(configuration, data, backbone and heads weights), so a change rebuilds instead of silently
reusing old numbers, and a damaged cache is rebuilt by :func:`get_cache`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from exitgym.data.config import COLUMN_DEFAULTS, DEFAULT_RECIPE, FINETUNED, DataConfig
from exitgym.data.labels import check_labels
from exitgym.data.recipes import CHECKPOINT_DIR, texts_of, train_heads
from exitgym.data.tasks import SPLITS, Task, load_task
from exitgym.utils.atomic import atomic_write_text
from exitgym.utils.configs import option
from exitgym.utils.devices import check_device, device_record
from exitgym.utils.paths import cache_dir

BACKBONE_WEIGHTS = "backbone.safetensors"
TRAINER_VERSION = 2
"""Part of every prepared directory's key: bumped when a change to the training code changes the
heads a configuration produces, so older prepared heads are rebuilt instead of reused (2: the
fine-tuning trainer of ``exitgym.backbones.finetune`` with fused AdamW)."""


@dataclass(frozen=True)
class PrepareConfig(DataConfig):
    """What to prepare: the cache's :class:`DataConfig` plus how the heads are trained; saved as
    ``prepare_config.json`` next to the heads (flat: the directory hash keys on it)."""

    head_kind: str = "linear"
    """Exit head architecture: ``linear`` or ``mlp``."""
    finetune_samples: int | None = None
    """Fine-tuned recipes: train the backbone on the first n training rows (caches still cover
    whole splits)."""
    epochs: int | None = None
    """Most passes over the training rows; None = 1 when fine-tuning (early stopping on
    validation may end sooner), 30 for ``frozen`` heads."""
    lr: float | None = None
    """Learning rate; None = 5e-5 for a fine-tuned backbone, 3e-3 for ``frozen`` heads."""
    head_lr: float = 1e-3
    """Fine-tuned recipes: learning rate of the (freshly initialised) heads."""
    evals_per_epoch: int = option(2, minimum=1)
    """Fine-tuned recipes: validation evaluations per epoch (best state kept, early stopping)."""
    patience: int | None = option(None, minimum=1)
    """Evaluations without a better validation loss before stopping; None = 2 when fine-tuning,
    3 epochs for ``frozen`` heads."""
    batch_size: int = 128
    """Inference batch size when computing pooled states (does not change results)."""
    train_batch_size: int | None = None
    """Training minibatch; None = 32 when fine-tuning, 256 for ``frozen`` heads."""
    seed: int = 0
    """Seed of the splits, head initialisation, batch order and skip masks."""
    device: str = "auto"
    """Where the backbone is fine-tuned and the caches computed (``auto``, ``cpu``, ``cuda``,
    ``cuda:N``; :mod:`exitgym.utils.devices`). Not part of the key: caches are float32 arrays
    read on any device; the device used is recorded as ``prepared_on``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_device(self.device)

    def key(self) -> dict[str, Any]:
        """The fields that change the trained heads (the inference batch size, the device and
        accepting suspect labels do not; default column names are left out so directories
        prepared before they were options stay valid)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("batch_size", "allow_suspect_labels", "device")
                and (k not in COLUMN_DEFAULTS or v != COLUMN_DEFAULTS[k])}


class PreparedMismatch(ValueError):
    """The backbone or heads ``prepare`` would build from are not the ones required (a run's
    recorded fingerprints): raised before any head or cache is rebuilt from them."""

    def __init__(self, key: str, want: str, got: str) -> None:
        super().__init__(f"{key}: {want[:12]}… required, {got[:12]}… found")
        self.key, self.want, self.got = key, want, got


def _require(require: dict[str, str] | None, **now: Any) -> None:
    """Raise :class:`PreparedMismatch` when a fingerprint ``now`` differs from ``require``."""
    for key, got in now.items():
        want = (require or {}).get(key)
        if want and got != want:
            raise PreparedMismatch(key, want, got)


@dataclass(frozen=True)
class PreparedTask:
    """Where ``prepare`` put things and what the heads achieve."""

    config: PrepareConfig
    """The configuration prepared."""
    directory: Path
    """Folder with heads, config, history and the accuracy tables."""
    cache_paths: dict[str, Path]
    """Split -> cache directory."""
    table: dict[str, list[dict[str, float]]]
    """Split -> per-layer rows: layer, accuracy, cum_flops_fraction."""
    timings: dict[str, float]
    """Seconds spent per phase in this call (0 when reused)."""

    @property
    def backbone_weights(self) -> Path | None:
        path = self.directory / BACKBONE_WEIGHTS
        return path if path.is_file() else None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_")[-60:] or "x"


def _hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def data_fingerprint(task: Task, split: str) -> str:
    """sha256 over a split's texts and labels: caches notice when the data changed."""
    ds = task.split(split)
    digest = hashlib.sha256(json.dumps(list(task.label_names)).encode())
    for column in ("text", "text_pair", "label"):
        if column in ds.column_names:
            digest.update(json.dumps(list(ds[column]), ensure_ascii=False).encode())
    return digest.hexdigest()


def prepared_dir(config: PrepareConfig, task: Task) -> Path:
    """Folder of the heads prepared for ``config`` on this exact training data."""
    key = {**config.key(), "data": [data_fingerprint(task, s) for s in ("train", "validation")],
           "trainer": TRAINER_VERSION}
    name = f"{_slug(config.task)}__{_slug(config.backbone)}__{config.heads}-{_hash(key, 12)}"
    return cache_dir() / "prepared" / name


def _write_text(path: Path, text: str) -> None:
    """Atomic, and no write when the file already holds ``text``: every use of a prepared
    directory recomputes its accuracy tables, and rewriting identical files changed the
    directory's mtime under concurrent readers (the test suite's user-cache check saw that)."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    atomic_write_text(path, text)


def _write_json(path: Path, obj: Any) -> None:
    _write_text(path, json.dumps(obj, indent=2, default=str))


def truncated_rows(bb: Any, task: Task, split: str, max_length: int) -> tuple[int, int]:
    """``(rows cut, rows)`` of a split: inputs longer than ``max_length`` tokens are truncated.

    Why: truncation is silent in the tokenizer; a user with long documents should see how much
    of the data the heads and the environments never read (``prepare`` prints it).
    """
    texts, pairs, _ = texts_of(task, split)
    counts = bb.token_counts(texts, pairs) if texts else []
    limit = bb.token_limit(max_length)
    return sum(n > limit for n in counts), len(texts)


def accuracy_table(cache: Any) -> list[dict[str, float]]:
    """Per layer: accuracy of its head and mean cumulative FLOPs fraction when exiting there."""
    acc = cache.correct.mean(axis=0)
    frac = cache.cost().mean(axis=0)
    return [{"layer": i + 1, "accuracy": float(acc[i]), "cum_flops_fraction": float(frac[i])}
            for i in range(cache.num_layers)]


def format_table(table: dict[str, list[dict[str, float]]]) -> str:
    """Markdown: one column of accuracies per split, FLOPs fraction of the first split."""
    splits = list(table)
    lines = ["| layer | " + " | ".join(f"acc {s}" for s in splits) + " | FLOPs fraction |",
             "|---:|" + "---:|" * (len(splits) + 1)]
    for i, row in enumerate(table[splits[0]]):
        accs = " | ".join(f"{table[s][i]['accuracy']:.4f}" for s in splits)
        lines.append(f"| {row['layer']} | {accs} | {row['cum_flops_fraction']:.3f} |")
    return "\n".join(lines)


def prepare(
    config: PrepareConfig | None = None,
    *,
    splits: tuple[str, ...] = SPLITS,
    progress: bool = True,
    verbose: bool = True,
    force: bool = False,
    require: dict[str, str] | None = None,
    **overrides: Any,
) -> PreparedTask:
    """Make sure heads and the requested splits' caches exist; build what is missing.

    Args:
        config: a :class:`PrepareConfig`; keyword ``overrides`` replace its fields (so
            ``prepare(task="trec6", heads="two-stage")`` works without building one).
        splits: caches to build or verify (``()`` only prepares the heads).
        progress: show tqdm bars.
        verbose: print where things went and the per-layer accuracy table.
        force: retrain the heads and rebuild the caches even if valid ones exist.
        require: ``backbone_fingerprint`` / ``heads_fingerprint`` the backbone and heads must
            have (a run's record): checked before heads are trained (a frozen backbone) and
            before any cache is built, so nothing is rebuilt from other models.

    Raises:
        PreparedMismatch: the backbone or heads differ from ``require``.
    """
    from exitgym.backbones.cache import (
        CacheError,
        assemble_cache,
        compute_pooled,
        load_cache,
        save_cache,
    )
    from exitgym.backbones.heads import ExitHeads, save_backbone_weights
    from exitgym.backbones.lazy import LazyBackbone
    from exitgym.data.config import refuse_decoder

    config = _resolve(config, overrides)
    refuse_decoder(config.backbone)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown splits {unknown}; allowed: {list(SPLITS)}")
    timings: dict[str, float] = {}
    tic = time.perf_counter()
    task = load_task(config.task, seed=config.seed, max_samples=config.max_samples,
                     **config.column_options())
    # loaded only to train heads or build a cache: existing caches are found by fingerprints
    lazy = LazyBackbone(config.backbone, device=config.device)
    directory = prepared_dir(config, task)
    timings["load"] = time.perf_counter() - tic
    pooled: dict[str, Any] = {}
    have_heads = (directory / "heads.json").is_file() and (
        config.heads not in FINETUNED or (directory / BACKBONE_WEIGHTS).is_file())
    tic = time.perf_counter()
    if have_heads and not force:
        heads = ExitHeads.load(directory)
        if config.heads in FINETUNED:
            lazy.use_weights(directory / BACKBONE_WEIGHTS)
    else:  # a label typo of a local file would become a class of the heads: refused first
        check_labels(config.task, allow=config.allow_suspect_labels, **config.column_options())
        if config.heads not in FINETUNED:  # the backbone the heads would be trained on
            _require(require, backbone_fingerprint=lazy.fingerprint())
        bb = lazy.get()
        when = "again (forced)" if have_heads else "for the first time"
        print(f"exitgym: preparing {config.task} x {config.backbone} ({config.heads} heads) "
              f"{when}: training the exit heads, then caching every layer's outputs. "
              f"This runs once (minutes on a CPU; longer for large data or fine-tuning "
              f"recipes) and is reused from {cache_dir()}", file=sys.stderr)
        directory.mkdir(parents=True, exist_ok=True)
        if force:
            shutil.rmtree(directory / CHECKPOINT_DIR, ignore_errors=True)
        heads, history = train_heads(config, task, bb, pooled, directory, progress)
        if config.heads in FINETUNED:
            save_backbone_weights(bb.model, directory / BACKBONE_WEIGHTS)
            lazy.use_weights(directory / BACKBONE_WEIGHTS, load=False)  # they are bb's now
            lazy.remember()
        _write_json(directory / "history.json", history)
        _write_json(directory / "prepare_config.json", {
            "config": asdict(config), "backbone_fingerprint": bb.fingerprint(),
            "heads_fingerprint": heads.fingerprint(), "task_description": task.description,
            "prepared_on": device_record(bb.device)})
        heads.save(directory)  # last: heads.json marks the directory complete
        shutil.rmtree(directory / CHECKPOINT_DIR, ignore_errors=True)
    timings["heads"] = time.perf_counter() - tic
    _require(require, backbone_fingerprint=lazy.fingerprint(),
             heads_fingerprint=heads.fingerprint())
    tic = time.perf_counter()
    cache_paths, table = {}, {}
    for split in splits:
        expect = {"backbone_fingerprint": lazy.fingerprint(),
                  "heads_fingerprint": heads.fingerprint(),
                  "data_fingerprint": data_fingerprint(task, split),
                  "max_length": config.max_length, **config.column_options()}
        path = cache_dir() / "caches" / f"{_slug(config.task)}__{split}-{_hash(expect)}"
        cache = None
        if not force:
            try:
                cache = load_cache(path, expect=expect)
            except CacheError:
                cache = None  # missing, damaged or stale: rebuild below
        if cache is None:
            texts, pairs, labels = texts_of(task, split)
            if split not in pooled:
                pooled[split] = compute_pooled(
                    lazy.get(), texts, pairs, max_length=config.max_length,
                    batch_size=config.batch_size, progress=progress, desc=f"{split}: pooled states")
            meta = {**expect, "task": config.task, "split": split, "heads_mode": config.heads,
                    "backbone": config.backbone, "prepared_dir": str(directory),
                    "prepared_on": device_record(lazy.get().device)}
            built = assemble_cache(lazy.get(), heads, *pooled[split], labels,
                                   label_names=task.label_names, texts=texts, meta=meta)
            save_cache(built, path)
            cache = load_cache(path, expect=expect, verify=False)
        cache_paths[split], table[split] = path, accuracy_table(cache)
    timings["caches"] = time.perf_counter() - tic
    if table:
        _write_json(directory / f"accuracy_{'_'.join(table)}.json", table)
        _write_text(directory / f"accuracy_{'_'.join(table)}.md", format_table(table) + "\n")
    if verbose:
        print(f"prepared {config.task} x {config.backbone} ({config.heads} heads) in {directory}")
        print("  rows: " + ", ".join(f"{s} {len(task.split(s))}" for s in SPLITS) + (
            f" ({task.dropped_rows} repeated rows or texts with conflicting labels dropped)"
            if task.dropped_rows else ""))
        for split, path in cache_paths.items():
            print(f"  cache {split}: {path}")
        bb = lazy.get() if cache_paths else None
        if bb is not None and bb.tokenizer is not None:
            cut = {s: truncated_rows(bb, task, s, config.max_length) for s in cache_paths}
            limit = bb.token_limit(config.max_length)
            why = "" if limit == config.max_length else f" (the backbone's limit; max_length=" \
                f"{config.max_length})"
            print(f"  truncated at {limit} tokens{why}: " + ", ".join(
                f"{s} {n} of {total} rows" for s, (n, total) in cut.items()))
        if table:
            print(format_table(table))
    return PreparedTask(config, directory, cache_paths, table, timings)


def _resolve(config: PrepareConfig | None, overrides: dict[str, Any]) -> PrepareConfig:
    known = {f.name for f in fields(PrepareConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"unknown prepare options {sorted(unknown)}; allowed: {sorted(known)}")
    base = asdict(config) if config is not None else {}
    return PrepareConfig(**{**base, **overrides})


_MEMO: dict[tuple[Any, ...], Any] = {}


def get_cache(
    task: str = "rt-polarity", backbone: str = "minilm-l6", split: str = "train",
    heads: str = DEFAULT_RECIPE, *, progress: bool = True, require: dict[str, str] | None = None,
    **options: Any,
) -> Any:
    """The :class:`LayerCache` environments read; prepares heads and the cache on first use.

    Fingerprints and checksums are verified each time a process first asks; a stale or damaged
    cache is rebuilt, unless its backbone or heads differ from ``require`` (see :func:`prepare`).
    Later calls in the same process return the same (read-only) object.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {list(SPLITS)}")
    config = _resolve(None, {"task": task, "backbone": backbone, "heads": heads, **options})
    key = (str(cache_dir()), tuple(sorted(config.key().items())), split)
    if key not in _MEMO:
        from exitgym.backbones.cache import load_cache

        prepared = prepare(config, splits=(split,), progress=progress, verbose=False,
                           require=require)
        _MEMO[key] = load_cache(prepared.cache_paths[split], verify=False)
    return _MEMO[key]


def clear_cache_memo() -> None:
    """Forget caches handed out by :func:`get_cache` in this process (the next call re-verifies)."""
    _MEMO.clear()


def load_heads(task: str = "rt-polarity", backbone: str = "minilm-l6", heads: str = DEFAULT_RECIPE,
               **options: Any) -> Any:
    """Prepared :class:`ExitHeads` (trained first if missing), for live environments."""
    from exitgym.backbones.heads import ExitHeads

    prepared = prepare(task=task, backbone=backbone, heads=heads, splits=(), verbose=False,
                       **options)
    return ExitHeads.load(prepared.directory)


load_prepared_heads = load_heads


def load_prepared_backbone(task: str = "rt-polarity", backbone: str = "minilm-l6",
                           heads: str = DEFAULT_RECIPE, **options: Any) -> Any:
    """The Backbone the prepared heads belong to (fine-tuned weights for fine-tuned recipes)."""
    from exitgym.backbones.heads import load_backbone_weights
    from exitgym.backbones.registry import load_backbone

    prepared = prepare(task=task, backbone=backbone, heads=heads, splits=(), verbose=False,
                       **options)
    bb = load_backbone(backbone)
    if prepared.backbone_weights is not None:
        load_backbone_weights(bb.model, prepared.backbone_weights)
        bb.invalidate_fingerprint()
    return bb
