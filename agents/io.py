"""Saving and loading small torch modules as safetensors + a JSON sidecar (atomic, no pickle)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def _atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the tmp file over ``path`` (no half-written files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON atomically."""
    _atomic_write_bytes(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2)))


def save_module(module: nn.Module, directory: Path, stem: str, meta: dict[str, Any]) -> Path:
    """Write ``<stem>.safetensors`` (weights) and ``<stem>.json`` (``meta``) into ``directory``."""
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    _atomic_write_bytes(directory / f"{stem}.safetensors", lambda tmp: save_file(state, tmp))
    atomic_write_json(directory / f"{stem}.json", meta)
    return directory


def load_module_state(directory: Path, stem: str) -> dict[str, torch.Tensor]:
    """Read ``<stem>.safetensors`` written by :func:`save_module`."""
    path = Path(directory) / f"{stem}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"no saved weights at {path}")
    return load_file(str(path))
