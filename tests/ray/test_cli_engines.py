"""The CLI with the Ray engines on a tiny prepared project: ``train --engine rllib --agent appo``
reads back with evaluate / replay --verify / infer, and ``compare --engine tune`` reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exitgym.cli import main
from tests.tiny_project import make_tiny_project

FAST = ["--max-length", "16", "--batch-size", "8", "--num-envs", "8"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    names = make_tiny_project(tmp_path_factory.mktemp("tiny-ray"))
    flags = ["--task", names["task"], "--backbone", names["backbone"]]
    assert main(["prepare", *flags, "--max-length", "16", "--epochs", "2"]) == 0
    return flags


def test_train_engine_rllib_appo_run_reads_back_everywhere(data, tmp_path: Path,
                                                           capsys) -> None:
    run = tmp_path / "appo"
    assert main(["train", *data, *FAST, "--engine", "rllib", "--agent", "appo", "--steps", "2",
                 "--reward", "vanilla", "--alpha", "0.3", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["engine"] == "rllib" and config["config"]["agent"] == "appo"
    assert config["fingerprints"]["policy"]["cache_fingerprint"]
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "validation", "--num-envs", "4"]) == 0
    assert main(["replay", str(run), "--verify"]) == 0
    assert "every reward, exit layer, prediction and cost matches" in capsys.readouterr().out
    from exitgym import infer

    result = infer(str(run), ["a short text", "another one"])
    assert len(result.exit_layers) == 2
    assert main(["train", *data, "--engine", "rllib", "--resume", "--out", str(run)]) == 2
    assert "not available with --engine rllib" in capsys.readouterr().err


def test_compare_engine_tune_from_the_cli(data, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", *data, *FAST, "--engine", "tune", "--rewards", "vanilla",
                 "--alphas", "0.3", "--seeds", "0", "--rules", "entropy", "--steps", "2",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "reinforce-vanilla" in summary["methods"]
    assert json.loads((out / "runs" / "reinforce-vanilla-a0.3-s0" / "run_state.json").read_text()
                      )["status"] == "complete"
