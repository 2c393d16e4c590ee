"""The ``exitgym`` CLI end to end on a tiny real task: a 90-row CSV and a random-init tiny BERT.

Everything runs through ``exitgym.cli.main`` as a user would type it: prepare -> train ->
evaluate -> replay (analysis and --verify) -> compare -> replay --verify -> demo, plus the errors
users see for bad flags, incomplete runs and tampered trajectories.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exitgym.cli import COMMANDS, build_parser, main
from exitgym.data.prepare import prepare
from exitgym.experiments.manifests import verify_manifest
from exitgym.experiments.runs import RunDir
from exitgym.experiments.trajectories import load_trajectories, trajectory_files
from exitgym.reports.budget import smallest_detectable
from exitgym.reports.comparison import ROW_KEYS
from tests.tiny_project import WORDS, make_tiny_project

FAST = ["--max-length", "16", "--steps", "3", "--batch-size", "8", "--num-envs", "8"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny BERT saved as a local model directory (MiniLM's tokenizer) and a 90-row CSV."""
    root = tmp_path_factory.mktemp("cli")
    names = make_tiny_project(root)
    return {**names, "root": str(root)}


def _data(tiny: dict[str, str]) -> list[str]:
    return ["--task", tiny["task"], "--backbone", tiny["backbone"]]


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert {"envs", "prepare", "train", "evaluate", "compare", "replay", "demo"} <= set(COMMANDS)
    build_parser()  # every module registers without error
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0
        assert f"exitgym {name}" in capsys.readouterr().out


def test_envs_lists_the_registered_ids(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envs"]) == 0
    assert "exitgym/EarlyExit-v0" in capsys.readouterr().out


@pytest.mark.parametrize("argv, needle", [
    (["train", "--agent", "nope"], "--agent: unknown value 'nope'; allowed: a2c, dqn"),
    (["train", "--reward", "nope"], "--reward: unknown value 'nope'; allowed: accuracy"),
    (["train", "--env", "CartPole-v1"], "--env: unknown value 'CartPole-v1'; allowed: exitgym/"),
    (["train", "--steps", "0"], "--steps must be >= 1"),
    (["train", "--resume"], "--resume needs --out"),
    (["compare", "--rules", "entropy,foo"], "--rules: unknown value 'foo'; allowed: entropy"),
    (["compare", "--alphas", "0.1,x"], "--alphas: 'x' is not a valid float"),
    (["compare", "--rewards", "vanilla,nope"], "--rewards: unknown value 'nope'"),
])
def test_bad_flags_name_the_flag_and_the_allowed_values(argv, needle, capsys) -> None:
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_evaluate_and_replay_refuse_missing_or_incomplete_runs(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not an exitgym run directory" in capsys.readouterr().err
    (tmp_path / "run_state.json").write_text('{"status": "running"}')
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "is not complete (status 'running')" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_prepare_train_evaluate_replay(tiny, tmp_path: Path, capsys) -> None:
    assert main(["prepare", *_data(tiny), "--max-length", "16", "--epochs", "3"]) == 0
    assert "prepared" in capsys.readouterr().out
    run = tmp_path / "run"
    argv = ["train", *_data(tiny), *FAST, "--reward", "vanilla", "--alpha", "0.3", "--seed", "1",
            "--out", str(run)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"run: {run}" in out and "report.md" in out
    state = json.loads((run / "run_state.json").read_text())
    assert state["status"] == "complete"
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["backbone"] == tiny["backbone"]
    assert config["fingerprints"]["policy"]["backbone_fingerprint"]
    assert config["fingerprints"]["test"]["cache_fingerprint"]
    assert main(argv) == 2  # the directory already holds a run
    assert "already holds a run" in capsys.readouterr().err

    assert main(["evaluate", str(run), "--split", "validation", "--num-envs", "4"]) == 0
    assert "validation:" in capsys.readouterr().out
    summary = json.loads((run / "eval-validation.json").read_text())
    ts = load_trajectories(run / "trajectories" / "eval-validation.parquet")
    assert summary["accuracy"] == pytest.approx(np.mean([r.correct for r in ts.records]))
    assert summary["num_episodes"] == len(ts.records) > 0

    assert main(["replay", str(run), "--verify"]) == 0
    assert "every reward, exit layer, prediction and cost matches" in capsys.readouterr().out
    assert main(["replay", str(run), "--select", "eval-test", "--top", "2"]) == 0
    text = capsys.readouterr().out
    for heading in ("exit-layer histogram by label", "by memorized layer",
                    "accuracy per exit layer", "cost distribution", "easiest inputs",
                    "hardest inputs"):
        assert heading in text
    assert any(w in text for w in WORDS[0] + WORDS[1])  # the inputs' text is shown


def test_compare_then_verify_then_tamper(tiny, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", *_data(tiny), *FAST, "--rewards", "vanilla,hardness",
                 "--alphas", "0.1,1", "--rules", "patience,oracle", "--seeds", "0,1",
                 "--out", str(out)]) == 0
    assert "AUC" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    methods = {r["method"] for r in summary["rows"]}
    # static truncation and random exit are in every comparison
    assert methods == {"reinforce-vanilla", "reinforce-hardness", "reinforce-vanilla-greedy",
                       "reinforce-hardness-greedy", "patience", "static", "random", "oracle",
                       "full-depth"}
    assert all(set(ROW_KEYS) <= set(r) for r in summary["rows"])
    assert set(summary["methods"]) == methods - {"oracle", "full-depth"}
    assert all(0.0 <= m["auc"] <= 1.0 for m in summary["methods"].values())
    assert {r["knob"] for r in summary["rows"] if r["method"] == "reinforce-vanilla"} == {0.1, 1.0}
    assert {r["category"] for r in summary["budget_table"] if r["method"] in (
        "static", "random", "patience")} == {"rule"}
    # The heads' recipe and each exit's accuracy, equal to the prepared accuracy tables.
    prepared = prepare(task=tiny["task"], backbone=tiny["backbone"], heads=summary["heads"],
                       max_length=16, splits=("validation", "test"), progress=False,
                       verbose=False)
    assert summary["per_layer_accuracy"] == {
        split: [row["accuracy"] for row in prepared.table[split]]
        for split in ("validation", "test")}
    assert "accuracy per exit layer" in (out / "report.md").read_text()
    assert summary["selection_split"] == "validation" and summary["seeds"] == [0, 1]
    assert summary["smallest_detectable"] == smallest_detectable(summary["budget_table"])
    # every selectable (test) row has its validation twin, same method, knob and seed
    key = lambda r: (r["method"], r["knob"], r["seed"], r.get("tau"))  # noqa: E731
    assert sorted(map(key, summary["selection_rows"])) == sorted(
        key(r) for r in summary["rows"] if r["method"] not in ("oracle", "full-depth"))
    table = summary["budget_table"]
    assert table and {r["budget"] for r in table} <= {0.3, 0.4, 0.5, 0.6, 0.7, 0.8}
    val = {key(r): r for r in summary["selection_rows"]}
    for row in table:
        assert {"method", "budget", "accuracy", "delta_vs_static", "ci95"} <= set(row)
        lo, hi = row["ci95"]
        assert lo <= row["delta_vs_static"] <= hi
        seeds = [0] if row["method"] in ("static", "patience") else [0, 1]
        for seed, point in zip([0, 1], row["points"], strict=True):  # chosen within budget
            taus = point.get("tau", [None] * len(point["knob"]))
            weights = [point["weight"], 1 - point["weight"]][:len(point["knob"])]
            used = seeds[min(seed, len(seeds) - 1)]
            cost = sum(w * val[(row["method"], k, used, t)]["cost"]
                       for w, k, t in zip(weights, point["knob"], taus, strict=True))
            assert cost <= row["budget"] + 1e-9
            if row["method"] == "static":  # the adjacent-layer mixture costs the budget
                assert cost == pytest.approx(row["budget"]) or len(point["knob"]) == 1
        if row["method"] == "static":
            assert row["delta_vs_static"] == 0.0 and row["ci95"] == [0.0, 0.0]
    assert (out / "pareto.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "| reinforce-hardness |" in md and "## Budget table" in md
    assert json.loads((out / "run_state.json").read_text())["status"] == "complete"

    files = trajectory_files(out)
    # 8 agents (2 rewards x 2 alphas x 2 seeds), patience t = 0..2 and static k = 1..3 (3
    # layers), random (7 p x 2 seeds), oracle, and every calibrated reading of the 8 agents.
    readings = [r for r in summary["rows"] if "tau" in r]
    assert len(readings) >= 8 * 2
    assert len(files) == 8 + 3 + 3 + 14 + 1 + len(readings)
    assert main(["replay", str(out), "--verify"]) == 0
    capsys.readouterr()
    target = next(f for f in files if "patience-k1-" in f.name)
    table = pq.read_table(target)
    actions = table.column("actions").to_pylist()
    episode = next(i for i, a in enumerate(actions) if len(a) >= 2)
    actions[episode] = [1] + actions[episode][1:]
    idx = table.schema.get_field_index("actions")
    pq.write_table(table.set_column(idx, table.schema.field(idx),
                                    pa.array(actions, table.schema.field(idx).type)), target)
    assert main(["replay", str(out), "--verify"]) == 1
    err = capsys.readouterr().err  # the manifest names the edited file first
    assert "FAILED: 1 file(s) differ from what the run wrote" in err and target.name in err
    RunDir(out).add_to_manifest(target.relative_to(out).as_posix())  # edited with its checksum
    assert main(["replay", str(out), "--verify"]) == 1
    err = capsys.readouterr().err
    assert f"episode {episode} (sample_id" in err and "step 0" in err and target.name in err


def test_demo_runs_end_to_end_on_the_tiny_task(tiny, tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", *_data(tiny), "--targets", "0.5", "--steps", "2", "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in printed and "budget table" in printed
    md = (out / "report.md").read_text()
    assert "## Replay verification" in md and "every reward, exit layer" in md
    assert verify_manifest(out) == f"every file of {out} matches its manifest"  # report.md too
    assert "## Wall time" in md and "## Budget table" in md
    summary = json.loads((out / "summary.json").read_text())
    assert {"reinforce-hardness-budget", "reinforce-vanilla-budget", "entropy", "patience",
            "maxprob", "qexit", "palbert-sample", "berxit", "static", "random",
            "reinforce-vanilla", "lexicographic", "consistentee"} <= set(summary["methods"])
    assert "## Findings" in md and summary["findings"]
    assert {"full-depth", "oracle"} == set(summary["references"])
    assert summary["selection_split"] == "validation" and summary["seeds"] == [0, 1, 2]
    greedy = [r for r in summary["rows"] if r["method"] == "reinforce-hardness-budget-greedy"]
    assert sorted(r["seed"] for r in greedy) == [0, 1, 2] and {r["knob"] for r in greedy} == {0.5}
    curve = [r for r in summary["rows"] if r["method"] == "reinforce-hardness-budget"]
    assert {r["seed"] for r in curve} == {0, 1, 2} and len(curve) > len(greedy)
    assert {r["category"] for r in summary["budget_table"]} <= {"rule", "supervised", "rl"}
    assert any(r["method"] == "best-rl" and r["reference"] == "best-non-rl"
               for r in summary["findings"])


def test_train_and_verify_a_live_skip_env(tiny, tmp_path: Path, capsys) -> None:
    run = tmp_path / "skip"
    assert main(["train", "--env", "exitgym/SkipBlock-v0", *_data(tiny), "--max-length", "16",
                 "--steps", "2", "--batch-size", "4", "--num-envs", "4", "--reward", "vanilla",
                 "--alpha", "0.5", "--out", str(run)]) == 0, capsys.readouterr().err
    ts = load_trajectories(run / "trajectories" / "eval-test.parquet")
    assert ts.env_id == "exitgym/SkipBlock-v0" and len(ts.records) > 0
    assert all(len(r.actions) >= 1 for r in ts.records)
    capsys.readouterr()
    assert main(["replay", str(run), "--verify"]) == 0, capsys.readouterr().err


def test_negated_flags_say_that_they_turn_the_described_setting_off(capsys) -> None:
    """``--no-cached`` turns off what the field's help describes (precomputed tables); its help
    must say so instead of reading as if the flag itself precomputed them (issue 23, item 9)."""
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--no-cached", "--no-teacher-forcing"):
        after = text.split(flag, 2)[2] if text.count(flag) > 1 else text.split(flag, 1)[1]
        assert after.strip().startswith("Turn this off (on by default):"), flag
    args = parser.parse_args(["train", "--no-cached"])
    assert (args.cached, args.teacher_forcing) == (False, True)


def test_python_dash_m_runs_the_command() -> None:
    """``python -m exitgym.cli`` is the ``exitgym`` command (it had no ``__main__``)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "exitgym.cli", "envs"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "exitgym/EarlyExit-v0" in proc.stdout
