"""The RLlib and Tune cells of the support matrix (``exitgym.experiments.matrix``).

Like ``tests/test_matrix.py`` for the local and SB3 engines: a working cell gives the checked
value, a refused one is refused with the matrix's reason. One tiny project (a 3-layer random BERT
and a 3-layer random Llama) is shared by the module; one RLlib run and one 1-trial Tune sweep
serve every working cell.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import exitgym
from exitgym.cli import main
from exitgym.experiments.matrix import ENVS, MATRIX, NO_RUN, TUNE_ENV, TUNE_TOKEN
from tests.test_matrix import _policies, check_recorded, train_argv
from tests.test_token_runs import save_tiny_decoder
from tests.tiny_project import make_tiny_project

TEXTS = ["good fun x1", "bad dull awful x3 and more", "lovely great", "boring x7 dull"]
CELLS = sorted(k for k in MATRIX if k[2] in ("rllib", "tune"))
COMPARE = ["--max-length", "16", "--batch-size", "8", "--num-envs", "8", "--rewards", "vanilla",
           "--alphas", "0.3", "--seeds", "0", "--rules", "entropy", "--steps", "2"]
TRIAL = "reinforce-vanilla-a0.3-s0"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, ray_local) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("matrix-ray")
    names = make_tiny_project(root)
    save_tiny_decoder(root / "tinylm")
    assert main(["prepare", "--task", names["task"], "--backbone", names["backbone"],
                 "--max-length", "16", "--epochs", "2"]) == 0
    return {**names, "decoder": str(root / "tinylm"), "root": root, "runs": {}}


def _data(project: dict[str, Any], backbone: str) -> list[str]:
    model = project["backbone"] if backbone == "encoder" else project["decoder"]
    return ["--task", project["task"], "--backbone", model]


def run_of(project: dict[str, Any], engine: str) -> Path:
    """The EarlyExit-v0 run of the engine: an RLlib run, or the trial run of a Tune sweep."""
    if engine not in project["runs"]:
        out = project["root"] / engine
        if engine == "rllib":
            argv = ["train", *_data(project, "encoder"), "--max-length", "16", "--batch-size",
                    "8", "--num-envs", "8", "--engine", "rllib", "--agent", "ppo", "--steps",
                    "2", "--reward", "vanilla", "--alpha", "0.3", "--out", str(out)]
            project["runs"][engine] = out
        else:
            argv = ["compare", *_data(project, "encoder"), *COMPARE, "--engine", "tune",
                    "--out", str(out)]
            project["runs"][engine] = out / "runs" / TRIAL
        project["argv", engine] = argv
        assert main(argv) == 0
    return project["runs"][engine]


def check_works(project: dict[str, Any], engine: str, command: str, capsys) -> None:
    run = run_of(project, engine)
    if check_recorded(run, ENVS[0], command, capsys):
        return
    capsys.readouterr()
    # tune --resume: a trial interrupted after one update, resumed by the same command
    from exitgym.experiments.configs import TrainConfig
    from exitgym.experiments.runs import RunDir
    from exitgym.experiments.training import train
    from exitgym.utils.configs import from_dict

    assert (engine, command) == ("tune", "--resume")
    whole = _policies(run)
    cfg = from_dict(TrainConfig, json.loads((run / "config.json").read_text())["config"])
    shutil.rmtree(run)

    def stop(update: int) -> None:
        if update == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, progress=False, plots=False, after_update=stop)
    RunDir(run.parents[1]).set_status("interrupted")
    assert main(project["argv", engine]) == 0, capsys.readouterr().err
    resumed = _policies(run)
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def check_refused(project: dict[str, Any], key: tuple[str, str, str, str], reason: str,
                  capsys, out: Path) -> None:
    env, backbone, engine, command = key
    if reason == NO_RUN:
        assert not MATRIX[env, backbone, engine, "train"].works
        return
    capsys.readouterr()
    if reason in (TUNE_ENV, TUNE_TOKEN):  # a comparison on another env asked of Tune
        assert main(["compare", *_data(project, backbone), *COMPARE, "--env", env, "--engine",
                     "tune", "--out", str(out)]) == 2
        assert reason in capsys.readouterr().err
        return
    if command == "train" and engine == "rllib":
        argv = [*train_argv(project, env, backbone, "local"), "--agent", "ppo", "--engine", "rllib",
                "--out", str(out)]
        assert main(argv) == 2
        assert reason in capsys.readouterr().err
    elif command == "train":  # tune: the sweep's preparation refuses
        assert main(["compare", *_data(project, backbone), *COMPARE, "--engine", "tune",
                     "--out", str(out)]) == 2
        assert reason in capsys.readouterr().err
    elif command == "--resume":
        assert main(["train", *_data(project, backbone), "--engine", "rllib", "--resume",
                     "--out", str(run_of(project, engine))]) == 2
        assert reason in capsys.readouterr().err
    else:
        assert command == "generate", key
        with pytest.raises(Exception) as err:  # noqa: PT011 (RunError; the message is checked)
            exitgym.generate(run_of(project, engine), TEXTS, max_new_tokens=4)
        assert reason in str(err.value)


@pytest.mark.parametrize("key", CELLS, ids=["|".join(k) for k in CELLS])
def test_matrix_cell(project: dict[str, Any], key: tuple[str, str, str, str], capsys,
                     tmp_path: Path) -> None:
    env, backbone, engine, command = key
    value = MATRIX[key]
    if value.works:
        assert (env, backbone) == (ENVS[0], "encoder")
        check_works(project, engine, command, capsys)
    else:
        check_refused(project, key, value.reason, capsys, tmp_path / "run")
