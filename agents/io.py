"""Saving and loading small torch modules as safetensors + a JSON sidecar (atomic, no pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from exitgym.utils.atomic import atomic_write, write_json


def save_module(module: nn.Module, directory: Path, stem: str, meta: dict[str, Any]) -> Path:
    """Write ``<stem>.safetensors`` (weights) and ``<stem>.json`` (``meta``) into ``directory``."""
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    atomic_write(directory / f"{stem}.safetensors", lambda tmp: save_file(state, tmp))
    write_json(directory / f"{stem}.json", meta)
    return directory


def load_module_state(directory: Path, stem: str) -> dict[str, torch.Tensor]:
    """Read ``<stem>.safetensors`` written by :func:`save_module`."""
    path = Path(directory) / f"{stem}.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"no saved weights at {path}")
    return load_file(str(path))
