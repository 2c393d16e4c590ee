"""SIGTERM and stale runs: a run killed by a scheduler is ``interrupted`` or stale, and resumable.

Issue 23 (round two): SIGTERM killed ``exitgym`` outright and left ``"status": "running"`` for
ever, so the run could only be overwritten. SIGTERM now ends a command like Ctrl-C (status
``interrupted``, exit code 143); a run records the pid and host that write it, so one left
``running`` by a process that is gone reads as stale and resumes, while one whose process is
alive is refused.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exitgym.experiments.runs import RunDir, RunError
from exitgym.experiments.training import train
from tests.test_overwrite import CACHES, CFG
from tests.tiny_project import dead_pid, make_tiny_project

ROOT = Path(__file__).resolve().parent.parent


def interrupted_run(out: Path) -> RunDir:
    """A run Ctrl-C stopped after update 3 (checkpoint at 2)."""
    def stop(update: int) -> None:
        if update == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(CFG, out, caches=CACHES, progress=False, plots=False, after_update=stop)
    return RunDir.open(out)


def test_a_run_left_running_by_a_dead_process_is_stale_and_resumes(tmp_path: Path) -> None:
    run = interrupted_run(tmp_path / "run")
    host = socket.gethostname()
    assert (run.state["pid"], run.state["host"]) == (os.getpid(), host)  # recorded at start
    pid = dead_pid()
    run.update_state(status="running", pid=pid)  # what SIGKILL leaves
    assert run.stale
    stale = f"status 'running', stale: its process {pid} on {host} is gone, so it can be resumed"
    with pytest.raises(RunError) as err:
        train(CFG, run.path, caches=CACHES, progress=False, plots=False)
    assert str(err.value) == (f"{run.path} already holds a run ({stale}); choose another --out, "
                              f"--resume to continue an interrupted one or --overwrite to "
                              f"replace it")
    with pytest.raises(RunError, match=rf"is not complete \({stale}\)"):
        run.require_complete()
    result = train(CFG, run.path, resume=True, caches=CACHES, progress=False, plots=False)
    assert result.run.status == "complete" and not result.run.stale
    assert result.run.state["pid"] == os.getpid()


def test_a_run_whose_process_is_alive_is_refused(tmp_path: Path) -> None:
    run = interrupted_run(tmp_path / "run")
    run.update_state(status="running", pid=os.getpid())  # this process: certainly alive
    before = (run.path / "run_state.json").read_text()
    live = (f"{run.path} already holds a run that is still running (pid {os.getpid()} on "
            f"{socket.gethostname()}); wait for it to end or stop it (kill {os.getpid()}) first")
    for options in ({"resume": True}, {"overwrite": True}, {}):
        with pytest.raises(RunError) as err:
            train(CFG, run.path, caches=CACHES, progress=False, plots=False, **options)
        assert str(err.value) == live, options
    assert not run.stale
    assert (run.path / "run_state.json").read_text() == before  # untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="start times read from /proc")
def test_a_recycled_process_id_is_not_taken_for_the_writer(tmp_path: Path) -> None:
    """The id is alive, but its process started at another time than the run's writer did."""
    run = interrupted_run(tmp_path / "run")
    assert isinstance(run.state["started"], int)  # recorded at start
    run.update_state(status="running", pid=os.getpid(), started=run.state["started"] + 1)
    assert run.stale
    assert train(CFG, run.path, resume=True, caches=CACHES, progress=False,
                 plots=False).run.status == "complete"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_tiny_project(tmp_path_factory.mktemp("sigterm"))


def test_sigterm_ends_a_training_run_as_interrupted(project, tmp_path: Path) -> None:
    """A real ``exitgym train`` in a subprocess, sent SIGTERM once it has a checkpoint."""
    out = tmp_path / "run"
    argv = ["train", "--task", project["task"], "--backbone", project["backbone"],
            "--max-length", "16", "--steps", "100000", "--checkpoint-every",
            "1", "--batch-size", "8", "--num-envs", "8", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from exitgym.cli import main; "
         "sys.exit(main(sys.argv[1:]))", *argv],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not _has_checkpoint(out):
            assert child.poll() is None, child.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.2)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 143, err[-3000:]
    state = json.loads((out / "run_state.json").read_text())
    assert state["status"] == "interrupted"
    assert state["pid"] == child.pid and state["host"] == socket.gethostname()
    assert f"continue with\n  exitgym train --resume --out {out}\n" in err


def _has_checkpoint(out: Path) -> bool:
    try:
        return bool(json.loads((out / "run_state.json").read_text()).get("checkpoint"))
    except (OSError, ValueError):
        return False
