"""A complete run's files against its ``manifest.json``: the first check of ``replay --verify``.

Why a manifest as well as the replay: re-executing episodes checks the columns the environment
produces, but bytes can change in ways that still parse and that no replay re-derives (a
flipped byte in a Parquet text cell, an edited report, a deleted evaluation). Every run writes
the sha256 of each of its files when it completes (:meth:`~exitgym.experiments.runs.RunDir.
mark_complete`; :mod:`exitgym.utils.manifest`), and commands that add files to a complete run
record them (``evaluate``, operating points, the demo's report). This module compares a run and
its nested runs (a comparison's training runs) with those records and names every file that
differs, is missing or was added.
"""

from __future__ import annotations

import os
from pathlib import Path

from exitgym.experiments.runs import STATE_FILE, TRAJECTORY_DIR, UNTRACKED, RunDir, RunError
from exitgym.utils.manifest import MANIFEST_FILE, manifest_differences


class ManifestMismatch(RunError):
    """Files of a complete run differ from its ``manifest.json`` (every one is named)."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} file(s) differ from what the run wrote "
                         f"({MANIFEST_FILE}):\n" + "\n".join(f"  {p}" for p in problems.values()))


def manifest_problems(run: RunDir) -> dict[str, str]:
    """Every file (path relative to ``run``) that differs from the manifests of ``run`` and its
    nested runs, with a sentence naming it and how; empty when all match."""
    recorded = run.read_json(MANIFEST_FILE)
    problems = manifest_differences(run.path, recorded, UNTRACKED, STATE_FILE)
    for name in recorded.get("runs", []):
        sub = RunDir(run.path / name)
        if sub.manifest_path.is_file():
            problems.update({f"{name}/{k}": v for k, v in manifest_problems(sub).items()})
        elif sub.path.is_dir():
            problems[f"{name}/{MANIFEST_FILE}"] = f"{sub.manifest_path} is missing"
    return problems


def verify_manifest(path: str | os.PathLike[str]) -> str:
    """Check a run (with its nested runs), or the one trajectory file ``path``, against the
    manifest written when the run completed; return a line saying what was checked.

    Raises:
        ManifestMismatch: naming every file that differs, is missing or was added.
    """
    path = Path(path)
    root, only = ((path.parent.parent, f"{TRAJECTORY_DIR}/{path.name}") if path.is_file()
                  else (path, None))
    run = RunDir(root)
    if not run.manifest_path.is_file():
        return (f"note: {root} has no {MANIFEST_FILE} (not a complete run, or one completed "
                f"before runs recorded it): file checksums not checked")
    problems = manifest_problems(run)
    if only is not None:
        problems = {k: v for k, v in problems.items() if k == only}
    if problems:
        raise ManifestMismatch(problems)
    if only is not None:
        return f"{path} matches {run.manifest_path}"
    return f"every file of {root} matches its manifest"
