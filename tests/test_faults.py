"""Faults: ``prepare`` / ``train`` killed mid-write, and files edited on disk.

A subprocess runs the real ``prepare`` or ``train`` and is SIGKILLed half-way through its N-th
file write, N drawn at random (the seed is in every failure message; set ``EXITGYM_FAULT_SEED``
to replay one). Afterwards nothing may look complete that is not, and the next run must rebuild
or resume to exactly what an uninterrupted run produces. Files edited on disk must be refused
with a message naming the damage, never used silently.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from exitgym.backbones.cache import CacheError, load_cache
from exitgym.backbones.heads import ExitHeads
from exitgym.data.prepare import clear_cache_memo, prepare
from exitgym.experiments.policies import load_policy
from exitgym.experiments.runs import RunDir, RunError
from exitgym.experiments.training import train
from tests.tiny_project import PREPARE_OPTIONS, make_tiny_project, run_harness, train_config

SEED = int(os.environ.get("EXITGYM_FAULT_SEED", random.SystemRandom().randrange(2**32)))
RNG = random.Random(SEED)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny project, plus a reference prepare + train run (uninterrupted) that counts writes."""
    root = tmp_path_factory.mktemp("faults")
    names = make_tiny_project(root / "project")
    cfg = train_config(names)
    args = {**names, "options": PREPARE_OPTIONS, "train": asdict(cfg),
            "out": str(root / "ref-run")}
    proc = run_harness("count", args, root / "ref-cache", 0, root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["prepare"] > 5 and counts["train"] > 5, counts
    return {"root": root, "names": names, "cfg": cfg, "args": args, "counts": counts}


def use_cache(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setenv("EXITGYM_CACHE", str(path))
    clear_cache_memo()


def prepared(project: dict[str, Any]) -> Any:
    return prepare(**project["names"], progress=False, verbose=False, **PREPARE_OPTIONS)


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def visible_files(root: Path) -> list[Path]:
    """Files a user (or a loader) would take for outputs: no hidden temporary parts."""
    return [p for p in root.rglob("*") if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)]


def assert_no_file_looks_complete(cache: Path, context: str) -> None:
    """Each cache folder is complete and verified, or refused; every visible file is whole."""
    for meta in (cache / "caches").glob("*/meta.json") if (cache / "caches").is_dir() else []:
        if any(part.startswith(".") for part in meta.parent.relative_to(cache).parts):
            continue
        load_cache(meta.parent, verify=True)  # raises CacheError if it only looks complete
    for heads_json in (cache / "prepared").glob("*/heads.json"):
        ExitHeads.load(heads_json.parent)
    for path in visible_files(cache / "prepared") if (cache / "prepared").is_dir() else []:
        if path.suffix == ".json":
            try:
                json.loads(path.read_text())
            except json.JSONDecodeError as err:
                pytest.fail(f"{context}: {path} is truncated ({err})")


def test_killed_prepare_is_rebuilt_to_the_uninterrupted_result(project, monkeypatch) -> None:
    kill_at = RNG.randint(1, project["counts"]["prepare"])
    context = f"EXITGYM_FAULT_SEED={SEED}, prepare killed at write {kill_at}"
    cache = project["root"] / f"kill-prepare-{kill_at}"
    proc = run_harness("prepare", project["args"], cache, kill_at, project["root"])
    assert proc.returncode == -signal.SIGKILL, f"{context}: not killed\n{proc.stderr[-3000:]}"
    try:
        assert_no_file_looks_complete(cache, context)
    except CacheError as err:
        pytest.fail(f"{context}: a cache folder with meta.json fails verification: {err}")
    use_cache(monkeypatch, cache)
    rebuilt = prepared(project)
    use_cache(monkeypatch, project["root"] / "ref-cache")
    reference = prepared(project)
    assert rebuilt.cache_paths.keys() == reference.cache_paths.keys()
    heads = ExitHeads.load(rebuilt.directory)
    for split, path in rebuilt.cache_paths.items():
        got, want = load_cache(path, verify=True), load_cache(reference.cache_paths[split])
        # Built from the heads now on disk (whether they survived the kill or were retrained)...
        assert got.meta["heads_fingerprint"] == heads.fingerprint(), context
        with torch.inference_mode():
            logits = heads(torch.from_numpy(np.array(got.pooled))).numpy()
        np.testing.assert_allclose(got.logits, logits, rtol=1e-6, atol=1e-6, err_msg=context)
        # ... which are the uninterrupted run's heads (head training is reproducible), so the
        # rebuilt logits are the reference's, and so is everything else.
        assert got.meta["heads_fingerprint"] == want.meta["heads_fingerprint"], context
        np.testing.assert_allclose(got.logits, want.logits, rtol=1e-6, atol=1e-6,
                                   err_msg=f"{context}: {split} logits")
        for name in ("pooled", "labels", "lengths", "flops_layer"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name),
                                          err_msg=f"{context}: {split} {name}")


def test_prepare_is_reproducible_whatever_the_global_rng(project, monkeypatch, tmp_path) -> None:
    """Same data, backbone and seed -> the same heads, so a rebuild after a crash (in another
    process, with other random calls before it) reproduces the cache the user had."""
    fingerprints = []
    for k in range(2):
        use_cache(monkeypatch, tmp_path / f"cache-{k}")
        torch.rand(k + 1)  # whatever ran before in this process must not change the result
        fingerprints.append(ExitHeads.load(prepared(project).directory).fingerprint())
    assert fingerprints[0] == fingerprints[1]


def test_killed_train_resumes_to_the_uninterrupted_result(project, monkeypatch) -> None:
    kill_at = RNG.randint(1, project["counts"]["train"])
    context = f"EXITGYM_FAULT_SEED={SEED}, train killed at write {kill_at}"
    out = project["root"] / f"kill-train-{kill_at}"
    args = {**project["args"], "out": str(out)}
    proc = run_harness("train", args, project["root"] / "ref-cache", kill_at, project["root"])
    assert proc.returncode == -signal.SIGKILL, f"{context}: not killed\n{proc.stderr[-3000:]}"
    if (out / "run_state.json").is_file():
        state = json.loads((out / "run_state.json").read_text())
        assert state["status"] != "complete", context
        with pytest.raises(RunError, match="not complete"):
            RunDir.open(out).require_complete()
    for path in visible_files(out) if out.is_dir() else []:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            load_file(str(path))
    use_cache(monkeypatch, project["root"] / "ref-cache")
    train(project["cfg"], out, resume=(out / "run_state.json").is_file(), progress=False)
    RunDir.open(out).require_complete()
    ref = project["root"] / "ref-run"
    got = load_file(str(out / "policy.safetensors"))
    want = load_file(str(ref / "policy.safetensors"))
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), f"{context}: policy weight {key} differs"
    summary = json.loads((out / "eval-test.json").read_text())
    expected = json.loads((ref / "eval-test.json").read_text())
    assert summary["accuracy"] == expected["accuracy"], context


def test_edited_cache_is_refused_by_checksum_and_rebuilt(project, monkeypatch, tmp_path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(project["root"] / "ref-cache", cache, symlinks=True)
    use_cache(monkeypatch, cache)
    path = prepared(project).cache_paths["test"]
    original = load_cache(path).logits.copy()
    flip_last_byte(path / "logits.npy")
    with pytest.raises(CacheError, match=r"logits\.npy: checksum mismatch"):
        load_cache(path)
    clear_cache_memo()
    again = load_cache(prepared(project).cache_paths["test"], verify=True)
    np.testing.assert_array_equal(again.logits, original)


def test_edited_heads_are_refused(project, tmp_path) -> None:
    heads_dir = next((project["root"] / "ref-cache" / "prepared").glob("*/heads.json")).parent
    copy = tmp_path / "heads"
    shutil.copytree(heads_dir, copy)
    flip_last_byte(copy / "heads.safetensors")
    with pytest.raises(ValueError, match="do not match the fingerprint"):
        ExitHeads.load(copy)


def test_edited_policy_of_a_run_is_refused(project, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(project["root"] / "ref-run", run)
    flip_last_byte(run / "policy.safetensors")
    with pytest.raises((RunError, ValueError), match="(?i)checksum|corrupt|modified"):
        load_policy(RunDir.open(run))


def test_edited_checkpoint_is_refused_on_resume(project, monkeypatch, tmp_path) -> None:
    use_cache(monkeypatch, project["root"] / "ref-cache")
    out = tmp_path / "run"

    def stop(update: int) -> None:
        if update == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(project["cfg"], out, progress=False, after_update=stop)
    checkpoint = out / json.loads((out / "run_state.json").read_text())["checkpoint"]
    flip_last_byte(checkpoint / "trainer.safetensors")
    with pytest.raises((RunError, ValueError), match="(?i)checksum|corrupt|modified"):
        train(project["cfg"], out, resume=True, progress=False)
