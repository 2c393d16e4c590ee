"""Run directories: atomic writes, states, metrics, train outputs, interrupt + resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from exitgym.agents.mlp_policy import MLPPolicy
from exitgym.data.synthetic import synthetic_cache
from exitgym.experiments.configs import TrainConfig
from exitgym.experiments.metrics import MetricsLog
from exitgym.experiments.policies import load_policy
from exitgym.experiments.runs import RunDir, RunError, write_json
from exitgym.experiments.training import train
from exitgym.experiments.trajectories import load_trajectories
from exitgym.utils.atomic import atomic_write
from exitgym.utils.configs import from_dict
from tests.tiny_project import dead_pid

CACHES = {"train": synthetic_cache(120, hidden_size=8, seed=1),
          "test": synthetic_cache(60, hidden_size=8, seed=2)}
CFG = TrainConfig(steps=8, batch_size=12, num_envs=12, checkpoint_every=3, alpha=0.5,
                  reward="hardness", train_split="train")
"""A tiny run on the synthetic caches. Its own ``train`` split: with the default ``policy``
split, which ``CACHES`` does not hold, every test session prepared rt-polarity × MiniLM for real
(5-10 minutes of each suite run)."""


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = write_json(tmp_path / "a.json", {"v": 1})

    def broken(tmp: Path) -> None:
        tmp.write_text('{"v": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_run_dir_states_and_refusals(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no run to resume"):
        RunDir.create(tmp_path / "r", resume=True)
    run = RunDir.create(tmp_path / "r")
    assert run.status == "running"
    with pytest.raises(RunError, match="already holds a run"):
        RunDir.create(tmp_path / "r")
    with pytest.raises(RunError, match="not complete .*'running'.*--resume"):
        run.require_complete()
    run.mark_complete()
    assert RunDir.open(tmp_path / "r").require_complete().status == "complete"
    with pytest.raises(RunError, match="already complete"):
        RunDir.create(tmp_path / "r", resume=True)
    with pytest.raises(RunError, match="not an exitgym run"):
        RunDir.open(tmp_path)
    with pytest.raises(ValueError, match="run status must be one of"):
        run.set_status("done")


def test_metrics_csv_roundtrip_and_truncation_on_reload(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, tensorboard=False)
    for u in range(1, 6):
        log.log({"update": u, "return": -u / 10, "cost": 0.5})
    log.flush()
    again = MetricsLog(tmp_path, tensorboard=False)
    again.load(up_to_step=3)
    assert again.rows == [{"update": float(u), "return": -u / 10, "cost": 0.5} for u in (1, 2, 3)]


def test_train_writes_a_complete_run(tmp_path: Path) -> None:
    result = train(CFG, tmp_path / "run", caches=CACHES, progress=False)
    run = result.run
    names = {p.name for p in run.path.iterdir()}
    assert {"config.json", "run_state.json", "metrics.csv", "tb", "policy.safetensors",
            "policy.json", "eval-test.json", "report.md", "training.png", "trajectories"} <= names
    assert run.status == "complete"
    config = run.config
    assert config["config"]["alpha"] == 0.5 and config["config"]["reward"] == "hardness"
    assert config["versions"]["torch"] == torch.__version__.split("+")[0] or config["versions"][
        "torch"].startswith(torch.__version__.split("+")[0])
    assert config["fingerprints"]["train"]["cache_fingerprint"] == "synthetic-1"
    assert "git_commit" in config
    assert any(p.name.startswith("events.out.tfevents") for p in (run.path / "tb").iterdir())
    rows = (run.path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("update,") and len(rows) == CFG.steps + 1
    assert [r.split(",")[0] for r in rows[1:]] == [str(u) for u in range(1, CFG.steps + 1)]
    # The saved policy reproduces the recorded evaluation.
    ts = load_trajectories(run.path / "trajectories" / "eval-test.parquet")
    assert len(ts.records) == 60 and ts.records == result.eval.records
    assert ts.texts[0] == CACHES["test"].texts[ts.records[0].sample_id]
    policy = load_policy(run)
    assert isinstance(policy, MLPPolicy)
    for key, value in load_file(str(run.path / "policy.safetensors")).items():
        assert torch.equal(policy.state_dict()[key], value)
    summary = json.loads((run.path / "eval-test.json").read_text())
    assert summary["accuracy"] == pytest.approx(result.eval.accuracy)
    assert "| accuracy |" in (run.path / "report.md").read_text()


class Interrupt(KeyboardInterrupt):
    pass


def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    full = train(CFG, tmp_path / "full", caches=CACHES, progress=False, plots=False)

    def stop_at_7(update: int) -> None:
        if update == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(CFG, tmp_path / "cut", caches=CACHES, progress=False, plots=False,
              after_update=stop_at_7)
    cut = RunDir.open(tmp_path / "cut")
    assert cut.status == "interrupted"
    assert cut.state["checkpoint_step"] == 6  # checkpoints at 3 and 6; update 7 is lost
    assert not (cut.path / "policy.safetensors").exists()
    assert not (cut.path / "report.md").exists()
    assert [p.name for p in cut.path.glob("checkpoint-*")] == ["checkpoint-00000006"]
    with pytest.raises(RunError, match="not complete"):
        cut.require_complete()

    resumed = train(CFG, tmp_path / "cut", resume=True, caches=CACHES, progress=False,
                    plots=False)
    assert resumed.run.status == "complete"
    a = load_file(str(full.run.path / "policy.safetensors"))
    b = load_file(str(resumed.run.path / "policy.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (full.run.path / "metrics.csv").read_text() == (
        resumed.run.path / "metrics.csv").read_text()
    assert resumed.eval.records == full.eval.records
    assert np.isclose(resumed.eval.mean_return, full.eval.mean_return)
    # TensorBoard shows each update once: update 7, logged before the interrupt, is not doubled.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for run in (full, resumed):
        events = EventAccumulator(str(run.run.path / "tb"))
        events.Reload()
        tag = sorted(events.Tags()["scalars"])[0]
        assert [e.step for e in events.Scalars(tag)] == list(range(1, CFG.steps + 1))


def test_resume_refuses_changed_flags_and_complete_runs(tmp_path: Path) -> None:
    with pytest.raises(Interrupt):
        train(CFG, tmp_path / "r", caches=CACHES, progress=False, plots=False,
              after_update=lambda u: (_ for _ in ()).throw(Interrupt()) if u == 4 else None)
    other = TrainConfig(**{**CFG.__dict__, "alpha": 0.9})
    with pytest.raises(RunError, match="differ from the run's config.json"):
        train(other, tmp_path / "r", resume=True, caches=CACHES, progress=False, plots=False)
    assert RunDir.open(tmp_path / "r").status == "interrupted"  # the refusal changed nothing
    train(CFG, tmp_path / "r", resume=True, caches=CACHES, progress=False, plots=False)
    with pytest.raises(RunError, match="already complete"):
        train(CFG, tmp_path / "r", resume=True, caches=CACHES, progress=False, plots=False)


def test_sb3_agent_run_charges_policy_flops_and_reports_its_settings(tmp_path: Path) -> None:
    cfg = TrainConfig(agent="a2c", steps=200, num_envs=4, alpha=0.5)  # A2C: 5-step rollouts
    result = train(cfg, tmp_path / "a2c", caches=CACHES, progress=False, plots=False)
    run = result.run
    assert run.status == "complete" and (run.path / "sb3_policy.safetensors").is_file()
    report = (run.path / "report.md").read_text()  # only the settings A2C used, as it used them
    assert "| num_envs | 4 |" in report and "| lr | 0.003 |" in report
    assert "| baseline |" not in report and "| batch_size |" not in report
    big = train(TrainConfig(agent="a2c", steps=200, num_envs=64, alpha=0.5), tmp_path / "a2c64",
                caches=CACHES, progress=False, plots=True)
    assert "| num_envs | 8 |" in (big.run.path / "report.md").read_text()
    # metrics.csv and training.png like a REINFORCE run: one row per 64 finished episodes
    layers = CACHES["train"].num_layers
    for res in (result, big):
        rows = res.metrics
        assert [r["update"] for r in rows] == list(range(1, len(rows) + 1))
        # envs finish together, so a row may hold a few more (at most one per env)
        assert all(64 <= r["episodes"] < 64 + 8 for r in rows[:-1])
        assert 0 < rows[-1]["episodes"] < 64 + 8
        assert 200 / layers <= sum(r["episodes"] for r in rows) <= 200
        assert all(0 <= r["accuracy"] <= 1 and 1 <= r["exit_layer"] <= layers for r in rows)
    assert (big.run.path / "training.png").is_file()
    assert (big.run.path / "metrics.csv").read_text().startswith("update,timesteps,episodes,")
    spec = json.loads((run.path / "env_spec.json").read_text())
    policy = load_policy(run, cache=CACHES["train"])
    assert policy.policy_flops > 0
    assert spec["kwargs"]["policy_flops"] == pytest.approx(policy.policy_flops)
    env = from_dict(TrainConfig, run.config["config"]).env_spec("test").with_kwargs(
        policy_flops=policy.policy_flops).make(num_envs=4, cache=CACHES["test"])
    from exitgym.agents.rollout import evaluate

    again = evaluate(policy, env, seed=cfg.seed)
    assert again.records == result.eval.records  # the reloaded weights act the same
    with pytest.raises(RunError, match=r"--n-steps sets the rollout of the on-policy SB3 agents "
                       r"\['ppo', 'a2c', 'maskable-ppo'\]; 'dqn' does not take it"):
        train(TrainConfig(agent="dqn", n_steps=8), tmp_path / "dqn", caches=CACHES,
              progress=False, plots=False)


def test_resume_of_a_run_killed_before_its_config_starts_afresh(tmp_path: Path) -> None:
    """A kill between creating run_state.json and writing config.json left nothing trained:
    --resume must train from scratch in place and end equal to an uninterrupted run."""
    full = train(CFG, tmp_path / "full", caches=CACHES, progress=False, plots=False)
    cut = RunDir.create(tmp_path / "cut")  # state file only, as a kill at that moment leaves it
    cut.update_state(pid=dead_pid())  # ... by a process that is gone
    assert not (tmp_path / "cut" / "config.json").exists()
    resumed = train(CFG, tmp_path / "cut", resume=True, caches=CACHES, progress=False,
                    plots=False)
    assert resumed.run.status == "complete"
    a = load_file(str(full.run.path / "policy.safetensors"))
    b = load_file(str(resumed.run.path / "policy.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.eval.records == full.eval.records


@pytest.mark.parametrize("agent", ["ppo", "a2c", "dqn"])
def test_an_interrupted_sb3_run_resumes_bit_identically(agent: str, tmp_path: Path) -> None:
    """SB3 runs checkpoint as safetensors + JSON (policy, optimizer, generators, the actions
    sent) and resume to the uninterrupted run's exact parameters and metrics; ``--resume`` used
    to be refused for them."""
    rollout = {"n_steps": 16} if agent != "dqn" else {}
    cfg = TrainConfig(agent=agent, steps=640, num_envs=4, checkpoint_every=2, alpha=0.2,
                      reward="vanilla", lr=1e-3, seed=3, **rollout)
    full = train(cfg, tmp_path / "full", caches=CACHES, progress=False, plots=False)

    def stop_at_5(update: int) -> None:
        if update == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "cut", caches=CACHES, progress=False, plots=False,
              after_update=stop_at_5)
    cut = RunDir.open(tmp_path / "cut")
    assert cut.status == "interrupted" and cut.state["checkpoint_step"] > 0
    assert not list(cut.path.rglob("*.zip")) and not list(cut.path.rglob("*.pkl"))
    resumed = train(cfg, tmp_path / "cut", resume=True, caches=CACHES, progress=False,
                    plots=False)
    a = load_file(str(full.run.path / "sb3_policy.safetensors"))
    b = load_file(str(resumed.run.path / "sb3_policy.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (full.run.path / "metrics.csv").read_text() == (
        resumed.run.path / "metrics.csv").read_text()
    assert resumed.eval.records == full.eval.records


def test_sb3_on_a_live_skip_env_trains_on_the_runs_task_and_backbone(tmp_path: Path,
                                                                      monkeypatch) -> None:
    """SB3 agents get the same ``gym.make`` arguments as every other agent (``EnvSpec``): a live
    skip env built from ``dict(spec.kwargs)`` alone fell back to the default task and backbone
    (rt-polarity, MiniLM), so ``--task`` / ``--backbone`` were silently ignored."""
    from exitgym.agents import sb3
    from tests.tiny_project import make_tiny_project, train_config

    project = make_tiny_project(tmp_path / "project")
    seen: dict = {}

    class Stop(Exception):
        pass

    def capture(*args, env_kwargs=None, **kwargs):
        seen.update(env_kwargs)
        raise Stop

    monkeypatch.setattr(sb3, "train_sb3", capture)
    cfg = train_config(project, env="exitgym/SkipBlock-v0", agent="ppo", steps=64)
    with pytest.raises(Stop):
        train(cfg, tmp_path / "run", progress=False)
    expected = cfg.env_spec().make_kwargs()
    assert seen == expected
    assert seen["task"] == project["task"] and seen["backbone"] == project["backbone"]
