"""Where torch runs: ``device`` / ``dtype`` specs resolved in one place, and recorded.

Every command, env and function that runs a backbone takes a ``device`` string (default
``"auto"``) and resolves it here, so ``auto``, ``cpu``, ``cuda`` and ``cuda:N`` mean the same
everywhere and a wrong one is refused with the same message. Torch is imported only when called:
``import exitgym`` and the command line's flag parsing stay free of it.
"""

from __future__ import annotations

import platform
import re
from typing import Any

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
"""What a ``device`` spec may be (``cuda:N``: the N-th visible GPU, from 0)."""
DTYPES = ("auto", "float32", "bfloat16", "float16")
"""What a ``dtype`` spec may be."""


def check_device(spec: str) -> str:
    """``spec`` when it has the form of :data:`DEVICES` (not whether such a device exists).

    Why separate from :func:`resolve_device`: configs check their fields when built, on machines
    that need not have the device (a run recorded on a GPU is read on a laptop).
    """
    if not isinstance(spec, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec.strip()):
        raise ValueError(f"unknown device {spec!r}; allowed: {', '.join(DEVICES)}")
    return spec.strip()


def check_dtype(spec: str) -> str:
    """``spec`` when it is one of :data:`DTYPES`."""
    if spec not in DTYPES:
        raise ValueError(f"unknown dtype {spec!r}; allowed: {', '.join(DTYPES)}")
    return spec


def resolve_device(spec: str = "auto") -> Any:
    """The ``torch.device`` of ``spec``: ``auto`` is ``cuda:0`` when CUDA is available, else cpu.

    Raises:
        ValueError: ``spec`` is not one of :data:`DEVICES`, names CUDA where this torch has none
            (the message says which devices are allowed and why), or a GPU index out of range.
    """
    import torch

    spec = check_device(spec)
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = ("this torch build has no CUDA (torch.version.cuda is None)"
               if torch.version.cuda is None else "no CUDA device is visible")
        raise ValueError(f"device {spec!r} asked for, but {why}; use device 'cpu' or 'auto' "
                         f"(allowed: {', '.join(DEVICES)})")
    index = 0 if spec in ("auto", "cuda") else int(spec.split(":")[1])
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device {spec!r} asked for, but only {count} CUDA device(s) are "
                         f"visible: cuda:0..cuda:{count - 1}")
    return torch.device("cuda", index)


def resolve_dtype(spec: str, device: Any) -> Any:
    """The ``torch.dtype`` of ``spec`` on ``device`` (a ``torch.device``).

    ``auto`` is bfloat16 on a CUDA device that supports it (what decoders are served in: half the
    memory traffic, and the range of float32) and float32 otherwise; on a CPU ``auto`` stays
    float32, since CPU bfloat16 kernels are slower than float32 ones on most machines and results
    then match the float32 caches. An explicit dtype is used as given.
    """
    import torch

    spec = check_dtype(spec)
    if spec != "auto":
        return getattr(torch, spec)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def device_record(device: Any) -> dict[str, Any]:
    """What ran where, for ``config.json`` / prepared meta: the device, its name, the versions."""
    import torch

    device = torch.device(device)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine() or "cpu")
    return {"device": str(device), "name": name, "torch": torch.__version__,
            "cuda": torch.version.cuda}


def autocast(device: Any) -> Any:
    """bfloat16 autocast on CUDA (fine-tuning's mixed precision), a no-op context elsewhere.

    Why CUDA only: CPU autocast would change the numbers every CPU cache and test was built with.
    """
    import torch

    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def place(modules: Any, device: str = "auto", dtype: str = "float32") -> tuple[Any, Any]:
    """Move torch ``modules`` (one ``nn.Module``, or a sequence; None entries are skipped) to the
    device and floating dtype of the specs, and return ``(torch.device, torch.dtype)``.

    Why in place: the environments and ``generate`` share one loaded model between their
    workers, and a second copy of a decoder on a GPU is memory that nothing gains from. A model
    already there is left untouched (``Module.to`` is then a no-op), so the CPU default changes
    nothing. Only floating parameters and buffers are cast (``Module.to`` leaves integer ones).

    Raises:
        ValueError: a spec is not one of :data:`DEVICES` / :data:`DTYPES`, or CUDA is asked for
            where there is none (before anything moves).
    """
    target = resolve_device(device)
    kind = resolve_dtype(dtype, target)
    items = modules if isinstance(modules, (list, tuple)) else [modules]
    for module in items:
        if module is not None:
            module.to(device=target, dtype=kind)
    return target, kind
