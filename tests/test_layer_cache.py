"""Memorized layer, oracle exit and cost derived by LayerCache, against hand-made examples."""

from __future__ import annotations

import numpy as np
import pytest

from exitgym.backbones.layer_cache import LayerCache, memorized_layer, oracle_layer
from exitgym.data.synthetic import synthetic_cache


@pytest.mark.parametrize(
    ("row", "memorized", "oracle"),
    [
        ([1, 1, 1, 1], 1, 1),  # always correct
        ([0, 0, 0, 0], 4, 4),  # never correct: both fall back to the last layer
        ([1, 0, 1, 1], 3, 1),  # correct, then wrong, then correct
        ([1, 1, 1, 0], 4, 1),  # last head wrong -> m = L
        ([0, 0, 0, 1], 4, 4),
        ([0, 1, 0, 1], 4, 2),
    ],
)
def test_memorized_and_oracle_hand_made(row: list[int], memorized: int, oracle: int) -> None:
    correct = np.array([row], dtype=bool)
    assert memorized_layer(correct)[0] == memorized
    assert oracle_layer(correct)[0] == oracle


def test_cost_formula_matches_definition() -> None:
    cache = synthetic_cache(num_samples=5, num_layers=4)
    i, t = 3, 2  # sample 3, exit after layer 2
    spent = cache.flops_embed[i] + cache.flops_layer[i, :t].sum() + t * cache.flops_head
    full = cache.flops_embed[i] + cache.flops_layer[i].sum() + cache.flops_head
    assert cache.cost()[i, t - 1] == pytest.approx(spent / full)
    assert cache.cost(policy_flops=7.0)[i, t - 1] == pytest.approx((spent + 2 * 7.0) / full)


def test_shape_mismatch_is_named() -> None:
    good = synthetic_cache(num_samples=3, num_layers=2)
    with pytest.raises(ValueError, match="labels"):
        LayerCache(
            pooled=good.pooled,
            logits=good.logits,
            labels=good.labels[:2],
            lengths=good.lengths,
            flops_embed=good.flops_embed,
            flops_layer=good.flops_layer,
            flops_head=good.flops_head,
        )
