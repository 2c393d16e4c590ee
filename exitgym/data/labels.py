"""Labels of bring-your-own data that look like mistakes: rare classes and look-alike labels.

Why: every distinct value of the label column becomes a class of the exit heads. A CSV where one
row says ``frseh`` and one ``Rotten`` (next to ``fresh`` and ``rotten``) trained a 4-class head
for a 2-class task, without a word. :func:`check_labels` runs before ``prepare`` trains heads on
a local file or ``save_to_disk`` directory and refuses such labels, naming their rows and the
label each probably meant, unless ``allow_suspect_labels`` is set (``--allow-suspect-labels``):
a silently wrong head is worse than an error.

The rules (:func:`suspect_labels`):

- **look-alike**: two labels equal but for case and surrounding spaces (``Rotten`` /
  ``rotten``), or, both of at least :data:`MIN_EDIT_LENGTH` characters and not numbers, one edit
  apart (a character inserted, deleted or replaced, or two neighbours swapped: ``frseh`` /
  ``fresh``). The label with fewer rows is the suspect, the other the one it probably means.
- **rare**: a class with fewer rows than :func:`rare_below` of the row count: 1 % of the rows,
  but at least 2 and at most 10 (a class of one row cannot be in every split; beyond 10 rows a
  small class is more likely real than a typo).

Row numbers count data rows from 0 (the header is not a row), as the file's other errors do;
a directory with splits names the split too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Any

from exitgym.data.sources import RawTask, load_local

MIN_EDIT_LENGTH = 4
"""Labels shorter than this are never one-edit look-alikes (``cat`` / ``car`` may both be real)."""
SHOWN_ROWS = 5
"""Row numbers named per suspect label."""
SHOWN_LABELS = 10
"""Suspect labels named in a refusal (a wrong ``--label-column`` may make thousands)."""
MAX_COMPARED = 1000
"""Look-alikes are searched among at most this many labels (pairs grow as its square; a column
of more distinct values is no class label, and its rare classes are named anyway)."""


@dataclass(frozen=True)
class SuspectLabel:
    """One label that looks like a mistake."""

    label: str
    """The label as the file spells it."""
    rows: tuple[str, ...]
    """Every row holding it (``"41"``, or ``"train 41"`` in a directory with splits)."""
    likely: str | None = None
    """The label it probably means (None: a rare class with no look-alike)."""
    likely_rows: int = 0
    """Rows of :attr:`likely`."""
    case_only: bool = False
    """It differs from :attr:`likely` only in case or surrounding spaces."""

    def describe(self, total: int) -> str:
        """One line: the label, how many rows and which, and why it is suspect."""
        shown = ", ".join(self.rows[:SHOWN_ROWS]) + (", ..." if len(self.rows) > SHOWN_ROWS
                                                      else "")
        what = f"{self.label!r} ({_rows(len(self.rows))}: {shown})"
        if self.likely is None:
            return (f"{what} is a rare class: fewer than {rare_below(total)} rows (1% of the "
                    f"{total} rows, at least 2, at most 10)")
        how = "only in case or spaces" if self.case_only else "by one edit"
        return f"{what} differs from {self.likely!r} ({_rows(self.likely_rows)}) {how}"


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def rare_below(total: int) -> int:
    """Fewest rows a class of a ``total``-row table needs not to be rare: 1 % of the rows,
    clamped to [2, 10]."""
    return max(2, min(10, math.ceil(0.01 * total)))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def one_edit(a: str, b: str) -> bool:
    """``a`` and ``b`` differ by one inserted, deleted or replaced character, or by two
    neighbouring characters swapped (a transposition is the commonest typo: ``frseh``)."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long = sorted((a, b), key=len)
    i = next((k for k, (x, y) in enumerate(zip(short, long, strict=False)) if x != y),
             len(short))
    return short[i:] == long[i + 1:]


def look_alike(a: str, b: str) -> tuple[bool, bool]:
    """``(alike, case_only)``: ``a`` and ``b`` look like one label (see the module rules)."""
    if a != b and a.strip().casefold() == b.strip().casefold():
        return True, True
    if min(len(a), len(b)) < MIN_EDIT_LENGTH or _is_number(a) or _is_number(b):
        return False, False
    return one_edit(a, b), False


def suspect_labels(raw: RawTask) -> list[SuspectLabel]:
    """The labels of ``raw`` that look like mistakes (module rules), most rows first."""
    rows: dict[str, list[str]] = {}
    for split, frame in raw.frames.items():
        prefix = "" if split == "all" else f"{split} "
        for index, value in zip(frame.index, frame["label"], strict=True):
            rows.setdefault(_name(value, raw.label_names), []).append(f"{prefix}{index}")
    total = sum(len(r) for r in rows.values())
    by_count = sorted(rows, key=lambda label: (-len(rows[label]), label))
    compared = by_count if len(by_count) <= MAX_COMPARED else []
    out = []
    for i, label in enumerate(by_count):
        # its look-alike with the most rows, counted before it (more rows, or as many and first)
        match = next(((other, case) for other in compared[:i]
                      for alike, case in [look_alike(label, other)] if alike), None)
        if match is not None:
            out.append(SuspectLabel(label, tuple(rows[label]), match[0], len(rows[match[0]]),
                                    match[1]))
        elif len(rows[label]) < rare_below(total):
            out.append(SuspectLabel(label, tuple(rows[label])))
    return out


def _name(value: Any, names: Sequence[str] | None) -> str:
    """A label value as the user knows it: its class name when the source names ids."""
    if names is not None and isinstance(value, Integral) and 0 <= value < len(names):
        return str(names[value])
    return str(value)


class SuspectLabelsError(ValueError):
    """Labels of a local data file look like mistakes (the message names them and the flag)."""


def check_labels(task: str, *, allow: bool = False, text_column: str = "text",
                 label_column: str = "label", text_pair_column: str | None = None) -> None:
    """Refuse a local data file whose labels look like mistakes (before heads are trained).

    Registry tasks are curated and pass; so does everything with ``allow``.

    Raises:
        SuspectLabelsError: naming each suspect label, its first rows, the label it probably
            means, and how to accept them.
    """
    from exitgym.data.tasks import TASKS, check_task

    if allow or check_task(task) in TASKS:
        return
    raw = load_local(Path(task).expanduser(), text_column, label_column, text_pair_column)
    suspects = suspect_labels(raw)
    if not suspects:
        return
    total = sum(len(f) for f in raw.frames.values())
    lines = "\n".join(f"  {s.describe(total)}" for s in suspects[:SHOWN_LABELS])
    if len(suspects) > SHOWN_LABELS:
        lines += f"\n  ... and {len(suspects) - SHOWN_LABELS} more"
    raise SuspectLabelsError(
        f"{task}: {len(suspects)} label(s) of column {label_column!r} look like mistakes; "
        f"each would become a class of the exit heads:\n{lines}\n"
        f"Fix the labels (rows count from 0 after the header), or keep them as classes with "
        f"--allow-suspect-labels (allow_suspect_labels=True)")
