"""Optimizer and random-generator state as flat tensors + JSON, for checkpoints without pickle.

``torch.save`` of an optimizer pickles; a resumable trainer instead stores the tensors in
safetensors and the counters / hyper-parameters in JSON. These helpers do the flattening both
ways, so every trainer's checkpoint has the same layout.
"""

from __future__ import annotations

from typing import Any


def optimizer_tensors(optimizer: Any, prefix: str = "optim.") -> tuple[dict[str, Any], list[Any]]:
    """``({prefix}{param index}.{slot}: tensor}, param_groups)`` of a torch optimizer."""
    state = optimizer.state_dict()
    tensors = {f"{prefix}{idx}.{key}": value.detach().contiguous().reshape(value.shape)
               for idx, slots in state["state"].items() for key, value in slots.items()}
    return tensors, state["param_groups"]


def load_optimizer_tensors(optimizer: Any, tensors: dict[str, Any], param_groups: list[Any],
                           prefix: str = "optim.") -> None:
    """Inverse of :func:`optimizer_tensors` (other keys in ``tensors`` are ignored)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, name = key[len(prefix):].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})
