"""A manifest of a directory tree: every file's sha256, to tell later edits from what was written.

Why: a trajectory file's bytes can change on disk in ways that still parse (one flipped byte in
a text cell changed one character and ``replay --verify`` passed). A run writes the manifest
when it completes; ``replay --verify`` compares the tree with it first and names every file
that differs, is missing or was added.

Nested runs (sub-directories holding their own ``marker`` file, e.g. the training runs of a
comparison) keep their own manifest: the parent lists them by name only, so a file a command
later adds to one of them (``exitgym evaluate``) changes that run's manifest and no other.
Hidden names (temporary files of atomic writes, staging directories) are left out.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from exitgym.utils.atomic import sha256_file

MANIFEST_FILE = "manifest.json"
"""Where a run keeps its manifest."""
MANIFEST_VERSION = 1


def _walk(root: Path, skip: Collection[str], marker: str) -> tuple[list[str], list[str]]:
    """Files (relative, POSIX) outside nested runs, and the nested runs' directories."""
    files: list[str] = []
    nested: list[str] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        rel = here.relative_to(root)
        if rel != Path(".") and marker in names:
            nested.append(rel.as_posix())
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or (rel == Path(".") and name in skip):
                continue
            files.append((rel / name).as_posix())
    return sorted(files), sorted(nested)


def build_manifest(root: str | os.PathLike[str], skip: Collection[str],
                   marker: str) -> dict[str, Any]:
    """``{"version", "files": {path: sha256}, "runs": [nested run dirs]}`` of ``root``.

    Args:
        root: the run directory.
        skip: top-level names left out (the state file, which changes after completion, and
            the manifest itself).
        marker: the file that makes a sub-directory a nested run.
    """
    root = Path(root)
    files, nested = _walk(root, skip, marker)
    return {"version": MANIFEST_VERSION,
            "files": {name: sha256_file(root / name) for name in files}, "runs": nested}


def manifest_differences(root: str | os.PathLike[str], recorded: dict[str, Any],
                         skip: Collection[str], marker: str) -> dict[str, str]:
    """Every way the tree under ``root`` differs from ``recorded``: relative path -> a sentence
    naming the file and how it differs (sorted by path; empty when the tree matches)."""
    root = Path(root)
    files, nested = _walk(root, skip, marker)
    want: dict[str, str] = recorded.get("files", {})
    problems: dict[str, str] = {}
    for name in sorted(set(want) | set(files)):
        if name not in files:
            problems[name] = f"{root / name} is missing (the run wrote it)"
        elif name not in want:
            problems[name] = f"{root / name} is extra (the run did not write it)"
        else:
            got = sha256_file(root / name)
            if got != want[name]:
                problems[name] = (f"{root / name} differs from what the run wrote (sha256 "
                                  f"recorded {want[name][:12]}…, found {got[:12]}…)")
    runs = set(recorded.get("runs", []))
    for name in sorted(runs ^ set(nested)):
        problems[name] = (f"{root / name} is missing (a run of this one)" if name in runs else
                          f"{root / name} is an extra run directory (not written by this run)")
    return {k: problems[k] for k in sorted(problems)}
