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


def optimizer_tensors(optimizer: torch.optim.Optimizer,
                      prefix: str = "optim.") -> tuple[dict[str, torch.Tensor], list[Any]]:
    """An optimizer's state as ``(tensors, param_groups)``: ``<prefix><param>.<slot>`` tensors
    (Adam's moments and step, RMSprop's averages) for safetensors, the groups for JSON."""
    opt = optimizer.state_dict()
    tensors = {f"{prefix}{idx}.{key}": value.detach().contiguous().reshape(value.shape)
               for idx, slots in opt["state"].items() for key, value in slots.items()}
    return tensors, opt["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                   param_groups: list[Any], prefix: str = "optim.") -> None:
    """Put back a state returned by :func:`optimizer_tensors` (other keys are ignored)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, name = key[len(prefix):].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
