"""exitgym.generate(mode="speculative"): self-speculative drafts from the first layers, verified by
the rest, give greedy generate's tokens exactly, and every FLOP computed is charged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import exitgym
from exitgym.backbones import hf_compat
from exitgym.backbones.decoder_heads import LayerMaps
from exitgym.backbones.decoder_registry import load_decoder
from tests.tiny_decoders import random_prompts, tiny_decoder_configs

PROMPTS = random_prompts([4, 9, 2, 6], seed=5)
TOKENS = 10


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def case(request: pytest.FixtureRequest):
    """A tiny random decoder (3 layers) and Hugging Face's greedy continuation of each prompt."""
    bb = load_decoder(tiny_decoder_configs()[request.param])
    expected = []
    with torch.inference_mode():
        for prompt in PROMPTS:
            ids = torch.tensor([prompt])
            expected.append(hf_compat.greedy_generate(bb.model, ids, torch.ones_like(ids),
                                                      TOKENS)[0].tolist())
    return bb, expected


def _spec(bb, k: int, n: int, **kwargs):  # noqa: ANN001, ANN202
    return exitgym.generate(None, PROMPTS, max_new_tokens=TOKENS, backbone=bb, progress=False,
                            mode="speculative", draft_layer=k, draft_tokens=n, **kwargs)


def _token_flops(bb, prompt: list[int]) -> float:  # noqa: ANN001
    """Full-depth FLOPs of a prompt's generated tokens (token j enters at len(prompt) - 1 + j)."""
    return float(np.sum(bb.flops.token(len(prompt) + np.arange(TOKENS))))


@pytest.mark.parametrize(("k", "n"), [(1, 1), (1, 4), (2, 1), (2, 3), (2, 6), (3, 4)])
def test_output_is_greedy_generate_token_for_token(case, k: int, n: int) -> None:
    bb, expected = case
    result = _spec(bb, k, n, batch_size=1)
    assert result.generated_ids == expected
    assert result.exit_layers == [[bb.num_layers] * TOKENS] * len(PROMPTS)
    assert np.all((result.acceptance >= 0) & (result.acceptance <= 1))
    assert np.isnan(result.agreement).all()  # no reference pass asked for


def test_batched_rows_with_refill_equal_single_rows(case) -> None:
    """Rows accept different counts in one batch (verify chunk masked, each row rolled back on
    its own) and finished rows take the next prompt: nothing per prompt changes."""
    bb, expected = case
    single = _spec(bb, 1, 3, batch_size=1)
    batched = _spec(bb, 1, 3, batch_size=3, reference=True)
    assert batched.generated_ids == expected
    assert np.array_equal(batched.acceptance, single.acceptance)
    assert np.allclose(batched.cost, single.cost, rtol=1e-12)
    assert len(set(single.acceptance.tolist())) > 1  # the rows really accepted differently
    assert np.all(batched.agreement == 1.0)


def test_drafting_with_the_full_model_accepts_everything_at_cost_one(case) -> None:
    bb, expected = case
    result = _spec(bb, bb.num_layers, 4)
    assert result.generated_ids == expected
    assert np.all(result.acceptance == 1.0)
    assert np.allclose(result.cost, 1.0, rtol=1e-12)


def test_one_token_drafts_accept_where_layer_k_agrees_and_pay_one_more_head(case) -> None:
    """With n = 1 every cycle drafts one token and emits the full model's: the acceptance is the
    share of the greedy continuation that layer k's head predicts (checked on Hugging Face's
    hidden states), and the charge is a full token plus the draft head."""
    bb, expected = case
    k = 1
    result = _spec(bb, k, 1)
    for prompt, cont, acc, cost in zip(PROMPTS, expected, result.acceptance, result.cost,
                                       strict=True):
        ids = torch.tensor([prompt + cont[:-1]])
        with torch.inference_mode():
            hidden = bb.model(input_ids=ids, output_hidden_states=True).hidden_states[k][0]
            predicted = bb.logits(hidden[len(prompt) - 1:]).argmax(dim=-1).tolist()
        assert acc == pytest.approx(np.mean(np.array(predicted) == np.array(cont)))
        full = _token_flops(bb, prompt)
        assert cost == pytest.approx((full + TOKENS * float(bb.flops.head(1))) / full, rel=1e-12)


def test_rejected_drafts_are_charged(case) -> None:
    """An early draft layer is rarely right on a random model: the drafts and their verification
    are computed and thrown away, so the cost exceeds the full model's and grows with n."""
    bb, expected = case
    short, long = _spec(bb, 1, 2), _spec(bb, 1, 6)
    assert long.generated_ids == short.generated_ids == expected
    assert np.all(long.acceptance < 0.5)
    assert np.all(short.cost > 1.0)
    assert np.all(long.cost > short.cost)
    assert np.all(long.cost > 1.5)


def test_distilled_heads_draft_and_their_maps_are_charged(case) -> None:
    bb, expected = case
    gen = torch.Generator().manual_seed(0)
    h, layers = bb.hidden_size, bb.num_layers
    maps = LayerMaps(torch.eye(h) + 0.1 * torch.randn(layers - 1, h, h, generator=gen),
                     0.1 * torch.randn(layers - 1, h, generator=gen))
    assert _spec(bb, 2, 3, heads=maps).generated_ids == expected
    one = _spec(bb, 1, 1, heads=maps)
    assert one.generated_ids == expected
    draft_head = float(bb.flops.head(1)) + maps.flops(0)
    assert maps.flops(0) > 0
    for prompt, cost in zip(PROMPTS, one.cost, strict=True):
        full = _token_flops(bb, prompt)
        assert cost == pytest.approx((full + TOKENS * draft_head) / full, rel=1e-12)


def test_bad_arguments_are_refused() -> None:
    bb = load_decoder(tiny_decoder_configs()["llama"])
    L = bb.num_layers

    def run(policy=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
        return exitgym.generate(policy, [[5, 6]], max_new_tokens=2, backbone=bb, progress=False,
                                **kwargs)

    for layer in (0, L + 1, 1.5, True):
        with pytest.raises(ValueError, match=rf"draft_layer must be an integer in \[1, {L}\]"):
            run(mode="speculative", draft_layer=layer)
    with pytest.raises(ValueError, match="needs draft_layer"):
        run(mode="speculative")
    for tokens in (0, -2, 2.0):
        with pytest.raises(ValueError, match="draft_tokens must be an integer >= 1"):
            run(mode="speculative", draft_layer=1, draft_tokens=tokens)
    with pytest.raises(ValueError, match=r"unknown mode 'lossless'; allowed: \['exit', "
                                         r"'speculative'\]"):
        run(mode="lossless")
    from exitgym.agents.generation_rules import MarginExit

    with pytest.raises(ValueError, match="mode='speculative' takes no policy"):
        run(MarginExit(theta=0.5), mode="speculative", draft_layer=1)
    with pytest.raises(ValueError, match="options of mode='exit'"):
        run(mode="speculative", draft_layer=1, kv="full")
    with pytest.raises(ValueError, match="options of mode='speculative'"):
        run(draft_layer=1)
