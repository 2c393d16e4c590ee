"""sha256 of a model: what a cache, a prepared head or a converted checkpoint was built from.

Computing it needs the loaded model (~5 s for MiniLM on a CPU), so the fingerprint of a model
loaded from files is also remembered under a key hashed from those files (:func:`files_key`):
``prepare`` finds an existing cache without loading the backbone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


def model_fingerprint(model: nn.Module, tag: str) -> str:
    """sha256 over the config (minus fields that vary with no change of the model), a tag and
    every weight, so a changed config, a different use (``tag``) or changed weights rebuild."""
    digest = hashlib.sha256()
    config = model.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "architectures"):
        config.pop(volatile, None)
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(tag.encode())
    update_with_tensors(digest, sorted(model.state_dict().items()))
    return digest.hexdigest()


def update_with_tensors(digest: Any, named: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Feed ``digest`` each label and the exact bytes of its tensor, in order: the one way every
    fingerprint of weights (models, exit heads, distilled maps) hashes them."""
    for label, tensor in named:
        digest.update(label.encode())
        tensor = tensor.detach().cpu().contiguous()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the same bits as int16
            tensor = tensor.view(torch.int16)
        digest.update(tensor.numpy().tobytes())


FINGERPRINTS_DIR = "fingerprints"
"""Folder of the exitgym cache holding remembered model fingerprints (one JSON file per key)."""


def files_key(paths: Sequence[Path], tag: str) -> str:
    """sha256 over the bytes of the files a model is loaded from, its tag and the versions of the
    libraries that turn files into a model (a newer transformers may fill other config fields).

    Two loads with the same key build the same model, so its :func:`model_fingerprint` can be
    remembered under the key and reused without loading the weights (hashing a file is ~20 times
    faster than loading a model from it).
    """
    from importlib import metadata

    digest = hashlib.sha256(tag.encode())
    for lib in ("transformers", "torch"):
        digest.update(f"{lib}=={metadata.version(lib)}".encode())
    for path in paths:
        digest.update(f"\0{path.name}\0".encode())
        with Path(path).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def remembered_fingerprint(key: str) -> str | None:
    """The fingerprint stored for ``key`` by :func:`remember_fingerprint` (None: none)."""
    from exitgym.utils.paths import cache_dir

    path = cache_dir() / FINGERPRINTS_DIR / f"{key}.json"
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["fingerprint"])
    except (ValueError, KeyError):
        return None  # damaged: the model is loaded and the entry written again


def remember_fingerprint(key: str, fingerprint: str) -> None:
    """Store a loaded model's fingerprint under the :func:`files_key` of its files."""
    from exitgym.utils.atomic import write_json
    from exitgym.utils.paths import cache_dir

    write_json(cache_dir() / FINGERPRINTS_DIR / f"{key}.json", {"fingerprint": fingerprint})
