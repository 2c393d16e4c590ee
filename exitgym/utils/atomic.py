"""Atomic file writes and file checksums: the one implementation every writer uses.

A run, a cache or a checkpoint killed mid-write must never leave a file that looks complete, so
every file exitgym writes goes to a temporary sibling first and is moved into place with
``os.replace`` (atomic on POSIX within one filesystem). numpy- and torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, then move it into place.

    A crash or kill mid-write leaves only a hidden ``.tmp`` file, never a truncated ``path``; the
    temporary file is removed when ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp files are private; what we write are ordinary files
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback: paths, numpy / torch scalars and arrays as Python, else ``str``."""
    if isinstance(value, Path):
        return str(value)
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    return str(value)


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON types (what it reads back as after a write): tuples become lists."""
    return json.loads(json.dumps(obj, default=json_default))


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    """Atomically write JSON with a final newline (numpy scalars and paths converted)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=json_default) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks so large arrays never sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()

