"""The bench's ``gpu`` section: what runs where on a CUDA device (issue 24).

Without CUDA it records ``{"skipped": "no CUDA device"}`` at once, so the CPU bench keeps its
time and its figures. With CUDA it records the device (name, torch and CUDA versions); the timed
measurements the issue asks for (cold prepare, fine-tune and generate speed, realised fraction of
``infer`` at batch 1 / 32 / 256) are not written yet: no GPU was at hand to check them against.
"""

from __future__ import annotations

from typing import Any

SKIPPED = "no CUDA device"
"""What the section records when this machine has no CUDA device."""


def gpu_section(cfg: Any) -> dict[str, Any]:
    """The ``gpu`` entry of ``bench.json``."""
    import torch

    from exitgym.utils.devices import device_record, resolve_device

    if not torch.cuda.is_available():
        return {"skipped": SKIPPED}
    return {"device": device_record(resolve_device("cuda")),
            "measured": [], "note": "device recorded; GPU timings not implemented yet"}


def gpu_markdown(result: dict[str, Any]) -> list[str]:
    """The ``bench.md`` part of the section: the device, or why nothing was measured."""
    entry = result["gpu"]
    if "skipped" in entry:
        return ["", "## GPU", "", f"Skipped: {entry['skipped']} on this machine; no GPU "
                "figures were measured."]
    device = entry["device"]
    return ["", "## GPU", "", f"{device['name']} ({device['device']}), torch {device['torch']}, "
            f"CUDA {device['cuda']}. {entry['note']}."]
