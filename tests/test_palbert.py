"""PALBERT / PonderNet: halting distribution, loss, Q-exit against hand computations; training."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym  # noqa: F401
from exitgym.agents.palbert import (
    Palbert,
    PalbertConfig,
    geometric_prior,
    halting_distribution,
    palbert_loss,
    q_exit_layer,
)
from exitgym.agents.rollout import evaluate
from exitgym.data.synthetic import synthetic_cache

torch.set_num_threads(1)


def test_halting_distribution_last_layer_takes_the_rest() -> None:
    p = halting_distribution(torch.tensor([[0.5, 0.2, 0.9]], dtype=torch.float64))
    assert torch.allclose(p, torch.tensor([[0.5, 0.1, 0.4]], dtype=torch.float64))
    prior = geometric_prior(3, 0.1)
    assert torch.allclose(prior, torch.tensor([0.1, 0.09, 0.81], dtype=torch.float64))


def test_palbert_loss_by_hand() -> None:
    lam = torch.tensor([[0.5, 0.2, 0.7]], dtype=torch.float64)
    ce = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    p, prior = [0.5, 0.1, 0.4], [0.1, 0.09, 0.81]
    expected = sum(pi * c for pi, c in zip(p, [1.0, 2.0, 0.5], strict=True))
    expected += 0.5 * sum(pi * math.log(pi / qi) for pi, qi in zip(p, prior, strict=True))
    got = palbert_loss(lam, ce, beta=0.5, lambda_prior=0.1)
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_q_exit_against_hand_cdf() -> None:
    lam = np.array([[0.3, 0.4, 0.5, 0.5]])  # p = .3 .28 .21 .21 ; CDF = .3 .58 .79 1.0
    assert q_exit_layer(lam, 0.25).tolist() == [1]
    assert q_exit_layer(lam, 0.5).tolist() == [2]
    assert q_exit_layer(lam, 0.6).tolist() == [3]
    assert q_exit_layer(lam, 0.8).tolist() == [4]
    assert q_exit_layer(np.zeros((1, 4)), 0.5).tolist() == [4]  # never confident: last layer


def test_training_exits_easy_early_and_policy_matches_q_exit() -> None:
    cache = synthetic_cache(num_samples=64)
    model = Palbert.fit(cache, PalbertConfig(hidden=32, epochs=40, lr=1e-2, batch_size=32))
    lam = model.lambdas(cache)
    easy = np.arange(64) < 32
    # Easy inputs: CE is flat over layers, so the loss is minimised by p = prior (λ = λ_p = 0.1).
    # Hard inputs: only the last head is right, so λ_l -> 0 puts the mass on layer L.
    assert abs(lam[easy].mean() - 0.1) < 0.02 and lam[~easy].mean() < 0.05
    expected = q_exit_layer(lam, 0.2)  # prior CDF: .1 .19 .271 -> easy inputs exit near layer 3
    assert expected[easy].mean() < 4 and (expected[~easy] == cache.num_layers).all()
    env = gym.make_vec("exitgym/EarlyExit-v0", num_envs=16, cache=cache,
                       observation="features+hidden+prev", vectorization_mode="vector_entry_point")
    res = evaluate(model.with_knob(0.2), env)
    assert [r.exit_layer for r in res.records] == expected.tolist()
    for q in (0.05, 0.5):
        res_q = evaluate(model.with_knob(q), env)
        assert [r.exit_layer for r in res_q.records] == q_exit_layer(lam, q).tolist()


def test_sample_criterion_and_save_load(tmp_path) -> None:
    cache = synthetic_cache(num_samples=16)
    model = Palbert.fit(cache, PalbertConfig(hidden=8, epochs=2, seed=1))
    model.save(tmp_path)
    loaded = Palbert.load(tmp_path)
    for a, b in zip(model.net.parameters(), loaded.net.parameters(), strict=True):
        assert torch.equal(a, b)
    env = gym.make("exitgym/EarlyExit-v0", cache=cache, observation="features+hidden+prev")
    sampler = Palbert(model.net, model.hidden_size, model.config, criterion="sample", seed=3)
    again = Palbert(model.net, model.hidden_size, model.config, criterion="sample", seed=3)
    assert evaluate(sampler, env).records == evaluate(again, env).records
    with pytest.raises(ValueError, match="criterion"):
        Palbert(model.net, model.hidden_size, model.config, criterion="bogus")


def test_q_exit_and_sampling_share_one_fitted_lambda_network() -> None:
    """Both criteria are registered methods; for one cache and seed they read the same Λ (so a
    comparison of the two measures the criterion, not two trainings), and they decide
    differently: sampling is random per layer, Q-exit deterministic."""
    from exitgym.agents.registry import lookup

    cache = synthetic_cache(num_samples=32)
    qexit = lookup("qexit").sweep(cache, cache, 0)
    sample = lookup("palbert-sample").sweep(cache, cache, 0)
    assert len(sample) == 1 and sample[0][1] is None and sample[0][0].criterion == "sample"
    assert all(p.net is sample[0][0].net and p.criterion == "q-exit" for p, _ in qexit)
    assert [k for _, k in qexit] == list(Palbert.default_grid(cache.num_layers))
    env = gym.make("exitgym/EarlyExit-v0", cache=cache, observation="features+hidden+prev")
    sampled = evaluate(sample[0][0], env)
    again = evaluate(lookup("palbert-sample").sweep(cache, cache, 0)[0][0], env)
    assert sampled.records == again.records  # seeded
    # The sampling criterion exits at layer 1 with probability λ_1: over 200 draws per sample
    # each sample's frequency is within 5 binomial standard deviations of its own λ_1 (the fitted
    # λ_1 are far from 0 and 1 here, so exiting with 1 − λ_1, or never sampling, fails).
    model = sample[0][0]
    lam1 = model.lambdas(cache)[:, 0]
    draws = 200
    first = np.zeros(cache.num_samples)
    for _ in range(draws):  # the sampler's generator advances: independent draws
        for rec in evaluate(model, env).records:
            first[rec.sample_id] += rec.exit_layer == 1
    freq, sd = first / draws, np.sqrt(lam1 * (1 - lam1) / draws)
    assert np.all(np.abs(freq - lam1) <= 5 * sd + 1e-9), np.abs(freq - lam1) / sd
    assert np.ptp(lam1) > 0.01 and 0.05 < lam1.mean() < 0.95  # a test with power, not empty
    # Extreme λ: a Λ whose output bias is +30 (λ ≈ 1) exits everything at layer 1; −30 (λ ≈ 0)
    # never exits early (every sample reaches layer L).
    import copy

    for bias, layer in ((30.0, 1), (-30.0, cache.num_layers)):
        net = copy.deepcopy(model.net)
        with torch.no_grad():
            net.net[-1].bias.fill_(bias)
        extreme = Palbert(net, model.hidden_size, model.config, criterion="sample", seed=5)
        assert {r.exit_layer for r in evaluate(extreme, env).records} == {layer}
