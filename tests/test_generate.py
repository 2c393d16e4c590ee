"""exitgym.generate: batched early-exit generation equals greedy with exits off, and per-prompt
results do not depend on the batch size or on refilling rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import exitgym
from exitgym.agents.generation_rules import MarginExit
from exitgym.backbones import hf_compat
from exitgym.backbones.decoder_registry import load_decoder
from tests.tiny_decoders import random_prompts, tiny_decoder_configs

PROMPTS = random_prompts([4, 9, 2, 6, 3], seed=11)


@pytest.fixture(scope="module")
def bb():
    return load_decoder(tiny_decoder_configs()["llama"])


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_exits_off_is_greedy_generate_at_any_batch_size(bb, batch_size: int) -> None:
    result = exitgym.generate(None, PROMPTS, max_new_tokens=6, batch_size=batch_size,
                              backbone=bb, reference=True)
    for prompt, generated in zip(PROMPTS, result.generated_ids, strict=True):
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            expected = hf_compat.greedy_generate(bb.model, ids, torch.ones_like(ids), 6)
        assert generated == expected[0].tolist()
    assert all(layers == [bb.num_layers] * 6 for layers in result.exit_layers)
    assert np.all(result.agreement == 1.0)
    assert result.tokens_per_s > 0


def test_a_rule_exits_early_and_batching_with_refill_changes_nothing(bb) -> None:
    rule = MarginExit(theta=0.05)
    alone = exitgym.generate(rule, PROMPTS, max_new_tokens=5, batch_size=1, backbone=bb,
                             reference=True)
    batched = exitgym.generate(rule, PROMPTS, max_new_tokens=5, batch_size=2, backbone=bb,
                               reference=True)
    assert batched.generated_ids == alone.generated_ids
    assert batched.exit_layers == alone.exit_layers
    assert np.allclose(batched.cost, alone.cost)
    assert min(min(layers) for layers in alone.exit_layers) < bb.num_layers
    never = exitgym.generate(None, PROMPTS, max_new_tokens=5, backbone=bb)
    assert alone.cost.mean() < never.cost.mean()
    assert np.isnan(never.agreement).all()  # no reference pass asked for


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        exitgym.generate(None, [[1, 2]], batch_size=0)


def test_every_decoder_pass_shows_progress(bb, capsys: pytest.CaptureFixture[str]) -> None:
    """A first generation used to run for minutes without a word: generate, the teacher-forced
    tables of the cached TokenExit env and the distilled heads' state collection show a bar."""
    import gymnasium as gym

    from exitgym.data.decoder_heads import collect_states

    exitgym.generate(None, PROMPTS, max_new_tokens=3, backbone=bb)
    assert f"generate ({len(PROMPTS)} prompts)" in capsys.readouterr().err
    exitgym.generate(None, PROMPTS, max_new_tokens=3, backbone=bb, progress=False)
    assert "generate (" not in capsys.readouterr().err
    gym.make("exitgym/TokenExit-v0", backbone=bb, prompts=PROMPTS, max_new_tokens=2, kv="full",
             teacher_forcing=True, cached=True)
    err = capsys.readouterr().err
    assert f"teacher-forced decoder pass ({len(PROMPTS)} prompts)" in err
    assert f"0/{len(PROMPTS) * 2} " in err  # one step per generated token of every prompt
    states = collect_states(bb, PROMPTS, desc="distilled heads: decoder pass")
    assert "distilled heads: decoder pass" in capsys.readouterr().err
    assert states.shape == (sum(map(len, PROMPTS)), bb.num_layers, bb.hidden_size)
