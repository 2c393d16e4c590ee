"""CALM calibration (Learn-then-Test): p-values by hand, the guarantee on synthetic risk curves,
the decaying threshold and the search on a tiny decoder."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import exitgym
from exitgym.agents.registry import make_rule
from exitgym.backbones.decoder_registry import load_decoder
from exitgym.experiments import calm_calibration as cc
from tests.tiny_decoders import random_prompts, tiny_decoder_configs


def test_binomial_tail_and_hb_p_value_match_the_formulas() -> None:
    for k, n, p in ((0, 10, 0.1), (3, 40, 0.1), (12, 200, 0.05), (50, 60, 0.9)):
        exact = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))
        assert cc.binomial_cdf(k, n, p) == pytest.approx(exact, rel=1e-10)
    stats = pytest.importorskip("scipy.stats")
    assert cc.binomial_cdf(30, 1000, 0.05) == pytest.approx(stats.binom.cdf(30, 1000, 0.05),
                                                            rel=1e-9)
    n, risk, delta = 100, 0.02, 0.1
    h1 = risk * math.log(risk / delta) + (1 - risk) * math.log((1 - risk) / (1 - delta))
    hand = min(math.exp(-n * h1), math.e * stats.binom.cdf(2, n, delta))
    assert cc.p_value(risk, n, delta) == pytest.approx(hand, rel=1e-9)
    assert cc.p_value(risk, n, delta, "binomial") == pytest.approx(stats.binom.cdf(2, n, delta))
    assert cc.p_value(0.5, 100, 0.1) == 1.0  # risk above delta: H0 is never rejected
    with pytest.raises(ValueError, match=r"method must be one of \['hb', 'binomial'\]"):
        cc.p_value(0.1, 10, 0.1, "t-test")
    with pytest.raises(ValueError, match="need 0 < delta < 1"):
        cc.p_value(0.1, 10, 1.5)


def test_fixed_sequence_stops_at_the_first_non_rejection() -> None:
    assert cc.fixed_sequence([0.01, 0.02, 0.3, 0.01], 0.05) == 1
    assert cc.fixed_sequence([0.2, 0.01], 0.05) == -1
    picked = cc.choose([np.zeros(400), np.full(400, 0.02), np.full(400, 0.5), np.zeros(400)],
                       [0.9, 0.8, 0.7, 0.6], delta=0.1, epsilon=0.05)
    assert picked.theta == 0.8 and picked.tested == [0.9, 0.8, 0.7] and picked.units == 400


@pytest.mark.parametrize("method", ["hb", "binomial"])
def test_the_chosen_threshold_keeps_the_guarantee_on_held_out_draws(method: str) -> None:
    """Known risk curve r(θ) = 0.42·(1 − θ); 0/1 losses coupled across thresholds through one
    uniform per unit (a lower θ disagrees wherever a higher one does)."""
    grid = np.round(np.arange(1.0, -0.001, -0.05), 2)
    risk = 0.42 * (1.0 - grid)
    delta, epsilon, n, trials = 0.1, 0.1, 200, 300
    rng = np.random.default_rng(0)
    fails, naive_fails, chosen = 0, 0, []
    for _ in range(trials):
        u = rng.random(n)
        losses = [(u < r).astype(float) for r in risk]
        theta = cc.choose(losses, list(grid), delta, epsilon, method).theta
        true = 0.0 if theta is None else float(risk[np.flatnonzero(grid == theta)[0]])
        held_out = (rng.random(20_000) < true).mean()
        fails += held_out > delta
        chosen.append(true)
        naive = max(j for j in range(len(grid)) if losses[j].mean() <= delta)  # no test
        naive_fails += risk[naive] > delta
    assert fails / trials <= epsilon
    assert np.mean(chosen) > 0.04  # not trivially conservative (the best safe risk is 0.084)
    assert naive_fails / trials > epsilon  # picking by the empirical risk alone breaks it


def test_calm_decay_formula() -> None:
    assert cc.calm_threshold(0.5, 0, 10) == pytest.approx(0.55)
    assert cc.calm_threshold(0.5, 5, 10) == pytest.approx(0.45 + 0.1 * math.exp(-2.0))
    assert cc.calm_threshold(1.0, 0, 10) == 1.0
    assert cc.calm_threshold(-0.9, 0, 10, bounds=(-1.0, 1.0)) == pytest.approx(-0.71)


@pytest.fixture(scope="module")
def env():
    llama = load_decoder(tiny_decoder_configs()["llama"])
    return gym.make("exitgym/TokenExit-v0", backbone=llama, prompts=random_prompts([5] * 12, 3),
                    max_new_tokens=4, kv="full", teacher_forcing=True, cached=True,
                    observation="features")


class _Spy:
    """A theta rule recording the theta it acts with (exits at once)."""

    name, knob, knob_bounds, required_observation = "spy", "theta", (0.0, 1.0), "features"

    def __init__(self) -> None:
        self.theta, self.seen = 0.6, []

    def reset(self, num_envs: int) -> None:
        pass

    def act(self, obs, infos=None, deterministic=True):
        self.seen.append(float(np.asarray(self.theta)[0]))
        return np.ones(1, dtype=np.int64)


def test_decayed_threshold_uses_the_token_index(env) -> None:
    spy = _Spy()
    cc._episode(env, cc.DecayedThreshold(spy, horizon=4), 0)
    assert spy.seen == pytest.approx([cc.calm_threshold(0.6, t, 4) for t in range(4)])
    assert spy.theta == 0.6
    with pytest.raises(ValueError, match="needs a rule with a theta knob"):
        cc.DecayedThreshold(make_rule("static"), horizon=4)


def test_calibrate_on_a_tiny_decoder_tests_in_order(env) -> None:
    rule = make_rule("margin").reading("features")
    got = cc.calibrate(rule, env, delta=0.3, epsilon=0.2, thresholds=[0.99, 0.9, 0.5, 0.2, 0.05])
    assert got.units == 12 and got.tested == [0.99, 0.9, 0.5, 0.2, 0.05][: len(got.tested)]
    last = cc.fixed_sequence(got.p_values, 0.2)
    assert got.theta == (None if last < 0 else got.tested[last])
    assert all(p <= 0.2 for p in got.p_values[:-1])
    for theta, risk in zip(got.tested, got.risks, strict=True):  # risks re-measured by hand
        infos = [cc._episode(env, rule.with_knob(theta), s) for s in range(12)]
        assert risk == pytest.approx(np.mean([1 - i["agreement"] for i in infos]))
    decayed = cc.calibrate(rule, env, delta=0.3, epsilon=0.2, thresholds=[0.99, 0.5],
                           decay=4.0, unit="token")
    assert decayed.units == 12 * 4
    with pytest.raises(ValueError, match=r"unit must be one of \['prompt', 'token'\]"):
        cc.calibrate(rule, env, 0.1, 0.1, unit="sequence")


def test_calibrate_generation_tests_the_deployed_setting_in_order() -> None:
    """Calibration on live generation (kv="copy", own tokens fed back): each tested threshold's
    risk is the disagreement ``exitgym.generate`` measures with it, token units count tokens, and
    the answer is the last threshold fixed-sequence testing rejects."""
    llama = load_decoder(tiny_decoder_configs()["llama"])
    prompts = random_prompts([5] * 12, 3)
    rule = make_rule("margin")
    grid = [0.99, 0.9, 0.5, 0.2, 0.05]
    got = cc.calibrate_generation(rule, prompts, delta=0.15, epsilon=0.2, thresholds=grid,
                                  backbone=llama, max_new_tokens=4, batch_size=5)
    assert got.units == 12 * 4 and got.tested == grid[: len(got.tested)]
    last = cc.fixed_sequence(got.p_values, 0.2)
    assert got.theta == (None if last < 0 else got.tested[last])
    assert all(p <= 0.2 for p in got.p_values[:-1])
    for theta, risk, cost in zip(got.tested, got.risks, got.costs, strict=True):
        live = exitgym.generate(rule.with_knob(theta), prompts, max_new_tokens=4,
                                backbone=llama, reference=True, progress=False)
        assert risk == pytest.approx(1.0 - live.agreement.mean())
        assert cost == pytest.approx(live.cost.mean())
    assert got.risks[0] <= 0.15 < max(got.risks)  # the grid reaches past the tolerance
    assert got.theta == got.tested[-2] and got.p_values[-1] > 0.2  # the last risks > delta
    by_prompt = cc.calibrate_generation(rule, prompts, 0.15, 0.2, thresholds=grid[:2],
                                        unit="prompt", backbone=llama, max_new_tokens=4)
    assert by_prompt.units == 12 and by_prompt.risks[0] == pytest.approx(got.risks[0])
