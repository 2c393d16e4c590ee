"""Exit rules on TokenExit-v0 through the shared evaluation (agents.evaluate)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import exitgym  # noqa: F401
from exitgym.agents.base import evaluate
from exitgym.agents.generation_rules import MarginExit, SaturationExit, TokenOracleExit
from exitgym.agents.rules import EntropyExit, MaxProbExit, PatienceExit, StaticExit
from exitgym.backbones.decoder_registry import load_decoder
from tests.tiny_decoders import random_prompts, tiny_decoder_configs

PROMPTS = random_prompts([4, 7, 2, 5], seed=3)


def token_env(observation: str, vector: bool = True, **kwargs):
    bb = load_decoder(tiny_decoder_configs()["llama"])
    settings = {"backbone": bb, "prompts": PROMPTS, "max_new_tokens": 4, "kv": "full",
                "teacher_forcing": True, "cached": True, "observation": observation, **kwargs}
    if vector:
        return gym.make_vec("exitgym/TokenExit-v0", num_envs=2,
                            vectorization_mode="vector_entry_point", **settings)
    return gym.make("exitgym/TokenExit-v0", **settings)


def test_rules_trace_a_cost_agreement_trade_off_and_the_oracle_bounds_it() -> None:
    env = token_env("features+logits")
    never = evaluate(MaxProbExit(theta=1.0), env)  # max prob never exceeds 1: full depth
    assert len(never.records) == len(PROMPTS)
    assert all(r.correct for r in never.records)  # full depth agrees with itself
    assert all(r.exit_layer == 3 for r in never.records)
    always = evaluate(EntropyExit(theta=1.0), env)  # exits at layer 1 whenever entropy < 1
    assert always.cost < never.cost
    depth = token_env("depth")
    oracle = evaluate(TokenOracleExit(depth.unwrapped.tables), depth)
    assert all(r.correct for r in oracle.records)  # exits only where the head agrees
    assert oracle.cost <= never.cost
    for rule in (MarginExit(theta=0.0), PatienceExit(t=1)):
        result = evaluate(rule, env)
        assert oracle.cost <= result.cost + 1e-12 or not all(
            r.correct for r in result.records)


def test_vector_and_single_env_evaluations_agree() -> None:
    rule = MarginExit(theta=0.02)
    single = evaluate(rule, token_env("features+logits", vector=False))
    vector = evaluate(rule, token_env("features+logits"))
    assert single.records == vector.records
    assert np.allclose([r.cost for r in single.records], [r.cost for r in vector.records])


def test_saturation_exits_when_consecutive_states_align() -> None:
    env = token_env("depth+hidden+prev")
    tight = evaluate(SaturationExit(theta=1.0), env)  # cos never exceeds 1: full depth
    loose = evaluate(SaturationExit(theta=-1.0), env)  # any cos > −1: exit at layer 2
    assert all(r.exit_layer == 3 for r in tight.records)
    assert all(r.exit_layer == 2 for r in loose.records)  # never at layer 1 (prev = 0)
    assert loose.cost < tight.cost


def test_rules_reading_the_features_decide_as_the_rules_reading_the_logits() -> None:
    """The decoder demo tabulates ``features`` (V-wide logits are too large): the confidence
    rules must take the same decisions from its columns as from the logits."""
    with_logits, features = token_env("features+logits"), token_env("features")
    for rule in (EntropyExit(theta=0.9), EntropyExit(theta=0.99), MaxProbExit(theta=0.02),
                 MarginExit(theta=0.005), PatienceExit(t=0), PatienceExit(t=1)):
        a = evaluate(rule, with_logits)
        b = evaluate(rule.reading("features"), features)
        assert [r.actions for r in a.records] == [r.actions for r in b.records], rule.describe()
    layers = {r.exit_layer for t in (0, 1) for r in evaluate(
        PatienceExit(t=t).reading("features"), features).records}
    assert len(layers) > 1  # the knob changes the decisions


def test_head_free_rules_are_not_charged_a_head_per_layer() -> None:
    """Static truncation on the ``depth`` view pays one head (at the exit), on ``features`` one
    per layer: same decisions, lower cost."""
    rule = StaticExit(k=3)
    on_features = evaluate(rule.reading("features"), token_env("features"))
    on_depth = evaluate(rule.reading("depth"), token_env("depth"))
    assert [r.actions for r in on_features.records] == [r.actions for r in on_depth.records]
    assert on_depth.cost < on_features.cost


def test_registry_builds_the_generation_rules_with_the_same_decisions() -> None:
    from exitgym.agents.registry import lookup, make_rule

    cases = ((MarginExit, "margin", "features+logits", 0.05),
             (SaturationExit, "saturation", "depth+hidden+prev", 0.5))
    for cls, name, view, theta in cases:
        assert lookup(name, "rule").factory is cls
        env = token_env(view)
        by_name = evaluate(make_rule(name, theta=theta), env)
        by_class = evaluate(cls(theta=theta), token_env(view))
        assert by_name.records == by_class.records
        # the knob reaches the rule: another theta decides differently on these prompts
        other = evaluate(make_rule(name, theta=1.0), token_env(view))
        assert [r.exit_layer for r in other.records] != [r.exit_layer for r in by_name.records]


def test_the_generation_demo_takes_its_rules_from_the_registry(monkeypatch) -> None:
    from exitgym.agents import registry
    from exitgym.agents.rules import StaticExit as Static
    from exitgym.experiments.generation_compare import rule_views

    views = rule_views()
    # the predictor rule needs a fitted predictor the demo does not prepare
    assert set(views) == set(registry.names("rule")) - {"oracle", "predictor"}
    assert views["margin"] == "features" and views["saturation"] == "depth+hidden+prev"
    assert views["static"] == views["random"] == "depth"
    # a rule added to the registry joins the demo, with the view it needs
    extra = registry.Method("static-copy", "rule", "a copy of static", Static, knob="k")
    monkeypatch.setitem(registry.METHODS, "static-copy", extra)
    assert rule_views()["static-copy"] == "features"
