"""Batched live execution of the skip environments: token strategies, masks, FLOPs accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig

from exitgym.backbones.heads import ExitHeads, HeadsConfig
from exitgym.backbones.registry import load_backbone
from exitgym.envs.skip_core import SkipWorld, build_world
from exitgym.envs.skip_live import TOKEN_STRATEGIES, SampleBank, SkipExecutor
from tests.tiny_project import tiny_bert_config

TINY_SKIP = tiny_bert_config(num_hidden_layers=4)
LENGTHS = [21, 4, 9, 13, 2, 17, 6, 24, 11, 15]


def tiny_inputs(lengths: list[int] = LENGTHS, seed: int = 0) -> dict[str, np.ndarray]:
    """Right-padded random token ids of the given real lengths."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = rng.integers(5, 100, size=(len(lengths), width))
    mask = (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}


def tiny_world(pooling: str = "mean", num_labels: int = 3) -> SkipWorld:
    """A 4-layer random BERT, random heads and ten token sequences (nothing downloaded)."""
    bb = load_backbone(TINY_SKIP, seed=0, pooling=pooling)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        heads = ExitHeads(HeadsConfig(num_layers=4, hidden_size=32, num_labels=num_labels))
    labels = np.arange(len(LENGTHS)) % num_labels
    return build_world("tiny", bb, "train", heads, tiny_inputs(), labels, None, 128, None)


def dropped_positions(strategy_index: int, n: int) -> list[int]:
    keep = TOKEN_STRATEGIES[strategy_index].keep_mask(torch.tensor([n]), n + 3)[0]
    assert not keep[n:].any(), "padding must never be kept"
    return [j for j in range(n) if not bool(keep[j])]


def test_token_strategies_drop_exactly_the_documented_positions() -> None:
    names = [s.name for s in TOKEN_STRATEGIES]
    assert names == ["none", "last10", "last20", "last30", "uniform25", "uniform33", "uniform50"]
    # n = 21 real tokens: m = 20 non-first, k = (p*20 + 50) // 100 = 2, 4, 6.
    assert dropped_positions(0, 21) == []
    assert dropped_positions(1, 21) == [19, 20]
    assert dropped_positions(2, 21) == [17, 18, 19, 20]
    assert dropped_positions(3, 21) == [15, 16, 17, 18, 19, 20]
    assert dropped_positions(4, 21) == [4, 8, 12, 16, 20]
    assert dropped_positions(5, 21) == [3, 6, 9, 12, 15, 18]
    assert dropped_positions(6, 21) == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    # n = 4: m = 3, k = (30+50)//100 = 0, (60+50)//100 = 1, (90+50)//100 = 1.
    assert dropped_positions(1, 4) == []
    assert dropped_positions(2, 4) == [3]
    assert dropped_positions(3, 4) == [3]
    # The first token is never dropped, even for a one-token input.
    for index in range(len(TOKEN_STRATEGIES)):
        assert 0 not in dropped_positions(index, 1)
        assert 0 not in dropped_positions(index, 2)


def test_drop_tokens_keeps_exactly_the_kept_hidden_states_per_row() -> None:
    world = tiny_world()
    ex = world.executor
    sids = np.arange(len(LENGTHS))
    cohort = ex.start(sids, sids)
    before = cohort.state.hidden.clone()
    strategy = np.arange(len(LENGTHS)) % len(TOKEN_STRATEGIES)
    ex.drop_tokens(cohort, strategy)
    for row, n in enumerate(LENGTHS):
        dropped = set(dropped_positions(int(strategy[row]), n))
        kept = [j for j in range(n) if j not in dropped]
        assert cohort.lengths[row] == len(kept)
        assert int(cohort.state.mask[row].sum()) == len(kept)
        torch.testing.assert_close(cohort.state.hidden[row, : len(kept)], before[row, kept],
                                   rtol=0, atol=0)
    assert list(cohort.lengths0) == LENGTHS


def run_script(ex: SkipExecutor, sids: np.ndarray, strategy: np.ndarray,
               att: np.ndarray, ffn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token drop then layers 2..L with ``att`` / ``ffn`` skip masks ``[L-1, B]``; final head."""
    cohort = ex.start(sids, np.arange(len(sids)))
    ex.drop_tokens(cohort, strategy)
    for k in range(ex.num_layers - 1):
        ex.run_layer(cohort, att[k], ffn[k])
    logits = ex.answer(cohort, np.ones(len(sids), dtype=bool))
    return ex.pooled(cohort), logits, cohort.flops


def random_script(world: SkipWorld, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    b, depth = world.num_samples, world.num_layers - 1
    return (rng.integers(0, len(TOKEN_STRATEGIES), b), rng.random((depth, b)) < 0.4,
            rng.random((depth, b)) < 0.4)


def scripted(seed: int) -> tuple[SkipExecutor, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The tiny world's executor, every sample id, and a random script of token drops / skips."""
    world = tiny_world()
    return (world.executor, np.arange(world.num_samples), *random_script(world, seed))


def test_batched_cohort_equals_one_row_at_a_time() -> None:
    ex, sids, strategy, att, ffn = scripted(3)
    pooled, logits, flops = run_script(ex, sids, strategy, att, ffn)
    for row in sids:
        p1, l1, f1 = run_script(ex, sids[row:row + 1], strategy[row:row + 1],
                                att[:, row:row + 1], ffn[:, row:row + 1])
        np.testing.assert_allclose(pooled[row], p1[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(logits[row], l1[0], atol=1e-5, rtol=0)
        assert flops[row] == f1[0]


def expected_flops(ex: SkipExecutor, n0: int, n: int, att: np.ndarray, ffn: np.ndarray) -> float:
    """FLOPs model: embeddings + layer 1 at n0, later blocks that ran at n, the final head."""
    fm = ex.flops_model
    total = fm.embeddings(n0) + fm.layer(n0) + ex.head_flops
    total += float((~att).sum()) * fm.attention(n) + float((~ffn).sum()) * fm.ffn(n)
    return float(total)


def test_flops_equal_the_flops_model_of_the_blocks_run() -> None:
    ex, sids, strategy, att, ffn = scripted(5)
    _, _, flops = run_script(ex, sids, strategy, att, ffn)
    for row, n0 in enumerate(LENGTHS):
        n = n0 - len(dropped_positions(int(strategy[row]), n0))
        want = expected_flops(ex, n0, n, att[:, row], ffn[:, row])
        assert flops[row] == pytest.approx(want, rel=1e-12)
    # Running everything costs exactly the denominator: full model plus its final head.
    none = np.zeros_like(att)
    _, _, full = run_script(ex, sids, np.zeros_like(strategy), none, none)
    np.testing.assert_allclose(full / ex.denominator[sids], 1.0, rtol=1e-12)


def test_flops_equal_a_count_of_executed_modules() -> None:
    """Forward hooks record every attention / FFN call (rows, width); one row at a time."""
    world = tiny_world()
    ex = world.executor
    calls: list[tuple[str, int, int]] = []
    hooks = []
    for layer in ex.backbone.model.encoder.layer:
        hooks.append(layer.attention.register_forward_hook(
            lambda m, i, o: calls.append(("att", i[0].shape[0], i[0].shape[1]))))
        hooks.append(layer.intermediate.register_forward_hook(
            lambda m, i, o: calls.append(("ffn", i[0].shape[0], i[0].shape[1]))))
    try:
        strategy, att, ffn = random_script(world, 11)
        fm = ex.flops_model
        for row, n0 in enumerate(LENGTHS):
            calls.clear()
            _, _, flops = run_script(ex, np.array([row]), strategy[row:row + 1],
                                     att[:, row:row + 1], ffn[:, row:row + 1])
            counted = fm.embeddings(n0) + ex.head_flops + sum(
                (fm.attention(w) if kind == "att" else fm.ffn(w)) * rows
                for kind, rows, w in calls)
            assert flops[0] == pytest.approx(counted, rel=1e-12)
            n_att = 1 + int((~att[:, row]).sum())
            assert sum(1 for kind, _, _ in calls if kind == "att") == n_att
        # Batched: every attention call runs exactly the rows that did not skip it.
        calls.clear()
        sids = np.arange(world.num_samples)
        run_script(ex, sids, strategy, att, ffn)
        att_rows = sum(rows for kind, rows, _ in calls if kind == "att")
        ffn_rows = sum(rows for kind, rows, _ in calls if kind == "ffn")
        assert att_rows == len(sids) + int((~att).sum())
        assert ffn_rows == len(sids) + int((~ffn).sum())
    finally:
        for hook in hooks:
            hook.remove()


def test_bank_and_executor_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="labels must have shape"):
        SampleBank.from_ids(tiny_inputs(), [0, 1])
    with pytest.raises(ValueError, match="input_ids"):
        SampleBank.from_ids({"attention_mask": np.ones((2, 3))}, [0, 1])
    bb = load_backbone(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32), seed=0)
    heads = ExitHeads(HeadsConfig(num_layers=1, hidden_size=16, num_labels=2))
    bank = SampleBank.from_ids(tiny_inputs([3, 4]), [0, 1])
    with pytest.raises(ValueError, match="at least 2 layers"):
        SkipExecutor(bb, heads, bank)
    with pytest.raises(ValueError, match="both as names"):
        build_world("t", "minilm-l6", "train", heads, None, None, None, 128, None)
    with pytest.raises(ValueError, match="inputs="):
        build_world("t", bb, "train", heads, None, None, None, 128, None)
