"""``compare --engine tune``: a 4-trial sweep equals the local engine on the same seeds, and a
sweep killed after one trial resumes and trains only the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exitgym.data.synthetic import synthetic_cache
from exitgym.experiments.compare import compare, train_jobs
from exitgym.experiments.configs import CompareConfig
from exitgym.experiments.runs import RunDir
from exitgym.integrations.tune import compare_tune

CONFIG = CompareConfig(rewards=("hardness",), alphas=(0.2, 0.5), seeds=(0, 1),
                       rules=("entropy",), steps=3, batch_size=16, num_envs=16)
"""4 trials (1 reward × 2 α × 2 seeds) of 3 REINFORCE updates each."""


def make_caches() -> dict:
    return {"train": synthetic_cache(num_samples=48, num_layers=5, seed=0),
            "validation": synthetic_cache(num_samples=24, num_layers=5, seed=1),
            "test": synthetic_cache(num_samples=32, num_layers=5, seed=2)}


def comparable(summary: dict) -> str:
    """summary.json without what may differ between two identical sweeps (none expected)."""
    return json.dumps(summary, sort_keys=True)


@pytest.fixture(scope="module")
def local_summary(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("local") / "cmp"
    return compare(CONFIG, out, caches=make_caches(), progress=False).summary


def test_four_trial_tune_sweep_equals_local_compare(ray_local, tmp_path, local_summary) -> None:
    assert len(train_jobs(CONFIG)) == 4
    result = compare_tune(CONFIG, tmp_path / "tune", caches=make_caches(), progress=False)
    assert comparable(result.summary) == comparable(local_summary)
    assert RunDir.open(tmp_path / "tune").status == "complete"
    for job in train_jobs(CONFIG):
        RunDir.open(tmp_path / "tune" / "runs" / job.name).require_complete()


KILLED_SWEEP = """
import sys
sys.path.insert(0, {tests!r})
from test_tune_compare import CONFIG, make_caches
from exitgym.integrations.tune import compare_tune
compare_tune(CONFIG, {out!r}, caches=make_caches(), progress=False, max_concurrent=1)
"""


def _complete_runs(out: Path) -> dict[str, int]:
    """name -> mtime (ns) of policy.safetensors of every complete run under ``out/runs``."""
    done = {}
    for job in train_jobs(CONFIG):
        path = out / "runs" / job.name
        if (path / "run_state.json").is_file() and RunDir.open(path).status == "complete":
            done[job.name] = (path / "policy.safetensors").stat().st_mtime_ns
    return done


def test_sweep_killed_after_one_trial_resumes_and_trains_only_the_rest(
        tmp_path, local_summary) -> None:
    out = tmp_path / "killed"
    code = KILLED_SWEEP.format(tests=str(Path(__file__).parent), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ})
    try:
        deadline = time.monotonic() + 150
        while not _complete_runs(out) and time.monotonic() < deadline:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and whatever it started
        proc.wait()
    before = _complete_runs(out)
    assert 1 <= len(before) < 4, before
    assert RunDir.open(out).status != "complete"

    from exitgym.integrations.ray import ray_session

    with ray_session(num_cpus=2):
        result = compare_tune(CONFIG, out, caches=make_caches(), progress=False)
    after = _complete_runs(out)
    assert len(after) == 4
    assert {name: after[name] for name in before} == before  # finished trials not redone
    assert comparable(result.summary) == comparable(local_summary)
