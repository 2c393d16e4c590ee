"""Computing, storing and verifying per-layer caches on disk.

A cache directory holds one ``.npy`` file per :class:`LayerCache` array (memory-mapped on load,
``allow_pickle=False``), ``texts.json`` and ``meta.json``. ``meta.json`` records the fingerprints
of the backbone and heads it was built from, every array's shape, dtype and sha256, and is written
last: a directory is complete exactly when it has one. Directories are built under a temporary
name and moved into place with ``os.replace``, so readers never see half a cache.

Policy on damage: :func:`load_cache` raises :class:`CacheError` naming what is wrong (missing
file, truncated array, wrong shape, checksum or fingerprint mismatch); the higher-level
``exitgym.data.prepare.get_cache`` catches it and rebuilds, so a user of ``get_cache`` never reads a
stale or corrupted cache and never has to delete one by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from exitgym.backbones.heads import ExitHeads
from exitgym.backbones.layer_cache import LayerCache
from exitgym.utils.atomic import sha256_file

CACHE_FORMAT_VERSION = 1
META_FILE = "meta.json"
TEXTS_FILE = "texts.json"
ARRAY_DTYPES: dict[str, np.dtype] = {
    "pooled": np.dtype(np.float32),
    "logits": np.dtype(np.float32),
    "labels": np.dtype(np.int64),
    "lengths": np.dtype(np.int64),
    "flops_embed": np.dtype(np.float64),
    "flops_layer": np.dtype(np.float64),
}
"""The arrays of a stored cache and their dtypes (all fields of :class:`LayerCache`)."""


class CacheError(RuntimeError):
    """A stored cache is incomplete, corrupted or was built from other weights."""


@torch.inference_mode()
def compute_pooled(
    backbone: Any,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    *,
    max_length: int = 128,
    batch_size: int = 128,
    desc: str = "pooled states",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled state after every layer for every text, and each text's real token count.

    Texts are tokenized once, sorted by length and batched so padding is minimal; results are
    written back in the original order. Returns ``pooled [N, L, H] float32`` and
    ``lengths [N] int64``.
    """
    if len(texts) == 0:
        raise ValueError("compute_pooled needs at least one text")
    encoded = backbone.tokenize(list(texts), None if text_pairs is None else list(text_pairs),
                                max_length=max_length)
    lengths = encoded["attention_mask"].sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    n, num_layers = len(texts), backbone.num_layers
    pooled = np.empty((n, num_layers, backbone.hidden_size), dtype=np.float32)
    was_training = backbone.model.training
    backbone.model.eval()
    with tqdm(total=n, desc=desc, unit="text", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            width = int(lengths[idx].max())
            batch = {k: v[idx, :width] for k, v in encoded.items()}
            rows = idx.numpy()
            for i, vec in enumerate(backbone.forward_pooled(batch)):
                pooled[rows, i] = vec.float().cpu().numpy()
            bar.update(len(idx))
    backbone.model.train(was_training)
    return pooled, lengths.numpy().astype(np.int64)


@torch.inference_mode()
def head_logits(heads: ExitHeads, pooled: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Logits ``[N, L, C]`` of every head on stored pooled states."""
    heads.eval()
    out = [heads(torch.from_numpy(np.ascontiguousarray(pooled[i:i + batch_size]))).numpy()
           for i in range(0, len(pooled), batch_size)]
    return np.concatenate(out).astype(np.float32)


def flops_arrays(flops_model: Any, lengths: np.ndarray, num_layers: int) -> tuple[np.ndarray, ...]:
    """Per-sample embedding FLOPs ``[N]`` and per-layer FLOPs ``[N, L]`` at the real lengths."""
    n = np.asarray(lengths, dtype=np.float64)
    embed = np.asarray(flops_model.embeddings(n), dtype=np.float64) * np.ones_like(n)
    layer = np.asarray(flops_model.layer(n), dtype=np.float64)
    return embed, np.repeat(layer[:, None], num_layers, axis=1)


def assemble_cache(
    backbone: Any,
    heads: ExitHeads,
    pooled: np.ndarray,
    lengths: np.ndarray,
    labels: np.ndarray,
    *,
    label_names: Sequence[str] = (),
    texts: Sequence[str] | None = None,
    meta: dict[str, Any] | None = None,
) -> LayerCache:
    """Build a :class:`LayerCache` from pooled states: head logits and FLOPs added here."""
    flops_embed, flops_layer = flops_arrays(backbone.flops, lengths, backbone.num_layers)
    meta = dict(meta or {})
    meta.setdefault("backbone_fingerprint", backbone.fingerprint())
    meta.setdefault("heads_fingerprint", heads.fingerprint())
    return LayerCache(
        pooled=np.ascontiguousarray(pooled, dtype=np.float32),
        logits=head_logits(heads, pooled),
        labels=np.asarray(labels, dtype=np.int64),
        lengths=np.asarray(lengths, dtype=np.int64),
        flops_embed=flops_embed,
        flops_layer=flops_layer,
        flops_head=heads.flops(backbone.flops),
        label_names=tuple(label_names),
        texts=None if texts is None else tuple(texts),
        meta=meta,
    )


def build_cache(
    backbone: Any,
    heads: ExitHeads,
    texts: Sequence[str],
    labels: np.ndarray,
    text_pairs: Sequence[str] | None = None,
    *,
    label_names: Sequence[str] = (),
    max_length: int = 128,
    batch_size: int = 128,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
) -> LayerCache:
    """Run the backbone over ``texts`` and every head: the full in-memory cache."""
    pooled, lengths = compute_pooled(backbone, texts, text_pairs, max_length=max_length,
                                     batch_size=batch_size, progress=progress)
    return assemble_cache(backbone, heads, pooled, lengths, labels, label_names=label_names,
                          texts=texts, meta=meta)


def save_cache(cache: LayerCache, path: str | os.PathLike[str]) -> Path:
    """Write ``cache`` to directory ``path`` atomically (replacing any previous content)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a cache is as readable as any other file
    try:
        arrays = {}
        for name, dtype in ARRAY_DTYPES.items():
            value = np.ascontiguousarray(getattr(cache, name), dtype=dtype)
            np.save(tmp / f"{name}.npy", value, allow_pickle=False)
            arrays[name] = {"shape": list(value.shape), "dtype": dtype.str,
                            "sha256": sha256_file(tmp / f"{name}.npy")}
        texts_sha = None
        if cache.texts is not None:
            payload = json.dumps(list(cache.texts), ensure_ascii=False).encode()
            (tmp / TEXTS_FILE).write_bytes(payload)
            texts_sha = hashlib.sha256(payload).hexdigest()
        meta = {
            **cache.meta,
            "format_version": CACHE_FORMAT_VERSION,
            "num_samples": cache.num_samples,
            "num_layers": cache.num_layers,
            "flops_head": cache.flops_head,
            "label_names": list(cache.label_names),
            "arrays": arrays,
            "texts_sha256": texts_sha,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))  # completion marker
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_cache(
    path: str | os.PathLike[str],
    *,
    expect: dict[str, Any] | None = None,
    verify: bool = True,
) -> LayerCache:
    """Load a stored cache with memory-mapped arrays, checking it is complete and intact.

    Args:
        path: the cache directory.
        expect: meta entries that must match (e.g. ``backbone_fingerprint``); a mismatch means the
            cache was built from other weights or data and is refused.
        verify: also check each array's sha256 (reads every byte once; about a second per few
            hundred MB). Shapes and file sizes are always checked.

    Raises:
        CacheError: naming the first problem found.
    """
    root = Path(path)
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise CacheError(f"{root}: no {META_FILE}; the cache is missing or its build never "
                         f"finished (delete the folder or call get_cache to rebuild)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise CacheError(f"{meta_path} is not valid JSON: {err}") from err
    if meta.get("format_version") != CACHE_FORMAT_VERSION:
        raise CacheError(f"{root}: format version {meta.get('format_version')}, this exitgym "
                         f"reads {CACHE_FORMAT_VERSION}")
    for key, want in (expect or {}).items():
        if meta.get(key) != want:
            raise CacheError(f"{root}: {key} is {meta.get(key)!r}, expected {want!r} (built "
                             f"from other weights or data)")
    arrays = {name: _load_array(root, name, meta["arrays"].get(name, {}), verify)
              for name in ARRAY_DTYPES}
    texts = None
    if meta.get("texts_sha256") is not None:
        payload = _read_or_fail(root / TEXTS_FILE)
        if verify and hashlib.sha256(payload).hexdigest() != meta["texts_sha256"]:
            raise CacheError(f"{root / TEXTS_FILE}: checksum mismatch (file corrupted)")
        texts = tuple(json.loads(payload.decode()))
    stored = {k: v for k, v in meta.items() if k not in ("arrays", "texts_sha256")}
    return LayerCache(**arrays, flops_head=float(meta["flops_head"]),
                      label_names=tuple(meta["label_names"]), texts=texts,
                      meta={**stored, "path": str(root)})


def _read_or_fail(path: Path) -> bytes:
    if not path.is_file():
        raise CacheError(f"{path} is missing")
    return path.read_bytes()


def _load_array(root: Path, name: str, info: dict[str, Any], verify: bool) -> np.ndarray:
    path = root / f"{name}.npy"
    if not path.is_file() or not info:
        raise CacheError(f"{path} or its entry in {META_FILE} is missing")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # truncated header or data
        raise CacheError(f"{path}: unreadable ({err}); the file is truncated or corrupted") from err
    if list(array.shape) != info["shape"] or array.dtype.str != info["dtype"]:
        raise CacheError(f"{path}: shape {list(array.shape)} {array.dtype.str}, meta says "
                         f"{info['shape']} {info['dtype']}")
    if verify and sha256_file(path) != info["sha256"]:
        raise CacheError(f"{path}: checksum mismatch (file corrupted)")
    return array
