"""Checkpoints of a run, and the files of a trainer's: ``trainer.safetensors`` (tensors) +
``trainer.json`` (the rest).

A run's checkpoint is a directory ``checkpoint-<step>`` written atomically and named by
``run_state.json`` with its files' checksums (:func:`save_checkpoint`, :func:`latest_checkpoint`).

SB3 runs write the same two files (:mod:`exitgym.agents.sb3_resume`). What goes in them is the
trainer's own business (:class:`~exitgym.agents.base.Trainer`:
``state_dict`` / ``load_state_dict`` hold the policy, Adam and every random generator), so a
resumed run ends bit-identical to an uninterrupted one; this module only moves that state to and
from disk, as safetensors plus JSON so nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exitgym.agents.base import Trainer
from exitgym.experiments.runs import RunDir, RunError, verify_file
from exitgym.utils.atomic import sha256_file

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
    """A ``write(tmp_dir)`` for :func:`save_checkpoint` of the
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


def save_checkpoint(run: RunDir, step: int, write: Callable[[Path], None], keep: int = 1) -> Path:
    """Write a checkpoint directory atomically and point ``run_state.json`` at it.

    ``write(tmp_dir)`` fills a temporary directory, which is renamed to ``checkpoint-<step>``;
    only then does the state file name it, so a kill at any moment leaves the previous checkpoint
    in force. Older checkpoints beyond ``keep`` are deleted afterwards.
    """
    name = f"checkpoint-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=run.path, prefix=f".{name}.tmp-"))
    try:
        write(tmp)
        sums = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        target = run.path / name
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    run.update_state(checkpoint=name, checkpoint_step=step, checkpoint_sha256=sums)
    old = sorted(p for p in run.path.glob("checkpoint-*") if p.is_dir() and p.name != name)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return target


def latest_checkpoint(run: RunDir) -> tuple[Path, int] | None:
    """The checkpoint ``run_state.json`` names, with its step (None when there is none)."""
    state = run.state
    name = state.get("checkpoint")
    if not name:
        return None
    path = run.path / name
    if not path.is_dir():
        raise RunError(f"{run.state_path} names checkpoint {name!r} but {path} is missing")
    for file_name, expected in state.get("checkpoint_sha256", {}).items():
        verify_file(path / file_name, expected)
    return path, int(state.get("checkpoint_step", 0))
