"""Checkpoint files of a trainer: ``trainer.safetensors`` (tensors) + ``trainer.json`` (the rest).

SB3 runs write the same two files (:mod:`exitgym.agents.sb3_resume`). What goes in them is the
trainer's own business (:class:`~exitgym.agents.base.Trainer`:
``state_dict`` / ``load_state_dict`` hold the policy, Adam and every random generator), so a
resumed run ends bit-identical to an uninterrupted one; this module only moves that state to and
from disk, as safetensors plus JSON so nothing is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exitgym.agents.base import Trainer

TENSORS_FILE = "trainer.safetensors"
"""The trainer's tensors inside a checkpoint directory."""
META_FILE = "trainer.json"
"""The trainer's counters and generator states inside a checkpoint directory."""


def read_state(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(tensors, meta)`` of a checkpoint directory written by :func:`state_writer`."""
    from safetensors.torch import load_file

    return load_file(str(path / TENSORS_FILE)), json.loads((path / META_FILE).read_text())


def restore_trainer(agent: Trainer, path: Path) -> None:
    """Put a checkpoint written by :func:`trainer_writer` back into ``agent`` (no pickle)."""
    agent.load_state_dict(*read_state(path))


def state_writer(state: Callable[[], tuple[dict[str, Any], dict[str, Any]]]
                 ) -> Callable[[Path], None]:
    """A ``write(tmp_dir)`` for :func:`~exitgym.experiments.runs.save_checkpoint` of the
    ``(tensors, meta)`` that ``state()`` returns (a trainer's, or an SB3 model's)."""
    def write(tmp: Path) -> None:
        from safetensors.torch import save_file

        tensors, meta = state()
        save_file(tensors, str(tmp / TENSORS_FILE))
        (tmp / META_FILE).write_text(json.dumps(meta))

    return write


def trainer_writer(agent: Trainer) -> Callable[[Path], None]:
    """A ``write(tmp_dir)`` of a trainer's checkpoint."""
    return state_writer(agent.state_dict)
