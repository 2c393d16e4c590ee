"""Bring your own data from every command: renamed columns, long inputs, wrong columns.

A CSV whose columns are not ``text`` / ``label`` goes through ``prepare`` -> ``train`` ->
``evaluate`` from the CLI with ``--text-column`` / ``--label-column``; the env takes the same names
as keyword arguments; the columns enter the prepared-directory and cache keys; rows longer than
``--max-length`` are counted in the prepare summary, and texts of thousands of words work.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import exitgym  # noqa: F401  (registers the env ids)
from exitgym.cli import main
from exitgym.data.config import SPLITS, DataConfig
from exitgym.data.prepare import PrepareConfig, prepare, prepared_dir
from exitgym.data.tasks import load_task
from tests.tiny_project import make_tiny_project

LONG_WORDS = 3000
"""Words in the long rows: far beyond any tokenizer limit of the tiny model (64 positions)."""


@pytest.fixture(scope="module")
def byo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny project's CSV with its columns renamed (review, sentiment) plus a pair column and
    four rows of thousands of words each."""
    root = tmp_path_factory.mktemp("byo")
    names = make_tiny_project(root)
    frame = pd.read_csv(names["task"]).rename(columns={"text": "review", "label": "sentiment"})
    rng = np.random.default_rng(1)
    long_rows = pd.DataFrame({
        "review": [" ".join(rng.choice(["good", "bad", "plot", "actor"], LONG_WORDS)) + f" z{i}"
                   for i in range(4)],
        "sentiment": ["pos", "neg", "pos", "neg"]})
    frame = pd.concat([frame, long_rows], ignore_index=True)
    frame["summary"] = [f"about {t.split()[0]}" for t in frame["review"]]
    frame.to_csv(root / "renamed.csv", index=False)
    return {"task": str(root / "renamed.csv"), "backbone": names["backbone"],
            "rows": str(len(frame))}


def _columns(**extra: str) -> list[str]:
    return ["--text-column", "review", "--label-column", "sentiment",
            *[a for k, v in extra.items() for a in (f"--{k.replace('_', '-')}", v)]]


def test_renamed_columns_through_prepare_train_evaluate(byo, tmp_path: Path, capsys) -> None:
    data = ["--task", byo["task"], "--backbone", byo["backbone"], *_columns(),
            "--max-length", "16"]
    assert main(["prepare", *data, "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    # Every split's cut rows are reported; the long rows (and only rows over 16 tokens) are cut.
    line = next(x for x in out.splitlines() if "truncated at 16 tokens:" in x)
    task = load_task(byo["task"], text_column="review", label_column="sentiment")
    counts = {s: len(task.split(s)) for s in SPLITS}
    assert sum(counts.values()) == int(byo["rows"])
    long_rows = {s: sum(len(t.split()) > 100 for t in task.split(s)["text"]) for s in counts}
    assert sum(long_rows.values()) == 4
    for split, n in counts.items():
        # the short rows are ``w w x<i>``: at most 7 tokens with [CLS]/[SEP], never cut
        assert f"{split} {long_rows[split]} of {n} rows" in line

    run = tmp_path / "run"
    argv = ["train", *data, "--steps", "3", "--batch-size", "8", "--num-envs", "8",
            "--reward", "vanilla", "--alpha", "0.3", "--out", str(run)]
    assert main(argv) == 0
    capsys.readouterr()
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["text_column"], config["label_column"]) == ("review", "sentiment")
    spec = json.loads((run / "env_spec.json").read_text())
    assert spec["prepare"] == {"max_length": 16, "text_column": "review",
                               "label_column": "sentiment"}
    assert main(["evaluate", str(run), "--split", "validation", "--num-envs", "4"]) == 0
    summary = json.loads((run / "eval-validation.json").read_text())
    assert summary["num_episodes"] == counts["validation"]


def test_a_wrong_column_names_the_file_and_the_columns_it_has(byo, capsys) -> None:
    argv = ["prepare", "--task", byo["task"], "--backbone", byo["backbone"],
            "--text-column", "text", "--label-column", "sentiment"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (f"exitgym prepare: error: {byo['task']}: no column for text_column='text'; available "
            "columns: ['review', 'sentiment', 'summary']") in err


def test_columns_as_env_kwargs_and_in_the_keys(byo) -> None:
    names = {"task": byo["task"], "backbone": byo["backbone"]}
    env = gym.make("exitgym/EarlyExit-v0", **names, text_column="review",
                   label_column="sentiment", split="validation")
    cache = env.unwrapped.cache
    task = load_task(byo["task"], text_column="review", label_column="sentiment")
    assert list(cache.texts) == list(task.split("validation")["text"])
    np.testing.assert_array_equal(cache.labels, task.split("validation")["label"])
    env.close()
    with pytest.raises(ValueError, match="no column for label_column='label'"):
        gym.make("exitgym/EarlyExit-v0", **names, text_column="review")

    # A pair column changes the data and so the prepared directory and the cache key; default
    # column names leave the key as it was before columns were options.
    single = PrepareConfig(**names, text_column="review", label_column="sentiment")
    paired = PrepareConfig(**names, text_column="review", label_column="sentiment",
                           text_pair_column="summary")
    assert "text_pair_column" not in single.key() and paired.key()["text_pair_column"] == "summary"
    pair_task = load_task(byo["task"], text_column="review", label_column="sentiment",
                          text_pair_column="summary")
    assert pair_task.has_pair
    assert prepared_dir(single, task) != prepared_dir(paired, pair_task)
    assert "text_column" not in PrepareConfig().key()
    assert DataConfig().prepare_options() == {"max_length": 128}


def test_thousands_of_words_embed_at_the_model_limit(byo) -> None:
    """Long rows reach the backbone cut at ``max_length``; the pooled states are finite."""
    prepared = prepare(task=byo["task"], backbone=byo["backbone"], text_column="review",
                       label_column="sentiment", max_length=64, epochs=1, splits=("train",),
                       progress=False, verbose=False)
    from exitgym.backbones.cache import load_cache

    cache = load_cache(prepared.cache_paths["train"])
    long_rows = [i for i, t in enumerate(cache.texts) if len(t.split()) > 100]
    assert long_rows and set(cache.lengths[long_rows].tolist()) == {64}
    assert np.isfinite(cache.pooled).all()


def _typo_csv(path: Path) -> Path:
    """82 reviews, ``fresh`` / ``rotten`` but for one ``frseh`` (row 7) and one ``Rotten``
    (row 30)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(82):
        label = {7: "frseh", 30: "Rotten"}.get(i, "fresh" if i % 2 else "rotten")
        words = rng.choice(["good", "great"] if i % 2 else ["bad", "dull"], size=2).tolist()
        rows.append((" ".join([*words, f"x{i}"]), label))
    pd.DataFrame(rows, columns=["review", "verdict"]).to_csv(path, index=False)
    return path


def test_label_typos_are_refused_naming_rows_and_the_label_meant(tmp_path, monkeypatch,
                                                                 capsys) -> None:
    """A CSV with one ``frseh`` and one ``Rotten`` row trained a 4-class head without a word."""
    from exitgym.data.labels import SuspectLabelsError

    names = make_tiny_project(tmp_path / "project")
    csv = str(_typo_csv(tmp_path / "reviews.csv"))
    data = ["--task", csv, "--backbone", names["backbone"], "--text-column", "review",
            "--label-column", "verdict", "--max-length", "16"]
    assert main(["prepare", *data, "--epochs", "1"]) == 2
    assert (f"exitgym prepare: error: {csv}: 2 label(s) of column 'verdict' look like mistakes; "
            "each would become a class of the exit heads:\n"
            "  'Rotten' (1 row: 30) differs from 'rotten' (40 rows) only in case or spaces\n"
            "  'frseh' (1 row: 7) differs from 'fresh' (40 rows) by one edit\n"
            "Fix the labels (rows count from 0 after the header), or keep them as classes with "
            "--allow-suspect-labels (allow_suspect_labels=True)") in capsys.readouterr().err
    columns = {"text_column": "review", "label_column": "verdict"}
    with pytest.raises(SuspectLabelsError, match="'frseh' .1 row: 7. differs from 'fresh'"):
        prepare(task=csv, backbone=names["backbone"], max_length=16, splits=(), **columns)
    prepared = prepare(task=csv, backbone=names["backbone"], max_length=16, splits=("test",),
                       allow_suspect_labels=True, progress=False, verbose=False, **columns)
    from exitgym.backbones.heads import ExitHeads

    assert ExitHeads.load(prepared.directory).config.num_labels == 4  # the user kept them all
    assert load_task(csv, **columns).label_names == ("Rotten", "fresh", "frseh", "rotten")

    # The flag flows from every command's data options to the env that prepares the heads.
    monkeypatch.setenv("EXITGYM_CACHE", str(tmp_path / "fresh-cache"))
    run = tmp_path / "run"
    fast = ["--steps", "2", "--batch-size", "8", "--num-envs", "8", "--reward", "vanilla"]
    assert main(["train", *data, *fast, "--out", str(tmp_path / "refused")]) == 2
    assert "'frseh' (1 row: 7) differs from 'fresh'" in capsys.readouterr().err
    assert main(["train", *data, *fast, "--allow-suspect-labels", "--out", str(run)]) == 0
    spec = json.loads((run / "env_spec.json").read_text())
    assert spec["prepare"]["allow_suspect_labels"] is True
    assert main(["evaluate", str(run), "--num-envs", "8"]) == 0


def test_the_suspect_label_rules() -> None:
    from exitgym.data.labels import look_alike, one_edit, rare_below, suspect_labels
    from exitgym.data.sources import RawTask

    assert [rare_below(n) for n in (50, 150, 250, 999, 5000)] == [2, 2, 3, 10, 10]
    assert one_edit("frseh", "fresh") and one_edit("fresh", "frsh") and one_edit("fresh", "fres")
    assert not one_edit("fresh", "rfehs") and not one_edit("fresh", "fresh")
    assert look_alike("Rotten", " rotten") == (True, True)
    assert look_alike("spam", "spa") == (False, False)  # short labels need more than one edit
    assert look_alike("1000", "1001") == (False, False)  # numbers are ids, not words

    def raw(labels: list) -> RawTask:
        return RawTask({"all": pd.DataFrame({"text": [f"t{i}" for i in range(len(labels))],
                                             "label": labels})})

    assert suspect_labels(raw(list(range(10)) * 30)) == []  # digits one edit apart: fine
    lonely = suspect_labels(raw(["ham"] * 150 + ["spam"] * 148 + ["eggs"] * 2))
    assert [(s.label, s.rows, s.likely) for s in lonely] == [("eggs", ("298", "299"), None)]
    assert lonely[0].describe(300) == ("'eggs' (2 rows: 298, 299) is a rare class: fewer than "
                                       "3 rows (1% of the 300 rows, at least 2, at most 10)")


def test_a_wrong_label_column_is_refused_in_a_few_lines(tmp_path) -> None:
    """An id column passed as --label-column makes every row a class: named in 13 lines, at
    once (look-alikes are not searched among thousands of labels)."""
    from exitgym.data.labels import SuspectLabelsError, check_labels

    path = tmp_path / "ids.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(3000)], "id": [f"row-{i}" for i in range(3000)]
                  }).to_csv(path, index=False)
    with pytest.raises(SuspectLabelsError) as err:
        check_labels(str(path), label_column="id")
    lines = str(err.value).splitlines()
    assert lines[0].endswith("3000 label(s) of column 'id' look like mistakes; each would "
                             "become a class of the exit heads:")
    assert lines[1] == ("  'row-0' (1 row: 0) is a rare class: fewer than 10 rows (1% of the "
                        "3000 rows, at least 2, at most 10)")
    assert lines[-2] == "  ... and 2990 more" and len(lines) == 13
