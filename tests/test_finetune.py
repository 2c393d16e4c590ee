"""The fine-tuning trainer and the ``joint`` / ``two-stage`` recipes on a tiny random-init BERT.

They must learn (a separable task to high accuracy, not only "weights changed"), return their best
validation state, produce the same bits in two processes, and resume a run killed mid-training to
exactly the uninterrupted result without redoing the finished steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from exitgym.backbones.finetune import (
    FinetuneConfig,
    TextSet,
    bucketed_batches,
    evaluate,
    finetune,
)
from exitgym.backbones.heads import ExitHeads, HeadsConfig, exit_weights
from exitgym.data.prepare import clear_cache_memo, prepare
from exitgym.utils.threads import THREADS_ENV_VAR, training_threads
from tests.test_heads import tiny_backbone
from tests.tiny_project import make_tiny_project, run_harness

OPTIONS = {"max_length": 16, "batch_size": 16, "epochs": 6, "lr": 2e-3, "train_batch_size": 8,
           "evals_per_epoch": 2, "patience": 8}
"""Settings under which the tiny BERT learns toy.csv within seconds."""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("finetune")
    return {"root": root, "names": make_tiny_project(root / "project")}


def _use_cache(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setenv("EXITGYM_CACHE", str(path))
    clear_cache_memo()


def _toy(n: int, seed: int) -> TextSet:
    rng = np.random.default_rng(seed)
    words = {0: ["bad", "dull", "awful", "boring"], 1: ["good", "great", "fun", "lovely"]}
    labels = np.arange(n) % 2
    texts = [" ".join([*rng.choice(words[y], 2), "film", *rng.choice(["a", "the", "it"], 2)])
             for y in labels]
    return TextSet(texts, None, labels.astype(np.int64))


@pytest.mark.parametrize("recipe", ["joint", "two-stage"])
def test_recipes_learn_a_separable_task(project, monkeypatch, recipe: str) -> None:
    _use_cache(monkeypatch, project["root"] / f"learn-{recipe}")
    frozen = prepare(**project["names"], heads="frozen", progress=False, verbose=False,
                     splits=("validation",), max_length=16, batch_size=16)
    tuned = prepare(**project["names"], heads=recipe, progress=False, verbose=False,
                    splits=("validation",), **OPTIONS)
    acc = [row["accuracy"] for row in tuned.table["validation"]]
    probe = [row["accuracy"] for row in frozen.table["validation"]]
    assert acc[-1] >= 0.95, (recipe, acc)
    # The backbone learned: its last exit beats a probe of the random-init backbone's features.
    assert acc[-1] > probe[-1], (acc, probe)
    history = json.loads((tuned.directory / "history.json").read_text())
    assert history["recipe"] == recipe and history["finetune"]["steps"] > 0
    assert ("heads" in history) == (recipe == "two-stage")  # DeeBERT's second stage ran
    assert not (tuned.directory / "training").exists()  # the checkpoint went once saved


def test_last_loss_trains_only_the_last_exit() -> None:
    """DeeBERT's first stage: the backbone and the last head move, the other heads do not."""
    bb = tiny_backbone()
    torch.manual_seed(0)
    heads = ExitHeads(HeadsConfig(num_layers=3, hidden_size=32, num_labels=2))
    before = [h.state_dict()["1.weight"].clone() for h in heads.heads]
    finetune(bb, heads, _toy(32, 0), None,
             FinetuneConfig(loss="last", batch_size=8, lr=1e-3, max_length=16), progress=False)
    after = [h.state_dict()["1.weight"] for h in heads.heads]
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert not torch.equal(before[2], after[2])
    np.testing.assert_allclose(exit_weights("weighted", 3).numpy(), [1 / 6, 2 / 6, 3 / 6])


def test_returns_the_best_validation_state_and_stops_early() -> None:
    """With a learning rate that diverges, later evaluations get worse: the trainer must hand back
    the weights of its best evaluation and stop after ``patience`` worse ones."""
    bb = tiny_backbone()
    torch.manual_seed(0)
    heads = ExitHeads(HeadsConfig(num_layers=3, hidden_size=32, num_labels=2))
    val = _toy(24, 1)
    cfg = FinetuneConfig(epochs=6, batch_size=8, lr=0.3, head_lr=0.3, warmup=0.0,
                         max_length=16, evals_per_epoch=2, patience=2)
    result = finetune(bb, heads, _toy(32, 0), val, cfg, progress=False)
    evals = [r for r in result["history"] if "val_objective" in r]
    objectives = [r["val_objective"] for r in evals]
    best = int(np.argmin(objectives))
    assert result["best_step"] == evals[best]["step"]
    # stopped two evaluations after the best one, before the six epochs ran out
    assert len(evals) == best + 3 and result["steps"] < 6 * 4
    now = evaluate(bb, heads, val, max_length=16)
    weights = exit_weights("weighted", 3).numpy()
    assert float(np.dot(weights, now["val_loss"])) == pytest.approx(objectives[best], rel=1e-5)


def test_bucketed_batches_cover_each_row_once_with_little_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=1000)
    batches = bucketed_batches(lengths, 32, seed=7, epoch=0)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_batches = np.array_split(rng.permutation(1000), len(batches))
    random_padded = sum(len(b) * lengths[b].max() for b in random_batches)
    assert padded < 0.6 * random_padded  # buckets of similar length: far less padding
    again = bucketed_batches(lengths, 32, seed=7, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = bucketed_batches(lengths, 32, seed=7, epoch=1)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=False))


def test_thread_count_is_decided_in_one_place(monkeypatch) -> None:
    monkeypatch.setenv(THREADS_ENV_VAR, "3")
    assert training_threads() == 3
    monkeypatch.setenv(THREADS_ENV_VAR, "zero")
    with pytest.raises(ValueError, match=r"\$EXITGYM_THREADS must be a positive integer, got"):
        training_threads()
    monkeypatch.delenv(THREADS_ENV_VAR)
    assert training_threads() >= 1


def _prepared_files(cache: Path) -> dict[str, bytes]:
    (directory,) = (cache / "prepared").iterdir()
    return {name: (directory / name).read_bytes()
            for name in ("backbone.safetensors", "heads.safetensors")}


def test_prepare_is_bit_identical_across_processes_and_resumes_after_a_kill(
        project, monkeypatch) -> None:
    args = {**project["names"], "options": {**OPTIONS, "heads": "joint"}}
    root = project["root"]
    runs = [run_harness("prepare", args, root / f"proc-{k}", 0, root) for k in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-3000:]
    reference = _prepared_files(root / "proc-0")
    assert reference == _prepared_files(root / "proc-1")

    # Killed half-way through writing its 10th file: a checkpoint in the middle of training.
    killed = run_harness("prepare", args, root / "killed", 10, root)
    assert killed.returncode == -9, killed.stderr[-3000:]
    (directory,) = (root / "killed" / "prepared").iterdir()
    meta = json.loads((directory / "training" / "finetune.json").read_text())
    assert 0 < meta["step"]
    _use_cache(monkeypatch, root / "killed")
    steps = []
    original_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step",
                        lambda self, *a, **k: steps.append(1) or original_step(self, *a, **k))
    prepare(**project["names"], heads="joint", progress=False, verbose=False, **OPTIONS)
    history = json.loads((directory / "history.json").read_text())["finetune"]
    assert len(steps) == history["steps"] - meta["step"]  # only the unfinished steps ran
    assert _prepared_files(root / "killed") == reference
