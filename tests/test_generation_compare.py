"""The generation comparison (``exitgym demo --generation``) on a tiny random decoder."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import exitgym  # noqa: F401
from exitgym.agents.base import evaluate
from exitgym.agents.rules import StaticExit
from exitgym.backbones.decoder_registry import load_decoder
from exitgym.experiments.generation_compare import (
    GenerationCompareConfig,
    generation_compare,
    score,
    token_exit_layers,
)
from exitgym.reports.comparison import FULL_DEPTH
from tests.tiny_decoders import random_prompts, tiny_decoder_configs


def test_token_exit_layers_split_an_episode_at_exits_and_last_layers() -> None:
    # 3 layers: exit at 1, run to the last (its action ignored), exit at 2
    assert token_exit_layers([1, 0, 0, 0, 0, 1], 3) == [0, 2, 1]
    assert token_exit_layers([0, 0, 1], 3) == [2]


def test_score_equals_the_agreement_the_env_reports() -> None:
    """Per-prompt agreement rebuilt from the recorded actions is the env's own ``agreement``."""
    bb = load_decoder(tiny_decoder_configs()["llama"])
    prompts = random_prompts([3, 5, 2, 4], seed=1)
    env = gym.make("exitgym/TokenExit-v0", backbone=bb, prompts=prompts, max_new_tokens=4,
                   kv="full", teacher_forcing=True, cached=True, observation="depth")
    for k in (1, 2, 3):
        rule = StaticExit(k=k).reading("depth")
        scored = score(evaluate(rule, env), env.unwrapped.tables)
        for sid in range(len(prompts)):
            env.reset(seed=0, options={"sample_id": sid})
            rule.reset(1)
            obs, done, info = env.unwrapped._last_obs[0], False, {}
            while not done:
                action = int(rule.act(obs[None])[0])
                obs, _, done, _, info = env.step(action)
            assert scored.agreement[sid] == pytest.approx(info["agreement"])
        assert scored.exit_layer == pytest.approx(k)


def test_generation_compare_writes_the_protocols_outputs(tmp_path) -> None:
    bb = load_decoder(tiny_decoder_configs()["llama"])
    sets = tuple(random_prompts([3, 4, 2, 5, 3, 2], seed=s) for s in (0, 1, 2))
    config = GenerationCompareConfig(backbone=bb, prompts=(6, 6, 6), prompt_ids=sets,
                                     max_new_tokens=3, targets=(0.6,), seeds=(0, 1), steps=2,
                                     batch_size=4, table_batch=2, budgets=(0.5, 1.0),
                                     heads="lm-head")
    summary = generation_compare(config, tmp_path, progress=False)
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert (tmp_path / "pareto.png").is_file() and (tmp_path / "report.md").is_file()
    assert stored["selection_split"] == "validation" and stored["seeds"] == [0, 1]
    methods = {r["method"] for r in stored["rows"]}
    assert {"static", "random", "oracle", FULL_DEPTH, "margin", "saturation",
            "reinforce-hardness-budget", "reinforce-vanilla-budget",
            "reinforce-hardness-calibrated", "reinforce-vanilla-calibrated"} <= methods
    # The calibrated reading at τ = 0.5 is the agent's greedy reading: the same point per seed.
    for reward in ("hardness", "vanilla"):
        for seed in (0, 1):
            rows = [r for r in stored["selection_rows"] if r["seed"] == seed and (
                (r["method"] == f"reinforce-{reward}-budget" and r["knob"] == 0.6)
                or (r["method"] == f"reinforce-{reward}-calibrated" and r["knob"] == 0.5))]
            assert len(rows) == 2 and rows[0]["accuracy"] == rows[1]["accuracy"]
            assert rows[0]["cost"] == rows[1]["cost"]
    # The oracle agrees on every token; full-depth static truncation too, at cost ~1.
    assert next(r for r in summary["rows"] if r["method"] == "oracle")["accuracy"] == 1.0
    deepest = [r for r in stored["selection_rows"] if r["method"] == "static" and r["knob"] == 3]
    assert deepest and deepest[0]["accuracy"] == 1.0
    # At budget 1.0 static truncation picks full depth: the reference row has Δ 0.
    static = [r for r in stored["budget_table"] if r["method"] == "static"
              and r["budget"] == 1.0]
    assert static and static[0]["accuracy"] == 1.0 and static[0]["delta_vs_static"] == 0.0
    assert all(r["seeds"] == 2 for r in stored["budget_table"])
    assert stored["policy_flops"]["reinforce-vanilla-budget"] > 0
    per_layer = stored["per_layer_accuracy"]["test"]
    assert len(per_layer) == 3 and per_layer[-1] == 1.0
    assert np.isfinite([r["cost"] for r in stored["rows"]]).all()
