"""The shared evaluate(): metrics, records, vector vs single env, JSON round trip."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import exitgym  # noqa: F401
from exitgym.agents.records import EpisodeRecord, EvalResult
from exitgym.agents.rollout import evaluate
from exitgym.agents.rules import EntropyExit, PatienceExit, StaticExit
from exitgym.data.synthetic import synthetic_cache


def envs(cache, observation="features+logits"):
    single = gym.make("exitgym/EarlyExit-v0", cache=cache, observation=observation)
    vector = gym.make_vec("exitgym/EarlyExit-v0", num_envs=7, cache=cache, observation=observation,
                          vectorization_mode="vector_entry_point")
    return single, vector


@pytest.mark.parametrize("rule", [StaticExit(2), EntropyExit(0.5), PatienceExit(1)])
def test_vector_and_single_env_give_identical_records(rule) -> None:
    cache = synthetic_cache(num_samples=20)  # 20 is not a multiple of 7: exercises padding
    single, vector = envs(cache)
    a, b = evaluate(rule, single), evaluate(rule, vector)
    assert a.records == b.records
    assert all(x.close_to(y) for x, y in zip(a.records, b.records, strict=True))
    assert [r.sample_id for r in b.records] == list(range(20))


def test_metrics_match_the_cache() -> None:
    cache = synthetic_cache(num_samples=20)
    _, vector = envs(cache)
    res = evaluate(StaticExit(3), vector)
    assert res.accuracy == pytest.approx(cache.correct[:, 2].mean())
    assert res.cost == pytest.approx(cache.cost()[:, 2].mean())
    assert res.mean_exit_layer == 3.0 and res.exit_histogram == (0, 0, 20, 0, 0, 0)
    rec = res.records[4]
    assert rec.actions == (0, 0, 1) and rec.memorized_layer == cache.memorized[4]
    assert rec.oracle_layer == cache.oracle[4] and rec.label == cache.labels[4]
    subset = evaluate(StaticExit(3), vector, sample_ids=[5, 2])
    assert [r.sample_id for r in subset.records] == [5, 2]
    assert len(evaluate(StaticExit(3), vector, num_episodes=4).records) == 4


def test_records_equality_and_json_round_trip(tmp_path) -> None:
    rec = EpisodeRecord(sample_id=1, actions=(0, 1), exit_layer=2, prediction=1, label=1,
                        correct=True, rewards=(0.0, -0.1), cost=0.3, flops=10.0, seed=0)
    noisy = EpisodeRecord(sample_id=1, actions=(0, 1), exit_layer=2, prediction=1, label=1,
                          correct=True, rewards=(0.0, -0.1 + 1e-12), cost=0.3 + 1e-12, flops=10.0)
    assert rec == noisy and rec.close_to(noisy)
    assert not rec.close_to(EpisodeRecord(**{**rec.to_dict(), "actions": (0, 1), "cost": 0.5}))
    assert rec != EpisodeRecord(**{**rec.__dict__, "exit_layer": 3})
    cache = synthetic_cache(num_samples=9)
    res = evaluate(EntropyExit(0.3), envs(cache)[1], seed=5)
    path = res.save(tmp_path / "eval.json")
    loaded = EvalResult.load(path)
    assert loaded.records == res.records and loaded.accuracy == res.accuracy
    assert all(a.close_to(b) for a, b in zip(loaded.records, res.records, strict=True))
    assert loaded.records[0].seed == 5
    with pytest.raises(ValueError, match="unknown EpisodeRecord fields"):
        EpisodeRecord.from_dict({**rec.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="exit layers"):
        EvalResult.from_records([rec], num_layers=1)
    # the saved summary's savings are those of the cached cost at each record's exit layer
    spent = np.mean([cache.cost()[r.sample_id, r.exit_layer - 1] for r in res.records])
    assert 0 < spent < 1
    assert json.loads(path.read_text())["flops_saved"] == pytest.approx(1 - spent)
    assert loaded.flops_saved == pytest.approx(1 - spent)


def test_speedup_and_flops_saved_by_hand() -> None:
    """Episodes costing 0.25 and 0.5 of the full model: mean cost 0.375, speedup 1/0.375 = 8/3
    (not the mean of the per-episode speedups, 3), savings 0.625; free episodes: infinite."""
    def record(sample_id: int, exit_layer: int, cost: float) -> EpisodeRecord:
        return EpisodeRecord(sample_id=sample_id, actions=(0,) * (exit_layer - 1) + (1,),
                             exit_layer=exit_layer, prediction=0, label=0, correct=True,
                             rewards=(0.0,) * exit_layer, cost=cost, flops=cost * 100)

    res = EvalResult.from_records([record(0, 1, 0.25), record(1, 2, 0.5)], num_layers=2)
    assert res.cost == pytest.approx(0.375)
    assert res.speedup == pytest.approx(8 / 3)
    assert res.flops_saved == pytest.approx(0.625)
    assert EvalResult.from_records([record(0, 1, 0.0)], num_layers=2).speedup == float("inf")


def test_a_result_names_its_split_and_calls_its_mean_cost_cost(tmp_path) -> None:
    """``gym.make`` without ``split=`` reads the ``policy`` rows: ``exitgym.evaluate`` reported
    them (0.856 on rt-polarity where test says 0.833) without saying so, and called the cost
    ``mean_cost`` where the CLI, ``summary.json`` and ``info`` say ``cost``."""
    from tests.tiny_project import make_tiny_project

    names = {**make_tiny_project(tmp_path / "project"), "observation": "features+logits"}
    default = exitgym.evaluate(StaticExit(2), gym.make("exitgym/EarlyExit-v0", **names))
    assert default.split == "policy"
    assert repr(default).startswith(f"EvalResult(split='policy', accuracy={default.accuracy:.4f}"
                                    f", cost={default.cost:.4f}, ")
    assert str(default).endswith("on the 'policy' split (14 episodes); test numbers come from "
                                 "an env made with split='test'")
    test = exitgym.evaluate(StaticExit(2), gym.make("exitgym/EarlyExit-v0", **names,
                                                    split="test"))
    assert test.split == "test" and str(test).endswith("on the 'test' split (10 episodes)")
    summary = test.summary()
    assert (summary["split"], summary["cost"]) == ("test", test.cost)
    assert "mean_cost" not in summary
    with pytest.warns(DeprecationWarning, match="mean_cost is deprecated; use EvalResult.cost"):
        assert test.mean_cost == test.cost
    # an env made with cache= reads that cache, whatever its split setting says
    cache = synthetic_cache(num_samples=5)
    env = gym.make("exitgym/EarlyExit-v0", cache=cache, observation="features+logits")
    assert evaluate(StaticExit(1), env).split == cache.meta["split"] == "train"
    path = test.save(tmp_path / "eval.json")
    assert EvalResult.load(path).split == "test"
