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


def test_a_batch_runs_each_layer_once_per_token_step_over_the_rows_still_climbing(bb) -> None:
    """Compacted synchronous batching (issue 25): rows that exit wait for the token step's end,
    so a step of the batch makes one layer call per layer index up to its deepest exit, each
    over the rows still climbing; the keys and values above the exits are written once per
    layer index. Exits that started the next token at once (the earlier loop) scattered the rows
    over layers and split every layer call into one call per layer index in use."""
    rule = MarginExit(theta=0.05)
    calls: list[int] = []
    writes: list[int] = []
    prefilling = []
    layer, write_kv, fill_row = bb.layer, bb.write_kv, bb.fill_row

    def counted_layer(i, hidden, cache, rows=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if not prefilling:
            calls.append(len(rows))
        return layer(i, hidden, cache, rows, *args, **kwargs)

    def counted_write(i, hidden, cache, rows):  # noqa: ANN001
        writes.append(i)
        return write_kv(i, hidden, cache, rows)

    def uncounted_fill(*args, **kwargs):  # noqa: ANN002, ANN003  (the prompts' prefill)
        prefilling.append(True)
        try:
            return fill_row(*args, **kwargs)
        finally:
            prefilling.pop()

    bb.layer, bb.write_kv, bb.fill_row = counted_layer, counted_write, uncounted_fill
    try:
        batched = exitgym.generate(rule, PROMPTS, max_new_tokens=5, batch_size=len(PROMPTS),
                                   backbone=bb)
    finally:
        bb.layer, bb.write_kv, bb.fill_row = layer, write_kv, fill_row
    steps = np.array(batched.exit_layers)  # [prompt, token]: every row is in every step
    assert steps.min() < bb.num_layers < steps.max() + 1  # exits vary within steps
    assert len(calls) == int(steps.max(axis=0).sum())
    assert sum(calls) == int(steps.sum())  # compacted: only climbing rows run a layer
    # every step but the last (no token follows it) fills above its lowest exit
    assert len(writes) == int((bb.num_layers - steps[:, :-1].min(axis=0)).sum())
    alone = exitgym.generate(rule, PROMPTS, max_new_tokens=5, batch_size=1, backbone=bb)
    assert batched.generated_ids == alone.generated_ids
    assert np.allclose(batched.cost, alone.cost)


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
