"""The learned exit predictor and the ``predictor`` rule: fit, decisions and what is charged."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import exitgym  # noqa: F401
from exitgym.agents.registry import make_rule
from exitgym.backbones.decoder_registry import load_decoder
from exitgym.backbones.exit_predictor import ExitPredictor, fit_predictor, head_agrees
from exitgym.data.decoder_heads import collect_states
from tests.tiny_decoders import random_prompts, tiny_decoder_configs

PROMPTS = random_prompts([5, 7, 4], seed=4)


@pytest.fixture(scope="module")
def llama():
    return load_decoder(tiny_decoder_configs()["llama"])


def test_fit_separates_a_linear_rule_and_round_trips(tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(600, 3, 6, generator=gen) * 50.0
    agree = torch.stack([states[:, 0, 2] > 10.0, states[:, 1, 0] < 0.0,
                         torch.ones(600, dtype=torch.bool)], dim=1)
    pred = fit_predictor(states, agree)
    for i in range(2):
        acc = ((pred.probability(i, states[:, i]) >= 0.5) == agree[:, i]).double().mean()
        assert acc > 0.97
    assert torch.equal(pred.probability(2, states[:, 2]), torch.ones(600, dtype=torch.float64))
    assert pred.flops() == 2 * 6 + 2
    pred.save(tmp_path / "p.safetensors")
    back = ExitPredictor.load(tmp_path / "p.safetensors")
    assert torch.equal(back.weight, pred.weight) and back.clip == pred.clip
    with pytest.raises(ValueError, match=r"agree \[N, L\]"):
        fit_predictor(states, agree[:, :2])


def test_labels_are_the_heads_agreement(llama) -> None:
    states = collect_states(llama, PROMPTS)
    agree = head_agrees(llama, states)
    final = llama.logits(states[:, -1]).argmax(-1)
    assert torch.equal(agree[:, 0], llama.logits(states[:, 0]).argmax(-1) == final)
    assert bool(agree[:, -1].all())


def _exit_layers(env, rule, sid: int) -> list[int]:
    obs, _ = env.reset(options={"sample_id": sid})
    rule.reset(1)
    done = False
    while not done:
        obs, _, done, _, info = env.step(int(rule.act(obs)[0]))
    return info["exit_layers"]


def _fixed(llama, biases: list[float]) -> ExitPredictor:
    """A predictor of constant probability sigmoid(bias) per layer."""
    return ExitPredictor(torch.zeros(len(biases), llama.hidden_size, dtype=torch.float64),
                         torch.tensor(biases, dtype=torch.float64))


def test_rule_exits_where_the_predictor_says_and_pays_no_head_before(llama) -> None:
    pred = _fixed(llama, [-5.0, 5.0])  # P = 0.0067 at layer 1, 0.9933 at layer 2
    rule = make_rule("predictor", theta=0.5, predictor=pred)
    assert rule.required_observation == "depth+hidden" and rule.policy_flops == 2 * 32 + 2
    settings = {"backbone": llama, "prompts": PROMPTS, "max_new_tokens": 3, "kv": "full",
                "teacher_forcing": True, "cached": True}
    env = gym.make("exitgym/TokenExit-v0", observation="depth+hidden",
                   policy_flops=rule.policy_flops, **settings)
    strict = rule.with_knob(0.995)
    for sid in range(len(PROMPTS)):
        assert _exit_layers(env, rule, sid) == [2, 2, 2]
        assert _exit_layers(env, strict, sid) == [3, 3, 3]
    # What exiting at layer l costs: l layers and l decisions, one head at the exit only.
    tb = env.unwrapped.tables
    free = gym.make("exitgym/TokenExit-v0", observation="depth", **settings).unwrapped.tables
    heads = gym.make("exitgym/TokenExit-v0", observation="features", **settings).unwrapped.tables
    layers = np.arange(1, llama.num_layers + 1)
    assert np.allclose(tb.flops - free.flops, rule.policy_flops * layers)
    assert np.allclose(heads.flops - free.flops, llama.flops.head(1) * (layers - 1))


def test_rule_without_a_predictor_says_what_it_needs(llama) -> None:
    env = gym.make("exitgym/TokenExit-v0", backbone=llama, prompts=PROMPTS, max_new_tokens=2,
                   observation="depth+hidden")
    with pytest.raises(ValueError, match="the predictor rule needs predictor="):
        _exit_layers(env, make_rule("predictor"), 0)
    with pytest.raises(ValueError, match=r"theta must be in \[0, 1\]"):
        make_rule("predictor", theta=1.5)
