"""Replacing a directory only once its successor is whole: ``--overwrite`` without loss.

An ``--overwrite`` run is written in a hidden sibling of its target, ``.<name>.new-<pid>``, and
swapped in when it completes (:func:`replace_directory`): the old run is renamed aside to
``.<name>.old-<pid>``, the new one renamed in, the old one deleted. Until then the target is
untouched, so a failure, Ctrl-C or kill of the new run leaves the old one as it was. Siblings
left by killed processes are cleared by the next run written to the same target
(:func:`clear_abandoned`).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from exitgym.utils.processes import process_alive, this_process

STAGING = re.compile(r"\.(?P<name>.+)\.(?P<kind>new|old)-(?P<pid>\d+)")
"""Hidden siblings of a target: the new directory being written, the old one set aside."""


def staging_dir(target: str | os.PathLike[str]) -> Path:
    """Where this process writes the successor of ``target``."""
    target = Path(target)
    return target.with_name(f".{target.name}.new-{os.getpid()}")


def new_staging_dir(target: str | os.PathLike[str]) -> Path:
    """An empty staging directory for ``target`` (siblings abandoned by dead processes, and an
    earlier attempt of this one, removed first)."""
    clear_abandoned(target)
    stage = staging_dir(target)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    return stage


@contextmanager
def staged(target: str | os.PathLike[str], replace: bool) -> Iterator[Path]:
    """The directory to write ``target``'s content into: ``target`` itself, or with ``replace``
    a staging sibling that takes its place when the block ends and is deleted if it raises."""
    if not replace:
        yield Path(target)
        return
    stage = new_staging_dir(target)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    replace_directory(stage, target)


def staged_target(path: str | os.PathLike[str]) -> Path | None:
    """The target that staging directory ``path`` is to replace (None: not a staging dir)."""
    path = Path(path)
    match = STAGING.fullmatch(path.name)
    return path.with_name(match["name"]) if match and match["kind"] == "new" else None


def published_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as named once every staging directory it lies in has replaced its target (what
    messages and reports show)."""
    return Path(*[m["name"] if (m := STAGING.fullmatch(part)) else part
                  for part in Path(path).parts])


def clear_abandoned(target: str | os.PathLike[str]) -> None:
    """Delete hidden siblings of ``target`` whose process (on this host) is gone; an old
    directory set aside by a swap killed half-way is put back instead."""
    target = Path(target)
    host = this_process()["host"]
    for sibling in target.parent.glob(f".{glob.escape(target.name)}.*-*"):
        match = STAGING.fullmatch(sibling.name)
        if (not match or match["name"] != target.name or not sibling.is_dir()
                or process_alive(int(match["pid"]), host) is not False):
            continue
        if match["kind"] == "old" and not target.exists():
            os.replace(sibling, target)
        else:
            shutil.rmtree(sibling, ignore_errors=True)


def replace_directory(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Put directory ``new`` in place of ``target`` (a sibling): old aside, new in, old deleted.

    Why: ``--overwrite`` must never leave less than it found. The new run is written beside the
    old one and swapped in only once complete; Ctrl-C or SIGTERM are held back between the two
    renames (they act right after), so ``target`` is always one whole run, the old or the new.
    """
    import signal

    new, target = Path(new), Path(target)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    held = {signal.SIGINT, signal.SIGTERM}
    block = hasattr(signal, "pthread_sigmask")
    if block:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        if target.exists():
            os.replace(target, old)
        try:
            os.replace(new, target)
        except OSError:
            if old.exists():
                os.replace(old, target)  # put the old run back
            raise
    finally:
        if block:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
    shutil.rmtree(old, ignore_errors=True)
    return target
