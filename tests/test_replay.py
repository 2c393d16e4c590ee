"""Trajectories on disk, replay --verify (including tampered files) and the analysis frames."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exitgym.agents.records import EpisodeRecord
from exitgym.agents.rules import MaxProbExit, StaticExit
from exitgym.data.synthetic import synthetic_cache
from exitgym.experiments.env_spec import EnvSpec
from exitgym.experiments.replay import ReplayMismatch, analyze, verify
from exitgym.experiments.trajectories import (
    evaluate_and_record,
    load_trajectories,
    save_trajectories,
    trajectories_frame,
    trajectory_files,
)

CACHE = synthetic_cache(40, hidden_size=8, seed=3)
SPEC = EnvSpec(split="test", kwargs={"reward": "hardness", "alpha": 0.3,
                                     "observation": "features+logits", "dense": False,
                                     "policy_flops": 0.0})


def factory(ts):
    return EnvSpec.from_json(ts.meta["env_spec"]).make(cache=CACHE)


@pytest.fixture()
def recorded(tmp_path: Path) -> Path:
    """A run directory with a max-probability rule's 40 recorded test episodes."""
    evaluate_and_record(MaxProbExit(theta=0.7), SPEC, tmp_path, "maxprob", method="maxprob",
                        knob=0.7, seed=5, num_envs=8, cache=CACHE)
    return tmp_path


def _rewrite(path: Path, column: str, episode: int, fn) -> None:
    """Edit one cell of a trajectory file on disk, keeping its metadata (a 'tampered' file)."""
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[episode] = fn(values[episode])
    idx = table.schema.get_field_index(column)
    table = table.set_column(idx, table.schema.field(idx), pa.array(values, table.schema.field(
        idx).type))
    pq.write_table(table, path)


def test_roundtrip_equals_the_evaluation(recorded: Path) -> None:
    files = trajectory_files(recorded)
    assert [f.name for f in files] == ["maxprob.parquet"]
    ts = load_trajectories(files[0])
    env = SPEC.make(num_envs=8, cache=CACHE)
    from exitgym.agents.rollout import evaluate

    again = evaluate(MaxProbExit(theta=0.7), env, seed=5)
    assert len(ts.records) == 40
    assert all(a.close_to(b, rtol=0, atol=0) for a, b in zip(ts.records, again.records,
                                                              strict=True))
    assert ts.records[0].seed == 5
    assert ts.env_id == "exitgym/EarlyExit-v0" and ts.env_kwargs["reward"] == "hardness"
    assert ts.meta["method"] == "maxprob" and ts.meta["knob"] == 0.7
    assert ts.texts == tuple(CACHE.texts[r.sample_id] for r in ts.records)
    frame = trajectories_frame(ts)
    assert frame["num_steps"].tolist() == [len(r.actions) for r in ts.records]


def test_multidiscrete_actions_and_nan_cost_roundtrip(tmp_path: Path) -> None:
    recs = [EpisodeRecord(sample_id=3, actions=((1, 0, 2), (0, 0, 1)), exit_layer=2,
                          prediction=1, label=0, correct=False, decisions=(1, 0, 1, 1),
                          rewards=(0.0, -0.25), cost=math.nan, flops=12.5, seed=None)]
    path = save_trajectories(tmp_path / "t", recs, "exitgym/SkipBlock-v0", {"alpha": 0.1})
    back = load_trajectories(path)
    assert back.records[0].close_to(recs[0]) and back.records[0].actions == ((1, 0, 2), (0, 0, 1))
    assert back.records[0].seed is None and math.isnan(back.records[0].cost)
    assert back.texts is None
    with pytest.raises(ValueError, match="must not hold a cache"):
        save_trajectories(tmp_path / "u", recs, "x", {"cache": CACHE})


def test_verify_passes_on_an_untouched_recording(recorded: Path) -> None:
    report = verify(trajectory_files(recorded), factory)
    assert report.episodes == 40
    assert report.steps == sum(len(r.actions) for r in load_trajectories(
        trajectory_files(recorded)[0]).records)


def _first_multi_step(path: Path) -> tuple[int, EpisodeRecord]:
    recs = load_trajectories(path).records
    return next((i, r) for i, r in enumerate(recs) if len(r.actions) >= 2)


def test_tampered_action_fails_naming_episode_and_step(recorded: Path) -> None:
    path = trajectory_files(recorded)[0]
    episode, rec = _first_multi_step(path)
    # Exit at the first step instead of continuing: the env terminates one step early.
    _rewrite(path, "actions", episode, lambda acts: [1] + acts[1:])
    with pytest.raises(ReplayMismatch) as err:
        verify([path], factory)
    e = err.value
    assert (e.episode, e.sample_id, e.step) == (episode, rec.sample_id, 0)
    assert e.field in {"reward", "terminated"}
    assert f"episode {episode} (sample_id {rec.sample_id}), step 0" in str(e)


def test_tampered_reward_and_prediction_are_named(recorded: Path) -> None:
    path = trajectory_files(recorded)[0]
    episode, rec = _first_multi_step(path)
    last = len(rec.actions) - 1
    _rewrite(path, "rewards", episode, lambda r: r[:-1] + [r[-1] + 0.01])
    with pytest.raises(ReplayMismatch, match=rf"episode {episode} .*step {last}, field 'reward'"):
        verify([path], factory)
    _rewrite(path, "rewards", episode, lambda r: list(rec.rewards))
    _rewrite(path, "prediction", 7, lambda p: 1 - p)
    with pytest.raises(ReplayMismatch, match=r"episode 7 .*field 'prediction'"):
        verify([path], factory)


def test_analysis_frames_match_hand_counts(tmp_path: Path) -> None:
    evaluate_and_record(StaticExit(k=2), SPEC, tmp_path, "static2", method="static", knob=2,
                        seed=0, num_envs=8, cache=CACHE)
    ts = load_trajectories(trajectory_files(tmp_path)[0])
    analysis = analyze(ts, k=3)
    labels = np.bincount(CACHE.labels, minlength=2)
    hist = analysis.exit_by_label
    assert list(hist.columns) == list(range(1, 7))
    assert hist[2].tolist() == labels.tolist() and hist.drop(columns=2).to_numpy().sum() == 0
    mem = analysis.exit_by_memorized
    assert mem[2].sum() == 40 and set(mem.index) == set(CACHE.memorized.tolist())
    acc = analysis.accuracy_by_exit
    assert acc.loc[2, "episodes"] == 40
    assert acc.loc[2, "accuracy"] == pytest.approx(CACHE.correct[:, 1].mean())
    assert acc.loc[2, "cost"] == pytest.approx(CACHE.cost()[:, 1].mean())
    assert analysis.cost_distribution["count"].sum() == 40
    assert (analysis.easiest["memorized_layer"] == CACHE.memorized.min()).all()
    assert (analysis.hardest["memorized_layer"] == CACHE.memorized.max()).all()
    assert analysis.hardest["text"].str.startswith("hard").all()
    assert analysis.easiest["text"].str.startswith("easy").all()


def test_verify_actions_catches_a_policy_that_acts_differently(recorded: Path) -> None:
    from exitgym.experiments.replay import verify_actions

    ts = load_trajectories(trajectory_files(recorded)[0])
    env = factory(ts)
    verify_actions(ts, MaxProbExit(theta=0.7), env)  # the recording policy takes every action
    first = next(i for i, r in enumerate(ts.records) if len(r.actions) > 1)
    with pytest.raises(ReplayMismatch) as err:
        verify_actions(ts, StaticExit(k=1), env)  # exits at layer 1 everywhere
    assert err.value.field == "action (policy re-run)"
    assert (err.value.episode, err.value.step) == (first, 0)
    assert (err.value.recorded, err.value.replayed) == (0, 1)
