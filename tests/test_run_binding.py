"""Runs bound to their data: a recorded result is never recomputed on other data or settings.

A run trained on a CSV is refused by ``evaluate``, ``replay --verify``, ``exitgym.infer`` and
``--resume`` once a row is appended to the CSV, with the message saying how to get the data back,
and its recorded files are left untouched; restoring the file makes it usable again. Editing
``config.json`` is refused (it is the run's one source of truth). ``replay --verify --policy``
re-runs the saved policy, so it fails when ``policy.safetensors`` is gone while the
recorded-actions mode still passes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exitgym.cli import main
from exitgym.experiments.runs import RunError
from exitgym.experiments.training import train
from tests.tiny_project import PREPARE_OPTIONS, make_tiny_project, train_config

FAST = ["--max-length", str(PREPARE_OPTIONS["max_length"]), "--steps", "3", "--batch-size", "8",
        "--num-envs", "8", "--reward", "vanilla", "--alpha", "0.3"]


@pytest.fixture()
def project(tmp_path: Path) -> dict[str, str]:
    return make_tiny_project(tmp_path / "project")


def _refusal(run: Path, split: str) -> str:
    """The start of the refusal for changed rows of ``split``, from what config.json recorded."""
    config = json.loads((run / "config.json").read_text())
    want = config["fingerprints"][split]["data_fingerprint"]
    return (f"{run} was computed on other data: the data rows of split {split!r} changed since "
            f"the run was recorded (data_fingerprint {want[:12]}… recorded, ")


def _restore_hint(run: Path) -> str:
    source = json.loads((run / "config.json").read_text())["data_source"]
    return (f"are left as they are; restore {source['path']} as it was when the run was trained "
            f"(sha256 {source['sha256']}, {source['bytes']} bytes), or train a new run on the new "
            f"data.")


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != "run_state.json"}


def test_changed_data_is_refused_everywhere_and_nothing_is_overwritten(project, tmp_path,
                                                                      capsys) -> None:
    import exitgym

    run = tmp_path / "run"
    csv = Path(project["task"])
    original = csv.read_bytes()
    assert main(["train", "--task", project["task"], "--backbone", project["backbone"], *FAST,
                 "--out", str(run)]) == 0
    capsys.readouterr()
    before = _snapshot(run)
    csv.write_bytes(original + b'"one more great row",pos\n')

    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert _refusal(run, "test") in err or _refusal(run, "policy") in err
    assert _restore_hint(run) in err
    assert main(["replay", str(run), "--verify"]) == 2
    assert _restore_hint(run) in capsys.readouterr().err
    with pytest.raises(RunError, match="was computed on other data"):
        exitgym.infer(str(run), ["good fun"])
    assert _snapshot(run) == before  # no result was recomputed on the new data

    csv.write_bytes(original)  # the run's data back: everything works again, with equal results
    assert main(["evaluate", str(run)]) == 0
    assert main(["replay", str(run), "--verify"]) == 0
    after = _snapshot(run)
    assert after["trajectories/eval-test.parquet"] == before["trajectories/eval-test.parquet"]


def test_resume_refuses_changed_data(project, tmp_path) -> None:
    class Stop(Exception):
        pass

    def stop(update: int) -> None:
        if update == 2:
            raise Stop

    run, cfg = tmp_path / "run", train_config(project)
    with pytest.raises(Stop):
        train(cfg, run, progress=False, plots=False, after_update=stop)
    csv = Path(project["task"])
    original = csv.read_bytes()
    csv.write_bytes(original + b'"one more great row",pos\n')
    with pytest.raises(RunError) as err:
        train(cfg, run, resume=True, progress=False, plots=False)
    assert str(err.value).startswith(_refusal(run, "test")) or \
        str(err.value).startswith(_refusal(run, "policy"))
    csv.write_bytes(original)
    assert train(cfg, run, resume=True, progress=False, plots=False).run.status == "complete"


def test_config_json_is_the_one_source_of_truth(project, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--task", project["task"], "--backbone", project["backbone"], *FAST,
                 "--out", str(run)]) == 0
    capsys.readouterr()
    config = json.loads((run / "config.json").read_text())
    config["config"]["alpha"] = 0.9
    (run / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(run)]) == 2
    assert (f"{run / 'config.json'} was modified after the run wrote it (sha256 checksum "
            "mismatch") in capsys.readouterr().err


def test_replay_verify_policy_reruns_the_saved_policy(project, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["train", "--task", project["task"], "--backbone", project["backbone"], *FAST,
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["replay", str(run), "--verify", "--policy"]) == 0
    assert "the saved policy took every recorded action in 1 of 1 files" in \
        capsys.readouterr().out
    moved = tmp_path / "policy.safetensors"
    shutil.move(run / "policy.safetensors", moved)
    assert main(["replay", str(run), "--verify"]) == 1  # the run's manifest misses it
    assert f"{run / 'policy.safetensors'} is missing (the run wrote it)" in \
        capsys.readouterr().err
    episodes = str(run / "trajectories" / "eval-test.parquet")
    assert main(["replay", episodes, "--verify"]) == 0  # recorded actions need no policy
    capsys.readouterr()
    assert main(["replay", episodes, "--verify", "--policy"]) == 2
    assert (f"{run / 'policy.safetensors'} is missing (it was written by the run and recorded)"
            in capsys.readouterr().err)
    assert main(["replay", str(run), "--policy"]) == 2
    assert "--policy re-runs the saved policy during --verify; add --verify" in \
        capsys.readouterr().err


def test_a_live_skip_run_is_bound_to_its_data(project, tmp_path, capsys) -> None:
    """Live skip envs run the prepared backbone and heads on a prepared split's inputs: a changed
    CSV is refused for them too (they used to be evaluated on whatever the data was now)."""
    run = tmp_path / "skip"
    assert main(["train", "--env", "exitgym/SkipBlock-v0", "--task", project["task"],
                 "--backbone", project["backbone"], "--max-length", "16", "--steps", "2",
                 "--batch-size", "4", "--num-envs", "4", "--reward", "vanilla", "--alpha", "0.5",
                 "--out", str(run)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    config = json.loads((run / "config.json").read_text())
    splits = (config["config"]["train_split"], config["config"]["eval_split"])
    recorded = config["fingerprints"]
    assert set(splits) <= set(recorded)
    assert all(recorded[s]["backbone_fingerprint"] and recorded[s]["heads_fingerprint"]
               for s in splits)
    before = _snapshot(run)
    csv = Path(project["task"])
    original = csv.read_bytes()
    csv.write_bytes(original + b'"one more great row",pos\n')
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert any(_refusal(run, s) in err for s in splits)
    assert main(["replay", str(run), "--verify"]) == 2
    assert _restore_hint(run) in capsys.readouterr().err
    assert _snapshot(run) == before
    csv.write_bytes(original)
    assert main(["replay", str(run), "--verify"]) == 0, capsys.readouterr().err


def test_a_changed_backbone_is_refused_before_any_cache_is_rebuilt(project, tmp_path,
                                                                   capsys) -> None:
    """New weights in the run's backbone directory: evaluate and --resume refuse, and no cache
    or heads are built from those weights first (the refusal used to come after a rebuild)."""
    from safetensors.torch import load_file, save_file

    from exitgym.data.prepare import clear_cache_memo
    from exitgym.utils.paths import cache_dir

    run = tmp_path / "run"
    # frozen heads: the backbone's own weights are used (fine-tuned recipes load their own)
    assert main(["train", "--task", project["task"], "--backbone", project["backbone"], *FAST,
                 "--heads", "frozen", "--out", str(run)]) == 0
    capsys.readouterr()
    weights = Path(project["backbone"]) / "model.safetensors"
    tensors = load_file(str(weights))
    name = sorted(k for k in tensors if k.endswith("weight"))[0]
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, str(weights), metadata={"format": "pt"})
    clear_cache_memo()  # a new process: nothing prepared in memory
    built = sorted(p.name for p in (cache_dir() / "caches").iterdir())
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    recorded = json.loads((run / "config.json").read_text())["fingerprints"]["test"]
    assert (f"{run} was computed on other data: the backbone weights changed since the run was "
            f"recorded (backbone_fingerprint {recorded['backbone_fingerprint'][:12]}… recorded, "
            ) in err
    assert "restore the backbone and the prepared heads the run used" in err
    assert main(["replay", str(run), "--verify"]) == 2
    assert "the backbone weights changed" in capsys.readouterr().err
    assert sorted(p.name for p in (cache_dir() / "caches").iterdir()) == built
