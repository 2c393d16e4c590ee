"""No pickle from run or cache directories: a planted malicious pickle is never executed.

The payload, when unpickled, creates a marker file (a sanity test proves it does). It is planted
in place of, and next to, the files exitgym reads from cache, heads and run directories; every
loader must refuse it (with an error naming the file) or ignore it, and the marker must never
appear. A source scan also forbids the unpickling APIs in the package.
"""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from exitgym.backbones.cache import CacheError, load_cache
from exitgym.backbones.heads import ExitHeads
from exitgym.data.prepare import clear_cache_memo, prepare
from exitgym.experiments.policies import load_policy
from exitgym.experiments.runs import RunDir
from exitgym.experiments.training import train
from exitgym.experiments.trajectories import load_trajectories
from tests.tiny_project import PREPARE_OPTIONS, make_tiny_project, train_config

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("exitgym", "envs", "agents", "backbones")


class Evil:
    """Unpickling this creates ``marker`` (stands in for arbitrary code execution)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A prepared tiny task and a finished training run, in a module-private cache."""
    root = tmp_path_factory.mktemp("safe")
    names = make_tiny_project(root / "project")
    mp = pytest.MonkeyPatch()
    mp.setenv("EXITGYM_CACHE", str(root / "cache"))
    clear_cache_memo()
    prepared = prepare(**names, progress=False, verbose=False, **PREPARE_OPTIONS)
    train(train_config(names, steps=2, checkpoint_every=1), root / "run", progress=False)
    yield {"root": root, "names": names, "prepared": prepared, "run": root / "run"}
    mp.undo()
    clear_cache_memo()


@pytest.fixture()
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def payload(marker: Path) -> bytes:
    return pickle.dumps(Evil(marker))


def test_the_payload_really_executes_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "sanity"
    pickle.loads(payload(marker))
    assert marker.exists()
    np.save(tmp_path / "obj.npy", np.array([Evil(tmp_path / "npy")], dtype=object),
            allow_pickle=True)
    np.load(tmp_path / "obj.npy", allow_pickle=True)
    assert (tmp_path / "npy").exists()


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def plant_extras(folder: Path, marker: Path) -> None:
    """Pickles under the names other tools would load (torch, SB3, joblib, numpy)."""
    for name in ("model.pt", "pytorch_model.bin", "policy.pkl", "model.zip", "data.pickle"):
        (folder / name).write_bytes(payload(marker))
    np.save(folder / "extra.npy", np.array([Evil(marker)], dtype=object), allow_pickle=True)


def test_cache_with_an_object_array_is_refused(project, marker, tmp_path) -> None:
    cache = copy(project["prepared"].cache_paths["test"], tmp_path / "cache")
    plant_extras(cache, marker)
    load_cache(cache, verify=False)  # the extra files are never read
    np.save(cache / "logits.npy", np.array([Evil(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(CacheError, match=r"logits\.npy"):
        load_cache(cache, verify=False)
    assert not marker.exists()


def test_cache_rebuild_never_unpickles(project, marker, monkeypatch) -> None:
    monkeypatch.setenv("EXITGYM_CACHE", str(project["root"] / "cache"))
    path = project["prepared"].cache_paths["validation"]
    np.save(path / "pooled.npy", np.array([Evil(marker)], dtype=object), allow_pickle=True)
    clear_cache_memo()
    rebuilt = prepare(**project["names"], progress=False, verbose=False, **PREPARE_OPTIONS)
    assert load_cache(rebuilt.cache_paths["validation"], verify=True).pooled.dtype == np.float32
    assert not marker.exists()


def test_heads_replaced_by_a_pickle_are_refused(project, marker, tmp_path) -> None:
    heads = copy(project["prepared"].directory, tmp_path / "heads")
    plant_extras(heads, marker)
    ExitHeads.load(heads)  # extras ignored
    (heads / "heads.safetensors").write_bytes(payload(marker))
    with pytest.raises(Exception, match="(?i)safetensor|header|invalid|deserializ"):
        ExitHeads.load(heads)
    assert not marker.exists()


def test_run_policy_replaced_by_a_pickle_is_refused(project, marker, tmp_path) -> None:
    from exitgym.inference import ExitInference

    run = copy(project["run"], tmp_path / "run")
    plant_extras(run, marker)
    load_policy(RunDir.open(run))  # extras ignored
    torch.save(Evil(marker), run / "policy.safetensors")  # a torch pickle under the right name
    with pytest.raises(Exception, match="(?i)safetensor|header|invalid|deserializ"):
        load_policy(RunDir.open(run))
    with pytest.raises(Exception, match="(?i)safetensor|header|invalid|deserializ"):
        ExitInference.from_run(run)
    assert not marker.exists()


def test_checkpoint_replaced_by_a_pickle_is_refused(project, marker, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("EXITGYM_CACHE", str(project["root"] / "cache"))
    clear_cache_memo()
    run = tmp_path / "run"

    def stop(update: int) -> None:
        if update == 1:
            raise KeyboardInterrupt

    cfg = train_config(project["names"], steps=2, checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, progress=False, after_update=stop)
    checkpoint = run / json.loads((run / "run_state.json").read_text())["checkpoint"]
    plant_extras(checkpoint, marker)
    (checkpoint / "trainer.safetensors").write_bytes(payload(marker))
    with pytest.raises(Exception, match="(?i)safetensor|header|invalid|deserializ"):
        train(cfg, run, resume=True, progress=False)
    assert not marker.exists()


def test_trajectories_replaced_by_a_pickle_are_refused(project, marker, tmp_path) -> None:
    run = copy(project["run"], tmp_path / "run")
    path = next((run / "trajectories").glob("*.parquet"))
    load_trajectories(path)
    path.write_bytes(payload(marker))
    with pytest.raises(ValueError, match="not a readable Parquet trajectory file"):
        load_trajectories(path)
    assert not marker.exists()


FORBIDDEN = [
    (re.compile(r"\bpickle\.loads?\("), "pickle.load"),
    (re.compile(r"\b(cloudpickle|dill|joblib)\b"), "a pickle-based library"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
    (re.compile(r"\bread_pickle\("), "pandas.read_pickle"),
    (re.compile(r"\b(PPO|A2C|DQN|SAC|TD3|RecurrentPPO|MaskablePPO|TRPO|QRDQN)\.load\("),
     "SB3's zip loader (cloudpickle)"),
]


def _calls(source: str, name: str) -> list[str]:
    """The argument text of every ``name(`` call (balanced parentheses)."""
    out = []
    for match in re.finditer(re.escape(name) + r"\(", source):
        depth, i = 1, match.end()
        while depth and i < len(source):
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            i += 1
        out.append(source[match.end():i - 1])
    return out


def test_package_source_never_unpickles() -> None:
    problems = []
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            source = path.read_text()
            code = "\n".join(line for line in source.splitlines()
                             if not line.lstrip().startswith("#"))
            for pattern, what in FORBIDDEN:
                if pattern.search(code):
                    problems.append(f"{path.relative_to(ROOT)} uses {what}")
            for args in _calls(code, "torch.load"):
                if "weights_only=True" not in args.replace(" ", ""):
                    problems.append(f"{path.relative_to(ROOT)}: torch.load without weights_only")
            for args in _calls(code, "np.load") + _calls(code, "numpy.load"):
                if "allow_pickle=False" not in args.replace(" ", ""):
                    problems.append(f"{path.relative_to(ROOT)}: np.load without allow_pickle=False")
    assert not problems, "\n".join(problems)
