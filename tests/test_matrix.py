"""Every environment through every command, local and SB3 engines (``exitgym.experiments.matrix``).

Each cell of the matrix runs on tiny models (a 3-layer random BERT and a 3-layer random Llama
with a word tokenizer, shared by the whole module): a working cell must give the checked value
(evaluate recomputes the recorded evaluation, replay --verify passes, infer / generate answer the
same at batch 1 and batched, a resumed run equals the uninterrupted one); a refused cell must be
refused with the matrix's reason. The RLlib and Tune cells are in ``tests/ray/test_matrix_ray.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import exitgym
from exitgym.cli import main
from exitgym.experiments import matrix
from exitgym.experiments.matrix import MATRIX, NO_RUN, TOKEN
from tests.test_token_runs import save_tiny_decoder
from tests.tiny_project import make_tiny_project

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["good fun x1", "bad dull awful x3 and more", "lovely great", "boring x7 dull"]
ENCODER = ["--max-length", "16", "--batch-size", "4", "--num-envs", "4", "--reward", "vanilla",
           "--alpha", "0.5", "--checkpoint-every", "1"]
ENGINE_FLAGS = {"local": ["--steps", "2"],
                "sb3": ["--agent", "ppo", "--steps", "128", "--n-steps", "32", "--num-envs", "2"]}
TOKEN_FLAGS = ["--max-prompts", "8", "--max-new-tokens", "4", "--max-prompt-tokens", "8",
               "--reward", "vanilla", "--alpha", "2.0", "--checkpoint-every", "1"]
CELLS = sorted(k for k in MATRIX if k[2] in ("local", "sb3"))


class Interrupt(KeyboardInterrupt):
    """Stops a run after its first update (what Ctrl-C does)."""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny encoder project (prepared) and a tiny decoder, and the runs trained so far."""
    root = tmp_path_factory.mktemp("matrix")
    names = make_tiny_project(root)
    save_tiny_decoder(root / "tinylm")
    assert main(["prepare", "--task", names["task"], "--backbone", names["backbone"],
                 "--max-length", "16", "--epochs", "2"]) == 0
    return {**names, "decoder": str(root / "tinylm"), "root": root, "runs": {}}


def train_argv(project: dict[str, Any], env: str, backbone: str, engine: str) -> list[str]:
    """The ``exitgym train`` flags of one cell (``--out`` left to the caller)."""
    model = project["backbone"] if backbone == "encoder" else project["decoder"]
    if env == TOKEN:
        data = ["--task", project["task"], "--decoder", model, *TOKEN_FLAGS]
    else:
        data = ["--task", project["task"], "--backbone", model, *ENCODER]
    return ["train", "--env", env, *data, *ENGINE_FLAGS[engine]]


def trained(project: dict[str, Any], env: str, backbone: str, engine: str) -> Path:
    """The run of a working train cell, trained once per module."""
    key = (env, backbone, engine)
    if key not in project["runs"]:
        out = project["root"] / "runs" / "-".join(k.split("/")[-1] for k in key)
        assert main([*train_argv(project, env, backbone, engine), "--out", str(out)]) == 0
        project["runs"][key] = out
    return project["runs"][key]


def _summary(run: Path) -> dict[str, Any]:
    summary = json.loads((run / "eval-test.json").read_text())
    summary["meta"].pop("wall_s", None)
    return summary


def _policies(run: Path) -> dict[str, torch.Tensor]:
    files = sorted(run.glob("*policy.safetensors"))
    assert files, f"no policy file in {run}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(str(f)).items()}


def check_recorded(run: Path, env: str, command: str, capsys) -> bool:
    """The checks a run of any engine passes: ``train`` (complete, of ``env``), ``evaluate``
    (recomputes the recorded numbers), ``replay --verify`` and ``infer`` (batch 1 = batched);
    False for another command (the caller checks it)."""
    capsys.readouterr()
    if command == "train":
        state = json.loads((run / "run_state.json").read_text())
        config = json.loads((run / "config.json").read_text())
        assert state["status"] == "complete" and config["config"]["env"] == env
    elif command == "evaluate":
        recorded = _summary(run)
        assert main(["evaluate", str(run), "--split", "test"]) == 0
        assert _summary(run) == recorded
    elif command == "replay --verify":
        assert main(["replay", str(run), "--verify"]) == 0, capsys.readouterr().err
        assert "matches" in capsys.readouterr().out
    elif command == "infer":
        one, batched = (exitgym.infer(str(run), TEXTS, batch_size=b) for b in (1, 4))
        np.testing.assert_array_equal(one.predictions, batched.predictions)
        np.testing.assert_array_equal(one.exit_layers, batched.exit_layers)
        np.testing.assert_allclose(one.cost, batched.cost, rtol=1e-12)
        np.testing.assert_allclose(one.flops / one.full_flops, one.cost, rtol=1e-12)
        assert len(one.predictions) == len(TEXTS) and (one.cost > 0).all()
    else:
        return False
    return True


def check_works(project: dict[str, Any], key: tuple[str, str, str, str], capsys) -> None:
    env, backbone, engine, command = key
    run = trained(project, env, backbone, engine)
    if check_recorded(run, env, command, capsys):
        return
    if command == "generate":
        one, batched = (exitgym.generate(run, TEXTS, max_new_tokens=4, batch_size=b)
                        for b in (1, 2))
        assert one.generated_ids == batched.generated_ids
        assert np.array_equal(one.cost, batched.cost) and len(one.generated_ids) == len(TEXTS)
    else:  # --resume: an interrupted copy resumed from the CLI equals the uninterrupted run
        from exitgym.experiments.configs import TrainConfig
        from exitgym.experiments.training import train
        from exitgym.utils.configs import from_dict

        cfg = from_dict(TrainConfig, json.loads((run / "config.json").read_text())["config"])
        cut = run.with_name(run.name + "-cut")

        def stop(update: int) -> None:
            if update == 1:
                raise Interrupt

        with pytest.raises(Interrupt):
            train(cfg, cut, progress=False, plots=False, after_update=stop)
        assert main(["train", "--resume", "--out", str(cut)]) == 0, capsys.readouterr().err
        whole, resumed = _policies(run), _policies(cut)
        assert whole.keys() == resumed.keys()
        assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def check_refused(project: dict[str, Any], key: tuple[str, str, str, str], reason: str,
                  capsys, out: Path) -> None:
    env, backbone, engine, command = key
    if reason == NO_RUN:  # the combination never makes a run: its train cell is refused
        assert not MATRIX[env, backbone, engine, "train"].works
        return
    if command == "train":
        capsys.readouterr()
        assert main([*train_argv(project, env, backbone, engine), "--out", str(out)]) == 2
        assert reason in capsys.readouterr().err
        return
    run = trained(project, env, backbone, engine)
    if command == "infer":
        with pytest.raises(ValueError) as err:
            exitgym.infer(str(run), TEXTS)
    else:
        assert command == "generate", key
        with pytest.raises(Exception) as err:  # noqa: PT011 (RunError; the message is checked)
            exitgym.generate(run, TEXTS, max_new_tokens=4)
    assert reason in str(err.value)


@pytest.mark.parametrize("key", CELLS, ids=["|".join(k) for k in CELLS])
def test_matrix_cell(project: dict[str, Any], key: tuple[str, str, str, str], capsys,
                     tmp_path: Path) -> None:
    value = MATRIX[key]
    if value.works:
        check_works(project, key, capsys)
    else:
        check_refused(project, key, value.reason, capsys, tmp_path / "run")


def test_matrix_covers_every_combination_and_names_its_reasons() -> None:
    from exitgym.experiments.env_spec import env_ids

    assert sorted(matrix.ENVS) == env_ids()
    assert len(MATRIX) == len(matrix.ENVS) * len(matrix.BACKBONES) * len(matrix.ENGINES) * len(
        matrix.COMMANDS)
    assert all(v.works == (v.reason == "") for v in MATRIX.values())
    assert set(matrix.reasons()) == {v.reason for v in MATRIX.values() if not v.works}
    assert set(matrix.reasons()) - {NO_RUN} <= set(matrix.WHY)
    table = matrix.markdown_table("local")
    assert len(table) == 2 + len(matrix.ENVS) * len(matrix.BACKBONES)
    assert table[2] == ("| `EarlyExit-v0` | encoder | yes | yes | yes | yes | no (8) | yes |")
    with pytest.raises(KeyError, match="no matrix cell"):
        matrix.cell("exitgym/EarlyExit-v0", "encoder", "nope", "train")
