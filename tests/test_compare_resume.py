"""An interrupted ``compare`` / ``demo`` resumes: the same command skips finished agents.

Issue 23 (round two): after Ctrl-C with 36 of 66 agents trained, the same command refused
("already holds a run (status 'interrupted')") and only ``--overwrite`` (retraining everything)
got past it. Here a tiny comparison is interrupted while its third agent trains; the rerun must
not touch the two finished runs, continue the rest, and end with the uninterrupted summary.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from exitgym.cli import main
from exitgym.data.synthetic import synthetic_cache
from exitgym.experiments import compare as compare_module
from exitgym.experiments.compare import compare, train_jobs
from exitgym.experiments.configs import CompareConfig
from exitgym.experiments.runs import RunDir, RunError

CONFIG = CompareConfig(rewards=("hardness",), alphas=(0.2, 0.5), seeds=(0, 1),
                       rules=("entropy",), steps=4, batch_size=16, num_envs=16)
"""4 agents (1 reward × 2 α × 2 seeds) of 4 REINFORCE updates each, plus one rule."""


def make_caches() -> dict:
    return {"policy": synthetic_cache(num_samples=48, num_layers=4, seed=0),
            "validation": synthetic_cache(num_samples=24, num_layers=4, seed=1),
            "test": synthetic_cache(num_samples=32, num_layers=4, seed=2)}


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root``: its bytes and modification time (ns)."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("full") / "cmp"
    compare(CONFIG, out, caches=make_caches(), progress=False)
    return json.loads((out / "summary.json").read_text())


def test_an_interrupted_comparison_resumes_skipping_finished_agents(
        uninterrupted, tmp_path: Path, monkeypatch, capsys) -> None:
    real = compare_module.train
    calls: list[tuple[str, bool]] = []

    def counting(cfg, out, **kwargs):
        calls.append((Path(out).name, kwargs.get("resume", False)))
        if len(calls) == 3 and interrupt:  # Ctrl-C half-way through the third agent
            def stop(update: int) -> None:
                if update == 2:
                    raise KeyboardInterrupt
            kwargs["after_update"] = stop
        return real(cfg, out, **kwargs)

    monkeypatch.setattr(compare_module, "train", counting)
    names = [job.name for job in train_jobs(CONFIG)]
    out = tmp_path / "cmp"
    with pytest.raises(RunError, match=r"--resume: .*cmp holds no run to resume"):
        compare(CONFIG, out, caches=make_caches(), progress=False, resume=True)
    assert not out.exists()
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        compare(CONFIG, out, caches=make_caches(), progress=False)
    assert RunDir.open(out).status == "interrupted"
    assert RunDir.open(out / "runs" / names[2]).status == "interrupted"
    finished = {name: snapshot(out / "runs" / name) for name in names[:2]}

    # other flags are refused, naming the field; the refusal changes nothing
    with pytest.raises(RunError) as err:
        compare(replace(CONFIG, steps=5), out, caches=make_caches(), progress=False)
    assert (f"{out} holds an unfinished comparison (status 'interrupted') of other flags: "
            f"--steps 4 (now 5); rerun it with its own flags to resume it, or choose another "
            f"--out or --overwrite to replace it") == str(err.value)
    assert RunDir.open(out).status == "interrupted"

    interrupt, calls[:] = False, []
    capsys.readouterr()
    result = compare(CONFIG, out, caches=make_caches(), progress=True)
    printed = capsys.readouterr().out
    assert (f"resuming {out} (status 'interrupted'): 2 of 4 trained agents are complete and "
            f"skipped ({names[0]}, {names[1]})\n  continued from their last checkpoint: "
            f"{names[2]}\n") in printed
    # the finished agents were not trained again: not called, not one byte or mtime changed
    assert calls == [(names[2], True), (names[3], False)]
    assert {name: snapshot(out / "runs" / name) for name in names[:2]} == finished
    assert result.out == out and RunDir.open(out).status == "complete"
    assert json.loads((out / "summary.json").read_text()) == uninterrupted

    # a complete comparison is only replaced with --overwrite
    with pytest.raises(RunError, match=r"already holds a run \(status 'complete'\); choose "
                                       r"another --out or --overwrite to replace it"):
        compare(CONFIG, out, caches=make_caches(), progress=False)
    with pytest.raises(RunError, match="--resume: .* is already complete"):
        compare(CONFIG, out, caches=make_caches(), progress=False, resume=True)


@pytest.mark.parametrize("how, code", [("ctrl-c", 130), ("sigterm", 143)])
def test_an_interrupted_compare_command_prints_the_command_that_resumes_it(
        how: str, code: int, tmp_path: Path, monkeypatch, capsys) -> None:
    """Ctrl-C and SIGTERM both end ``exitgym compare`` with the next step (before: "interrupted"
    alone; SIGTERM killed the process and left the run "running")."""
    def interrupted(config, out, **kwargs):
        RunDir.create(out, resumable=False)
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # the CLI's handler raises where we are
        raise KeyboardInterrupt

    def unhandled(signum, frame):
        raise RuntimeError("SIGTERM reached the test: the CLI installed no handler")

    monkeypatch.setattr(compare_module, "compare", interrupted)
    monkeypatch.chdir(tmp_path)  # the default --out, runs/<time>-compare, goes here
    before = signal.signal(signal.SIGTERM, unhandled)  # never the default: it kills pytest
    out = tmp_path / "cmp"
    argv = ["compare", "--rewards", "hardness", "--alphas", "0.2,0.5", "--seeds", "0,1",
            "--rules", "entropy"]
    try:
        assert main(argv) == code  # no --out: the hint names the default one it chose
        err = capsys.readouterr().err
        default = err.split(" in ", 1)[1].split(";", 1)[0]
        assert err.endswith(f"interrupted: 0 of 4 trained agents are complete in {default}; "
                            f"resume with:\n  exitgym {' '.join(argv)} --out {default}\n")
        assert main([*argv, "--out", str(out)]) == code
        assert capsys.readouterr().err.endswith(
            f"in {out}; resume with:\n  exitgym {' '.join(argv)} --out {out}\n")
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the CLI's handler is removed
    finally:
        signal.signal(signal.SIGTERM, before)
