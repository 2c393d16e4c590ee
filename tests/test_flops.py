"""The analytic FLOPs model against torch's FlopCounterMode on the real modules."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig

from exitgym.backbones import hf_compat
from exitgym.backbones.base import Backbone
from exitgym.backbones.flops import FlopsModel, mlp_flops
from exitgym.backbones.registry import load_backbone
from tests.test_backbones import TINY, batch_for


def eager(config) -> Backbone:
    """Eager attention: FlopCounterMode cannot see inside the fused CPU SDPA kernel."""
    bb = load_backbone(config)
    hf_compat.use_eager_attention(bb.model)
    return bb


def counted(fn) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("family", sorted(TINY))
@pytest.mark.parametrize("length", [5, 17, 40])
def test_matmul_flops_match_counter_exactly_and_totals_within_2_percent(
    family: str, length: int
) -> None:
    bb = eager(TINY[family])
    batch = batch_for(bb, [length])
    state = bb.embed(batch)
    layer_counted = counted(lambda: bb.layer(0, state))
    model = bb.flops
    assert layer_counted == model.attention_matmul(length) + model.ffn_matmul(length)
    att_only = counted(lambda: bb.layer(0, state, skip_ffn=torch.tensor([True])))
    assert att_only == model.attention_matmul(length)
    ffn_only = counted(lambda: bb.layer(0, state, skip_attention=torch.tensor([True])))
    assert ffn_only == model.ffn_matmul(length)
    embed_counted = counted(lambda: bb.embed(batch))
    assert embed_counted == model.embeddings_matmul(length)


def test_bert_base_sanity_figure_and_total_within_2_percent() -> None:
    config = BertConfig()  # bert-base size, random init
    model = FlopsModel.from_config(config)
    assert model.full(128) == pytest.approx(22.0e9, rel=0.03)
    bb = eager(config)
    ids = torch.randint(1000, 2000, (1, 128))
    total = counted(lambda: bb.forward_pooled({"input_ids": ids}))
    assert model.full(128) == pytest.approx(total, rel=0.02)


def test_token_drop_lowers_every_later_layer() -> None:
    model = FlopsModel.from_config(TINY["bert"])
    full = model.embeddings(20) + 3 * model.layer(20)
    dropped = model.embeddings(20) + model.layer(20) + 2 * model.layer(14)
    assert dropped < full
    assert model.layer(14) / model.layer(20) < 1.0


def test_head_and_policy_flops() -> None:
    model = FlopsModel.from_config(TINY["bert"])
    assert model.head(2) == 2 * 32 * 2 + 2
    assert model.head(3, kind="mlp", hidden=16) == (2 * 32 * 16 + 16) + (2 * 16 * 3 + 3) + 8 * 16
    assert (
        mlp_flops([6, 64, 64, 2])
        == (2 * 6 * 64 + 64) + (2 * 64 * 64 + 64) + (2 * 64 * 2 + 2) + 8 * 128
    )
    with pytest.raises(ValueError, match="unknown head kind"):
        model.head(2, kind="deep")


def test_every_decision_network_is_charged_by_mlp_flops() -> None:
    """One cost function: the RL policy, PALBERT's Λ and BERxiT's scorer all cost
    ``mlp_flops`` of their widths (before, the policy counted products only and Λ / LTE were
    free), and a chain whose widths do not connect is refused."""
    from exitgym.agents.berxit import Berxit, BerxitConfig
    from exitgym.agents.mlp_policy import MLPPolicy, MLPPolicyConfig, chain_flops
    from exitgym.agents.palbert import Palbert, PalbertConfig
    from exitgym.data.synthetic import synthetic_cache

    policy = MLPPolicy(MLPPolicyConfig(obs_dim=6, nvec=(2,)))
    assert policy.policy_flops == chain_flops(policy.net) == mlp_flops([6, 64, 2]) == 1602
    cache = synthetic_cache(num_samples=16, hidden_size=8)
    palbert = Palbert.fit(cache, PalbertConfig(epochs=1, hidden=16))
    assert palbert.policy_flops == mlp_flops([16, 16, 16, 1])
    # by hand: Λ reads [h_l, h_{l-1}] (2·8 = 16) through 16-16-1 with tanh on the 32 hidden
    # units: (2·16·16 + 16) · 2 + (2·16 + 1) + 8·32 = 1345, for every knob and criterion
    assert palbert.with_knob(0.3).policy_flops == 1345
    assert palbert.with_criterion("sample").policy_flops == 1345
    berxit = Berxit.fit(cache, BerxitConfig(epochs=1, width=32))
    assert berxit.policy_flops == mlp_flops([4, 32, 1])
    with pytest.raises(ValueError, match="do not chain"):
        chain_flops(torch.nn.Linear(4, 8), torch.nn.Linear(9, 1))
