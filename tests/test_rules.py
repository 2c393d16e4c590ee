"""Classic exit rules against hand-made logits and the synthetic cache."""

from __future__ import annotations

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym  # noqa: F401  (registers the envs)
from exitgym.agents.berxit import Berxit, BerxitConfig
from exitgym.agents.registry import make_rule, names
from exitgym.agents.rollout import evaluate
from exitgym.agents.rules import (
    EntropyExit,
    MaxProbExit,
    OracleExit,
    PatienceExit,
    RandomExit,
    StaticExit,
)
from exitgym.data.synthetic import synthetic_cache
from exitgym.envs.observations import ObsLayout, softmax_stats

torch.set_num_threads(1)  # tiny models: threads only contend on a shared box
L = 4


def obs_at(layer: int, logits: list[list[float]]) -> np.ndarray:
    """A ``features+logits`` batch at 1-based ``layer`` (only the layer fraction matters)."""
    logits_arr = np.asarray(logits, dtype=np.float32)
    feats = np.zeros((len(logits_arr), 6), dtype=np.float32)
    feats[:, 0] = layer / L
    return np.concatenate([feats, logits_arr], axis=1)


def test_softmax_stats_by_hand() -> None:
    s = softmax_stats(np.array([[math.log(3.0), 0.0]]))  # p = (0.75, 0.25)
    assert s.max_prob[0] == pytest.approx(0.75)
    ent = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert s.norm_entropy[0] == pytest.approx(ent)
    assert s.margin[0] == pytest.approx(0.5)
    assert s.prediction[0] == 0


def test_entropy_and_maxprob_thresholds() -> None:
    # p = (0.75, 0.25): normalised entropy 0.8113, max prob 0.75; p = (0.5, 0.5): 1.0, 0.5.
    batch = obs_at(1, [[math.log(3.0), 0.0], [0.0, 0.0]])
    ent_rule = EntropyExit(theta=0.82)
    ent_rule.reset(2)
    assert ent_rule.act(batch).tolist() == [1, 0]
    strict = EntropyExit(theta=0.81)
    strict.reset(2)
    assert strict.act(batch).tolist() == [0, 0]
    mp = MaxProbExit(theta=0.74)
    mp.reset(2)
    assert mp.act(batch).tolist() == [1, 0]
    mp = MaxProbExit(theta=0.76)
    mp.reset(2)
    assert mp.act(batch).tolist() == [0, 0]


def test_patience_counts_unchanged_predictions() -> None:
    # slot 0 predicts 0,0,0,...; slot 1 predicts 0,1,1,1.
    seq = [[[1, 0], [1, 0]], [[1, 0], [0, 1]], [[1, 0], [0, 1]], [[1, 0], [0, 1]]]
    rule = PatienceExit(t=2)
    rule.reset(2)
    actions = [rule.act(obs_at(layer + 1, seq[layer])).tolist() for layer in range(L)]
    assert [a[0] for a in actions] == [0, 0, 1, 1]  # counter 0,1,2 -> exit at layer 3
    assert [a[1] for a in actions] == [0, 0, 0, 1]  # counter 0,0,1 -> last layer forces exit
    zero = PatienceExit(t=0)
    zero.reset(2)
    assert zero.act(obs_at(1, seq[0])).tolist() == [1, 1]


def test_patience_state_resets_on_new_episode() -> None:
    rule = PatienceExit(t=1)
    rule.reset(1)
    assert rule.act(obs_at(1, [[1, 0]])).tolist() == [0]
    assert rule.act(obs_at(2, [[1, 0]])).tolist() == [1]
    # autoreset: layer fraction drops back to 1/L -> counter starts over, no exit at layer 1
    assert rule.act(obs_at(1, [[1, 0]])).tolist() == [0]
    assert rule.tracker.layer.tolist() == [1]


def test_static_and_random_extremes() -> None:
    rule = StaticExit(k=2)
    rule.reset(3)
    logits = [[0, 1]] * 3
    assert rule.act(obs_at(1, logits)).tolist() == [0, 0, 0]
    assert rule.act(obs_at(2, logits)).tolist() == [1, 1, 1]
    never, always = RandomExit(p=0.0), RandomExit(p=1.0)
    never.reset(3)
    always.reset(3)
    assert never.act(obs_at(1, logits)).tolist() == [0, 0, 0]
    assert never.act(obs_at(L, logits)).tolist() == [1, 1, 1]  # last layer always exits
    assert always.act(obs_at(1, logits)).tolist() == [1, 1, 1]


def test_knobs_grids_and_registry() -> None:
    assert StaticExit.default_grid(6) == (1, 2, 3, 4, 5, 6)
    # Each swept rule acts on its own θ: p = (0.75, 0.25) has normalised entropy 0.8113, the
    # uniform head 1.0, so a rule exits those rows iff θ exceeds them (strictly).
    thetas = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)
    batch = obs_at(1, [[math.log(3.0), 0.0], [0.0, 0.0]])
    exits = []
    for rule in EntropyExit().sweep(6):
        rule.reset(2)
        exits.append(rule.act(batch).tolist())
    assert exits == [[int(t > 0.8113), 0] for t in thetas]
    # with_knob returns a copy that waits t = 3 unchanged predictions; the original still 2
    same = [[2.0, 0.0]]
    for rule, layer in ((PatienceExit(2).with_knob(3), 4), (PatienceExit(2), 3)):
        rule.reset(1)
        acts = [int(rule.act(obs_at(i, same))[0]) for i in range(1, L + 1)]
        assert acts.index(1) + 1 == layer, (rule.t, acts)
    assert set(names("rule")) >= {"static", "random", "entropy", "maxprob", "patience", "oracle"}
    # make_rule builds the named rule with the knob: max probability 0.75 waits, 0.9 exits
    maxprob = make_rule("maxprob", theta=0.8)
    maxprob.reset(2)
    assert isinstance(maxprob, MaxProbExit)
    assert maxprob.act(obs_at(1, [[math.log(3.0), 0.0], [math.log(9.0), 0.0]])).tolist() == [0, 1]
    with pytest.raises(KeyError, match="unknown exit rule"):
        make_rule("nope")
    with pytest.raises(ValueError, match="StaticExit.k"):
        StaticExit(0)
    with pytest.raises(ValueError, match="has no knob"):
        OracleExit(synthetic_cache(num_samples=4)).with_knob(1)


def test_oracle_exits_at_the_earliest_correct_layer_computed_independently() -> None:
    """The oracle's exits against the earliest correct layer found by hand from logits and
    labels (not the cache's own ``oracle`` array the rule reads), on random heads where that
    layer varies; no static depth beats it on any sample."""
    base = synthetic_cache(num_samples=64, num_labels=3)
    rng = np.random.default_rng(7)
    logits = rng.normal(0.0, 1.0, size=base.logits.shape).astype(np.float32)
    cache = dataclasses.replace(base, logits=logits)
    env = gym.make("exitgym/EarlyExit-v0", cache=cache, observation="features+logits")
    oracle = evaluate(OracleExit(cache), env)
    exits = np.array([r.exit_layer for r in oracle.records])
    expected = []
    for i in range(cache.num_samples):
        hits = [layer + 1 for layer in range(cache.num_layers)
                if int(np.argmax(logits[i, layer])) == int(cache.labels[i])]
        expected.append(hits[0] if hits else cache.num_layers)
    assert len(set(expected)) >= 4  # the earliest correct layer really varies here
    assert exits.tolist() == expected
    correct = np.array([r.correct for r in oracle.records])
    for k in range(1, cache.num_layers + 1):  # no static depth is right where the oracle is not
        static = np.array([r.correct for r in evaluate(StaticExit(k), env).records])
        assert not (static & ~correct).any()


def test_rules_on_synthetic_env_match_cache() -> None:
    cache = synthetic_cache(num_samples=32)
    env = gym.make("exitgym/EarlyExit-v0", cache=cache, observation="features+logits")
    # Easy samples are confident from layer 1: max-prob 0.9 exits them at once, hard ones run on.
    mp = evaluate(MaxProbExit(0.9), env)
    easy = np.arange(32) < 16
    mp_exits = np.array([r.exit_layer for r in mp.records])
    assert (mp_exits[easy] == 1).all() and (mp_exits[~easy] == cache.num_layers).all()
    assert mp.accuracy == 1.0
    static = evaluate(StaticExit(3), env)
    assert static.exit_histogram == (0, 0, 32, 0, 0, 0)
    assert static.cost == pytest.approx(cache.cost()[:, 2].mean())


def test_observation_mismatch_is_reported() -> None:
    env = gym.make("exitgym/EarlyExit-v0", cache=synthetic_cache(num_samples=8))
    with pytest.raises(ValueError, match="features\\+logits"):
        evaluate(EntropyExit(), env)


def test_berxit_learns_correctness() -> None:
    cache = synthetic_cache(num_samples=64)
    lte = Berxit.fit(cache, BerxitConfig(epochs=60, seed=0))
    scores = lte.scores(cache)
    # Correct (sample, layer) pairs score higher than wrong ones.
    assert scores[cache.correct].mean() > scores[~cache.correct].mean() + 0.3
    env = gym.make("exitgym/EarlyExit-v0", cache=cache, observation="features+logits")
    res = evaluate(lte.with_knob(0.5), env)
    assert res.accuracy >= 0.95 and res.mean_exit_layer < cache.num_layers - 1
    layout = ObsLayout.from_spec("features+logits", 8)
    assert layout.slices["logits"] == slice(6, 8)
