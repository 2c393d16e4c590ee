"""REINFORCE baselines, the lexicographic λ, determinism and persistence on the synthetic cache."""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import exitgym  # noqa: F401
from exitgym.agents.lexicographic import (
    LexicoConfig,
    Lexicographic,
    lexicographic_direction,
    lexicographic_lambda,
)
from exitgym.agents.mlp_policy import MLPPolicy, chain_flops
from exitgym.agents.reinforce import Reinforce, ReinforceConfig, compute_advantages
from exitgym.agents.rollout import evaluate
from exitgym.backbones.flops import mlp_flops
from exitgym.data.synthetic import synthetic_cache

torch.set_num_threads(1)
N = 64


def make_vec(reward: str = "hardness", alpha: float = 0.5, **kw: Any) -> Any:
    return gym.make_vec("exitgym/EarlyExit-v0", num_envs=64, cache=synthetic_cache(num_samples=N),
                        reward=reward, alpha=alpha, vectorization_mode="vector_entry_point", **kw)


def exit_layers(result: Any) -> tuple[float, float]:
    exits = np.array([r.exit_layer for r in result.records])
    easy = np.arange(N) < N // 2
    return float(exits[easy].mean()), float(exits[~easy].mean())


@pytest.mark.parametrize("baseline", ["self-critical", "mean-of-k", "moving-average", "none"])
def test_each_baseline_exits_easy_early_and_hard_late(baseline: str) -> None:
    env = make_vec()
    agent = Reinforce(env, ReinforceConfig(baseline=baseline, batch_size=64, lr=1e-2, seed=0))
    agent.learn(40)
    easy, hard = exit_layers(evaluate(agent.policy, env))
    assert easy < 2 and hard == 6
    assert len(agent.history) == 40 and {"return", "accuracy", "cost", "entropy"} <= set(
        agent.history[-1])


def two_group_cache() -> Any:
    """Easy inputs right from layer 1; hard ones unsure-wrong at layers 1-3, right from layer 4
    (memorized layer 4). Unlike :func:`synthetic_cache`, continuing pays for the hard inputs
    under some cost weights and not others, so the rewards' gradients differ."""
    base = synthetic_cache(num_samples=N)
    rng = np.random.default_rng(0)
    logits = base.logits.copy()
    for i in range(N // 2, N):
        y = base.labels[i]
        logits[i] = rng.normal(0.0, 0.1, logits[i].shape)
        logits[i, :3, 1 - y] += 0.5
        logits[i, 3:, y] += 4.0
    return dataclasses.replace(base, logits=logits)


def exit_returns(cache: Any, reward: str, alpha: float) -> np.ndarray:
    """``R[i, k-1]``: the return of sample i exiting at layer k, by stepping the env."""
    env = gym.make("exitgym/EarlyExit-v0", cache=cache, reward=reward, alpha=alpha)
    num_layers = cache.num_layers
    out = np.zeros((cache.num_samples, num_layers))
    for i in range(cache.num_samples):
        for k in range(1, num_layers + 1):
            env.reset(seed=0, options={"sample_id": i})
            for layer in range(1, num_layers + 1):
                _, r, term, _, _ = env.step(1 if layer >= k else 0)
                out[i, k - 1] += r
                if term:
                    break
    return out


def exact_gradient(agent: Reinforce, returns: np.ndarray) -> np.ndarray:
    """∇ of the expected return ``mean_i Σ_k P_θ(exit at k | i) R[i, k]``, enumerated exactly
    over exit layers (the last layer takes the remaining probability)."""
    obs = torch.as_tensor(np.array(agent.env.unwrapped.tables.obs))
    p_exit = torch.softmax(agent.policy.net(obs), -1)[..., 1]
    p_exit = torch.cat([p_exit[:, :-1], torch.ones_like(p_exit[:, -1:])], 1)
    survive = torch.cumprod(1 - p_exit, 1)
    before = torch.cat([torch.ones_like(survive[:, :1]), survive[:, :-1]], 1)
    value = (p_exit * before * torch.as_tensor(returns)).sum(1).mean()
    grads = torch.autograd.grad(value, list(agent.policy.parameters()))
    return torch.cat([g.reshape(-1) for g in grads]).double().numpy()


def update_steps(agent: Reinforce, updates: int) -> np.ndarray:
    """``[updates, P]``: what each of the trainer's own updates adds to θ, every one taken from
    the same θ. With plain SGD at rate 1, no clipping and no entropy bonus, that step is the
    trainer's estimate of ∇(expected return)."""
    params = list(agent.policy.parameters())
    agent.optimizer = torch.optim.SGD(params, lr=1.0)
    start = [p.detach().clone() for p in params]
    steps = []
    for _ in range(updates):
        agent.update()
        steps.append(torch.cat([(p.detach() - s).reshape(-1) for p, s in
                                zip(params, start, strict=True)]).double().numpy())
        with torch.no_grad():
            for p, s in zip(params, start, strict=True):
                p.copy_(s)
    return np.array(steps)


def test_updates_follow_the_exact_gradient_of_the_envs_reward() -> None:
    """The trainer's steps, averaged, point along the exact gradient of the expected return of
    the reward the env pays (a sign flip points the other way; a trainer optimising another
    reward shape lands nearer that shape's gradient), and a baseline measurably cuts their
    variance (``none`` is unbiased but noisier)."""
    cache = two_group_cache()
    env = gym.make_vec("exitgym/EarlyExit-v0", num_envs=64, cache=cache, reward="hardness",
                       alpha=2.0, vectorization_mode="vector_entry_point")
    hardness = exit_returns(cache, "hardness", 2.0)
    vanilla = exit_returns(cache, "vanilla", 2.0)
    variance = {}
    for baseline in ("self-critical", "mean-of-k", "moving-average", "none"):
        agent = Reinforce(env, ReinforceConfig(baseline=baseline, entropy_coef=0.0,
                                               max_grad_norm=0.0, seed=0))
        truth, other = exact_gradient(agent, hardness), exact_gradient(agent, vanilla)
        steps = update_steps(agent, 40)
        mean = steps.mean(0)
        cosine = float(mean @ truth / np.linalg.norm(mean) / np.linalg.norm(truth))
        assert cosine > 0.95, (baseline, cosine)
        assert np.linalg.norm(mean - truth) < 0.5 * np.linalg.norm(mean - other), baseline
        variance[baseline] = float(steps.var(0).sum())
    assert variance["self-critical"] < variance["none"] / 2, variance
    assert variance["mean-of-k"] < variance["none"] / 2, variance


def test_single_env_works_too() -> None:
    env = gym.make("exitgym/EarlyExit-v0", cache=synthetic_cache(num_samples=N),
                   reward="hardness", alpha=0.5)
    agent = Reinforce(env, ReinforceConfig(batch_size=32, lr=1e-2, seed=0)).learn(25)
    easy, hard = exit_layers(evaluate(agent.policy, env))
    assert easy < 2 and hard == 6


def test_advantages_by_hand() -> None:
    r = np.array([1.0, 2.0, 3.0, 5.0])
    assert compute_advantages("self-critical", r, np.array([1.0, 3.0, 3.0, 4.0])).tolist() == [
        0.0, -1.0, 0.0, 1.0]
    assert compute_advantages("mean-of-k", r, k=2).tolist() == [-0.5, 0.5, -1.0, 1.0]
    assert compute_advantages("moving-average", r, moving_average=2.0).tolist() == [-1, 0, 1, 3]
    assert compute_advantages("none", r).tolist() == r.tolist()
    with pytest.raises(ValueError, match="greedy"):
        compute_advantages("self-critical", r)


def test_self_critical_advantage_is_zero_when_sample_equals_greedy() -> None:
    env = make_vec()
    agent = Reinforce(env, ReinforceConfig(seed=0))
    with torch.no_grad():  # a policy so sure of "continue" that sampling always picks it
        last = agent.policy.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([60.0, -60.0]))
    ids = np.arange(N)
    sampled = agent._rollout(ids, deterministic=False)
    greedy = agent._rollout(ids, deterministic=True)
    assert np.array_equal(sampled.actions, greedy.actions)
    adv = compute_advantages("self-critical", sampled.returns, greedy.returns)
    assert np.all(adv == 0.0)


def test_same_seed_same_weights_and_save_load(tmp_path) -> None:
    def train(seed: int) -> Reinforce:
        cfg = ReinforceConfig(batch_size=32, seed=seed, epsilon=0.1)
        return Reinforce(make_vec(), cfg).learn(5)

    a, b, c = train(3), train(3), train(4)
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in
                   zip(a.policy.parameters(), c.policy.parameters(), strict=True))
    assert a.history == b.history
    a.save(tmp_path)
    loaded = MLPPolicy.load(tmp_path)
    for pa, pl in zip(a.policy.parameters(), loaded.parameters(), strict=True):
        assert torch.equal(pa, pl)
    # the documented MLP cost (backbones.flops), also what the built network's layers give
    assert loaded.policy_flops == mlp_flops([6, 64, 2]) == chain_flops(loaded.net)
    env = make_vec()
    assert evaluate(loaded, env).records == evaluate(a.policy, env).records


def test_tensorboard_and_logger(tmp_path) -> None:
    seen: list[dict[str, float]] = []
    agent = Reinforce(make_vec(), ReinforceConfig(batch_size=16), logger=seen.append,
                      log_dir=tmp_path / "tb")
    agent.learn(2)
    agent.close()
    assert len(seen) == 2 and seen[-1]["update"] == 2.0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_lexicographic_lambda_by_hand() -> None:
    g_q, g_f, phi = np.array([1.0, 2.0]), np.array([3.0, -1.0]), 4.0
    # barrier: λ = (φ − ∇f·∇q)/‖∇q‖² = (4 − 1)/5 = 0.6 ; e = ∇f + 0.6∇q
    assert lexicographic_lambda(g_f, g_q, phi) == pytest.approx(0.6)
    e, lam = lexicographic_direction(g_q, g_f, phi, "barrier")
    assert lam == pytest.approx(0.6) and np.allclose(e, [3.6, 0.2])
    assert float(g_q @ e) == pytest.approx(phi)  # the constraint's decrease rate is exactly φ
    # paper (Eqn 7 as typeset): λ = (φ − ∇q·∇f)/‖∇f‖² = 3/10 ; e = ∇q + 0.3∇f
    e, lam = lexicographic_direction(g_q, g_f, phi, "paper")
    assert lam == pytest.approx(0.3) and np.allclose(e, [1.9, 1.7])
    # a satisfied constraint with slack (φ < 0) and no conflict: λ = 0, pure objective descent
    e, lam = lexicographic_direction(g_q, g_f, -10.0, "barrier")
    assert lam == 0.0 and np.allclose(e, g_f)
    assert lexicographic_lambda(g_f, np.zeros(2), 1.0) == 0.0


def greedy_loss(agent: Lexicographic, env: Any) -> tuple[float, tuple[float, float]]:
    """Mean CE at the greedy policy's exit heads over the split, and its easy / hard exits."""
    result = evaluate(agent.policy, env)
    tables = env.unwrapped.tables
    ids = np.array([r.sample_id for r in result.records])
    exits = np.array([r.exit_layer for r in result.records])
    return float(tables.ce[ids, exits - 1].mean()), exit_layers(result)


@pytest.mark.parametrize(("drop", "easy_max", "hard"), [(0.0, 6, 6), (0.2, 1, 6), (0.5, 1, 1)])
def test_lexicographic_meets_the_quality_constraint_with_every_step_keeping_the_barrier(
        drop: float, easy_max: int, hard: int) -> None:
    """The plain step ``θ ← θ − γe`` keeps ``∇q·e ≥ φ`` on every update where ``∇q ≠ 0``
    (measured on the step taken), and the trained policy meets ``q ≤ c``: with 0.2 nats of
    slack it finds the cheapest feasible policy (easy inputs at layer 1, hard ones to the end),
    with 0.5 it exits everything at layer 1 (mean CE ~0.44 < c)."""
    env = make_vec(reward="flops")
    agent = Lexicographic(env, LexicoConfig(batch_size=64, lr=0.1, seed=0, allowed_drop=drop))
    agent.learn(30)
    report = agent.constraint_report()
    assert report["barrier_applies"] >= 20 and report["barrier_held"] == 1.0, report
    loss, (easy, hard_exit) = greedy_loss(agent, env)
    assert loss <= agent.threshold + 1e-9
    assert easy <= easy_max and hard_exit == hard


def test_wrong_lambda_rule_or_step_breaks_what_the_barrier_guarantees() -> None:
    """Eq. 7 as typeset (λ on the computation gradient) ends violating the constraint the
    barrier form meets; Adam with clipping on the barrier direction breaks ``∇q·e ≥ φ`` on a
    measurable share of the steps."""
    env = make_vec(reward="flops")
    paper = Lexicographic(env, LexicoConfig(batch_size=64, lr=0.1, seed=0, allowed_drop=0.2,
                                            form="paper")).learn(30)
    loss, _ = greedy_loss(paper, env)
    assert loss > paper.threshold + 0.1
    adam = Lexicographic(env, LexicoConfig(batch_size=64, lr=1e-2, seed=0, allowed_drop=0.2,
                                           step="adam")).learn(30)
    assert adam.constraint_report()["barrier_held"] < 0.9
    assert len(adam.lambda_history) == 30 and "lambda" in adam.history[-1]


class OneStepMulti(gym.Env):
    """One-step MultiDiscrete([2, 3]) env: reward 1 for action (1, 2), else 0."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = spaces.MultiDiscrete([2, 3])
        self.num_samples = 4

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._sid = int((options or {}).get("sample_id", 0))
        return np.array([self._sid / 4, 1.0], np.float32), {}

    def step(self, action):
        ok = tuple(int(a) for a in action) == (1, 2)
        info = {"exit_layer": 1, "prediction": int(ok), "label": 1, "correct": ok, "cost": 1.0}
        return np.zeros(2, np.float32), float(ok), True, False, info


def test_multidiscrete_action_space() -> None:
    agent = Reinforce(OneStepMulti(), ReinforceConfig(batch_size=16, lr=3e-2, seed=0)).learn(40)
    actions = agent.policy.act(np.array([[0.0, 1.0], [0.5, 1.0]], np.float32))
    assert actions.shape == (2, 2) and actions.tolist() == [[1, 2], [1, 2]]


def test_consistentee_losses_and_schedule() -> None:
    from dataclasses import replace

    from exitgym.agents.consistentee import (
        ConsistentEE,
        ConsistentEEConfig,
        exit_layer_ce,
        weighted_ce,
    )
    from exitgym.agents.consistentee_policy import official_reinforce

    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])  # CE_1 = log 2, CE_2 = log(1 + e^-2)
    labels = torch.tensor([0])
    ce1, ce2 = np.log(2.0), np.log1p(np.exp(-2.0))
    assert float(weighted_ce(logits, labels)) == pytest.approx((1 * ce1 + 2 * ce2) / 3, rel=1e-6)
    assert float(exit_layer_ce(logits, labels, torch.tensor([2]))) == pytest.approx(ce2, rel=1e-6)

    base = synthetic_cache(num_samples=N)
    pooled = base.pooled.copy()
    pooled[:, :, 1] = (2.0 * base.labels[:, None] - 1.0) * np.arange(1, 7)[None, :] / 6
    cache = replace(base, pooled=pooled)  # the label is linearly readable, better with depth

    def make_env(c):
        return gym.make_vec("exitgym/EarlyExit-v0", num_envs=64, cache=c, reward="hardness",
                            alpha=0.5, observation="hidden+depth",
                            vectorization_mode="vector_entry_point")

    cfg = ConsistentEEConfig(rounds=1, head_epochs=30, head_lr=5e-2, policy_updates=5,
                             reinforce=official_reinforce(batch_size=32))
    run = ConsistentEE(cache, make_env, cfg).run()
    # ends on a policy phase: the returned policy was trained on the returned heads
    assert [e["phase"] for e in run.log] == ["heads-weighted", "policy", "heads-at-exit",
                                            "policy"]
    assert run.agent is not None and run.agent.env.unwrapped.cache is run.cache
    assert run.cache.correct[:, -1].mean() == 1.0  # the trained last head separates the labels
    assert run.cache.meta["heads"] == "consistentee-round0"
    with torch.no_grad():
        expect = run.heads(torch.as_tensor(cache.pooled)).numpy()
    assert np.allclose(run.cache.logits, expect, atol=1e-6)
    exported = run.heads.to_exit_heads().eval()
    with torch.no_grad():
        assert torch.allclose(exported(torch.as_tensor(cache.pooled)), torch.as_tensor(expect),
                              atol=1e-5)


def test_log_probs_leave_out_the_forced_last_layer_action() -> None:
    """At layer L every action exits, so its log-probability is not part of Σ_t log π: changing
    that action leaves the episode's score unchanged, changing a real decision does not."""
    env = make_vec()
    agent = Reinforce(env, ReinforceConfig(seed=0))
    with torch.no_grad():  # a policy that always continues: every episode reaches layer L
        agent.policy.net[-1].weight.zero_()
        agent.policy.net[-1].bias.copy_(torch.tensor([60.0, -60.0]))
    ro = agent._rollout(np.arange(N), deterministic=False)
    assert ro.alive.shape[0] == 6 and ro.alive[5].all()
    base = agent._score_terms(ro)[0].detach()
    ro.actions[5] = 1 - ro.actions[5]  # the forced step: its log π would change by ~60 nats
    assert torch.equal(agent._score_terms(ro)[0].detach(), base)
    ro.actions[0] = 1 - ro.actions[0]  # a decision
    assert (agent._score_terms(ro)[0].detach() < base - 50).all()


@pytest.mark.parametrize("target", [0.3, 0.5])
def test_budget_targeted_mode_meets_the_budget_the_user_gives(target: float) -> None:
    """The plain multiplier rule (the PID rule: ``tests/test_multiplier.py``). Made with α = 0
    (no reason to exit), the policy runs deep; with a target cost the multiplier α rises until
    the mean cost meets the budget: at 0.3 only exiting at layer 1 fits."""
    def trained(target_cost: float | None) -> tuple[Reinforce, Any]:
        env = gym.make_vec("exitgym/EarlyExit-v0", num_envs=64, cache=two_group_cache(),
                           reward="hardness", alpha=0.0, vectorization_mode="vector_entry_point")
        cfg = ReinforceConfig(seed=0, lr=1e-2, target_cost=target_cost, multiplier="plain")
        return Reinforce(env, cfg).learn(150), env

    free, env = trained(None)
    assert evaluate(free.policy, env).cost > 0.6
    agent, env = trained(target)
    result = evaluate(agent.policy, env)
    assert result.cost <= target + 0.01
    assert max(h["alpha"] for h in agent.history) > 0.5  # the multiplier did the work
    if target == 0.3:  # only exiting every input at layer 1 fits (at 0.5 the plain rule may
        assert result.accuracy == 0.5  # overshoot to it too: test_multiplier.py)
