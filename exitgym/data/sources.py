"""Readers that turn a data source into raw rows (``text``, ``label``, optional ``text_pair``).

:mod:`exitgym.data.tasks` de-duplicates, maps labels and splits; this module only reads: local files
(bring your own data) and the Hugging Face Hub (for users who are online).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


class TaskUnavailableError(RuntimeError):
    """A task's data cannot be obtained here (e.g. a Hub task while offline)."""


@dataclass(frozen=True)
class RawTask:
    """Rows as read from a source, before de-duplication, label mapping and splitting."""

    frames: dict[str, pd.DataFrame]
    """Split name (``all`` for a single table, or train / validation / test) -> rows with columns
    ``text``, ``label`` and optionally ``text_pair``."""
    label_names: tuple[str, ...] | None = None
    """Names when labels are already ids 0..C-1; None to build a sorted vocabulary of values."""


def _read_json(path: Path) -> pd.DataFrame:
    text = path.read_text(encoding="utf-8").lstrip()
    return pd.read_json(path, lines=not text.startswith("["))


FILE_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    ".csv": lambda p: pd.read_csv(p, keep_default_na=False, na_values=[""]),
    ".tsv": lambda p: pd.read_csv(p, sep="\t", keep_default_na=False, na_values=[""]),
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".json": _read_json,
    ".parquet": pd.read_parquet,
}
"""File suffix -> reader; register more here."""


def _select(
    frame: pd.DataFrame, text: str, label: str, pair: str | None, where: str
) -> pd.DataFrame:
    """Pick and rename the requested columns, with a clear error naming what exists."""
    wanted = {"text_column": text, "label_column": label}
    if pair is not None:
        wanted["text_pair_column"] = pair
    missing = {opt: col for opt, col in wanted.items() if col not in frame.columns}
    if missing:
        asked = ", ".join(f"{opt}={col!r}" for opt, col in missing.items())
        raise ValueError(f"{where}: no column for {asked}; available columns: "
                         f"{[str(c) for c in frame.columns]}")
    if len(frame) == 0:
        raise ValueError(f"{where}: the file has no rows (only a header?); a task needs labelled "
                         "examples")
    out = pd.DataFrame({"text": frame[text], "label": frame[label]})
    if pair is not None:
        out["text_pair"] = frame[pair]
    bad = out.isna().any(axis=1)
    if bad.any():
        rows = out.index[bad].tolist()[:5]
        raise ValueError(f"{where}: {int(bad.sum())} rows have an empty text or label "
                         f"(first rows {rows}); clean the file or drop them")
    out["text"] = out["text"].astype(str)
    if pair is not None:
        out["text_pair"] = out["text_pair"].astype(str)
    return out


def _class_names(features: Any, column: str) -> tuple[str, ...] | None:
    feature = features.get(column) if features is not None else None
    names = getattr(feature, "names", None)
    return tuple(names) if names else None


def load_local(path: Path, text: str, label: str, pair: str | None) -> RawTask:
    """Read a local file or ``save_to_disk`` directory.

    A directory holding a ``DatasetDict`` keeps its train / validation / test splits (or train
    and test); anything else is one table to be split.
    """
    if path.is_dir():
        import datasets

        loaded = datasets.load_from_disk(str(path))
        parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"all": loaded}
        if set(parts) not in ({"train", "validation", "test"}, {"train", "test"}, {"all"}):
            if len(parts) != 1:
                raise ValueError(f"{path}: splits {sorted(parts)} not understood; expected "
                                 f"train+validation+test, train+test or a single split")
            parts = {"all": next(iter(parts.values()))}
        first = next(iter(parts.values()))
        names = _class_names(first.features, label)
        frames = {k: _select(d.to_pandas(), text, label, pair, f"{path} [{k}]")
                  for k, d in parts.items()}
        return RawTask(frames, label_names=names)
    reader = FILE_READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of "
                         f"{sorted(FILE_READERS)} or a datasets.save_to_disk directory")
    try:
        frame = reader(path)
    except (pd.errors.EmptyDataError, ValueError) as err:
        raise ValueError(f"{path}: cannot read it as {path.suffix} ({err}); a task file needs a "
                         f"header with columns {text!r} and {label!r} and labelled rows") from err
    return RawTask({"all": _select(frame, text, label, pair, str(path))})


def data_source(task: str) -> dict[str, Any]:
    """Where a task's rows come from, so a run can say how to get its data back.

    A local file is named by its absolute path, sha256 and size (the state to restore when the
    file changed); a directory by its path; a registry task by its name.
    """
    from exitgym.utils.atomic import sha256_file

    path = Path(task).expanduser()
    if path.is_file():
        return {"path": str(path.resolve()), "sha256": sha256_file(path),
                "bytes": path.stat().st_size}
    if path.is_dir():
        return {"path": str(path.resolve())}
    return {"registry": task}


def load_hub(
    path: str, config: str | None, text: str, pair: str | None, splits: dict[str, str]
) -> RawTask:
    """Load a Hub dataset with ``datasets.load_dataset``; a clear error when it cannot be reached.

    Args:
        path: Hub dataset id.
        config: dataset configuration (e.g. ``"sst2"`` of ``"glue"``).
        text: text column; pair: second text column for sentence pairs.
        splits: exitgym split -> Hub split (test sets without labels are replaced by validation).
    """
    import datasets

    try:
        loaded = datasets.load_dataset(path, config)
    except Exception as err:  # offline, hub errors and missing configs all surface here
        name = path if config is None else f"{path}/{config}"
        raise TaskUnavailableError(
            f"could not load Hub dataset {name!r} ({type(err).__name__}: {err}). Hub tasks need "
            f"network access to huggingface.co (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) or a "
            f"warm datasets cache. Offline, use an embedded task (rt-polarity, trec6, sms-spam) "
            f"or a local file."
        ) from err
    frames = {}
    for ours, theirs in splits.items():
        frame = _select(loaded[theirs].to_pandas(), text, "label", pair, f"{path} [{theirs}]")
        frames[ours] = frame[frame["label"] >= 0]  # unlabeled rows carry -1
    return RawTask(frames, label_names=_class_names(loaded[splits["train"]].features, "label"))
