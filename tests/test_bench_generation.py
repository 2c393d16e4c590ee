"""The bench's generation section on a tiny decoder (numbers not meaningful; the keys are)."""

from __future__ import annotations

from typing import Any

import pytest

from exitgym.bench.config import BenchConfig
from exitgym.bench.generation import generation_section, to_markdown


@pytest.fixture(scope="module")
def section() -> dict[str, Any]:
    """The quick section, measured once for the tests that read it."""
    return generation_section(BenchConfig(quick=True))


def test_generation_rows_compare_with_hf_generate_and_report_exits(
    section: dict[str, Any],
) -> None:
    rows = {(r["name"], r["batch_size"]): r for r in section["rows"]}
    off = rows[("generate, exits off", 1)]
    assert off["same_tokens_as_hf"] is True  # exits off is greedy generate, token for token
    assert rows[("generate, exits off", 3)]["same_tokens_as_hf"] is True
    for r in section["rows"]:
        assert r["tokens_per_s"] > 0
        assert r["ratio_to_hf_generate"] == r["tokens_per_s"] / r["hf_generate_tokens_per_s"]
    margin = [r for r in section["rows"] if r["name"].startswith("generate, margin")]
    assert margin and all(0 <= r["agreement"] <= 1 and r["flops_speedup"] > 0 for r in margin)
    learned = [r for r in section["rows"] if r["name"] == "generate, learned in-memory"]
    assert [r["batch_size"] for r in learned] == [1, 3]
    assert all(0 <= r["agreement"] <= 1 and r["wall_speedup"] > 0 for r in learned)
    assert 0 < section["learned_train_s"] < section["learned_s"]
    table = "\n".join(to_markdown(section))
    assert "| generate, exits off | 1 |" in table


def test_speculative_rows_are_lossless_and_charge_their_drafts(section: dict[str, Any]) -> None:
    """The lossless rows at batch 1: HF's tokens, acceptance in [0, 1] and a FLOPs cost of at
    least 1 (every emitted token runs every layer once; rejected drafts and heads on top)."""
    import exitgym
    from exitgym.bench.generation import QUICK_PROMPTS, SPECULATIVE_DRAFTS, _setup

    spec = [r for r in section["rows"] if r["name"].startswith("generate, speculative")]
    assert [r["name"] for r in spec] == ["generate, speculative (draft layer 2, 4 tokens)"]
    assert len(spec) == len(SPECULATIVE_DRAFTS)
    for r, (_, n) in zip(spec, SPECULATIVE_DRAFTS, strict=True):
        assert r["batch_size"] == 1 and r["same_tokens_as_hf"] is True
        assert r["agreement"] == 1.0 and 0 <= r["acceptance"] <= 1
        assert r["flops_speedup"] == 1.0 / r["mean_cost"] and r["mean_cost"] > 1.0
        assert r["wall_speedup"] > 0
        bb = _setup(BenchConfig(quick=True))[0]  # the same seeded tiny Llama
        direct = exitgym.generate(None, QUICK_PROMPTS, max_new_tokens=4, batch_size=1,
                                  backbone=bb, mode="speculative", draft_layer=2, draft_tokens=n)
        assert r["acceptance"] == float(direct.acceptance.mean())
        assert r["mean_cost"] == float(direct.cost.mean())
    table = "\n".join(to_markdown(section))
    assert f"| {spec[0]['acceptance']:.3f} |" in table


def test_the_learned_row_deploys_a_token_exit_run_as_generate_does(tmp_path) -> None:
    import numpy as np

    import exitgym
    from exitgym.bench.generation import QUICK_PROMPTS
    from tests.test_token_runs import train_run

    run = train_run(tmp_path).run.path
    section = generation_section(BenchConfig(quick=True, generation_run=str(run),
                                             out=str(tmp_path / "bench")))
    rows = {(r["name"], r["batch_size"]): r for r in section["rows"]}
    assert section["learned_train_s"] is None  # loaded, not trained
    expected = exitgym.generate(run, QUICK_PROMPTS, max_new_tokens=4, reference=True)
    for batch in (1, 3):
        learned = rows[(f"generate, learned {run.name}", batch)]
        assert learned["agreement"] == float(expected.agreement.mean())
        assert learned["mean_cost"] == float(expected.cost.mean())
        assert learned["flops_speedup"] == 1.0 / learned["mean_cost"]
        layers = np.concatenate([np.asarray(x) for x in expected.exit_layers])
        assert learned["mean_exit_layer"] == float(layers.mean())
        assert learned["mean_exit_layer"] < 3  # the run's policy exits early: not exits off


def test_trained_heads_rows_and_goals_are_read_off_the_section(section: dict[str, Any]) -> None:
    """The trained heads' calibration and agreement are recorded; a calibrated predictor row
    exists exactly when Learn-then-Test passed a threshold, at that threshold; every goal's
    measured value is the one its row holds."""
    from exitgym.bench.generation_goals import CALIBRATION_DELTA, goals
    from exitgym.bench.generation_goals import to_markdown as goals_markdown

    trained = section["trained_heads"]
    cal = trained["calibration"]
    assert cal["delta"] == CALIBRATION_DELTA and cal["units"] == 8 * 4  # quick: 8 prompts x 4
    assert [r["layer"] for r in trained["agreement"]] == [1, 2, 3]
    assert trained["agreement"][-1]["trained"] == 1.0  # the last layer is the reference
    predictor = [r for r in section["rows"] if r["name"].startswith("generate, predictor")]
    if cal["theta"] is None:
        assert predictor == []
    else:
        assert [r["batch_size"] for r in predictor] == [1, 3]
        assert f"θ={cal['theta']}" in predictor[0]["name"]
    got = {g["goal"]: g for g in section["goals"]}
    assert section["goals"] == goals(section)
    lossless = got["lossless: same tokens as HF, × HF generate at batch 1"]
    spec = [r for r in section["rows"] if r["name"].startswith("generate, speculative")]
    assert lossless["measured"] == max(r["ratio_to_hf_generate"] for r in spec)
    heads = got["trained heads agree with the last layer at layer 3"]
    assert heads["measured"] == 1.0 and heads["met"] is True
    for g in section["goals"]:
        assert g["met"] == (g["measured"] is not None and g["measured"] >= g["target"])
    batched = [r for r in section["rows"] if r["batch_size"] == 3 and "flops_speedup" in r
               and r["flops_speedup"] > 1.05 and "speculative" not in r["name"]]
    realised = [g for g in section["goals"] if g["goal"].startswith("batched exits")][0]
    assert realised["measured"] == (min(r["wall_speedup"] / r["flops_speedup"] for r in batched)
                                    if batched else None)
    assert "| goal | target | measured | met | row |" in "\n".join(goals_markdown(section))
    oracle = trained["oracle"]  # the limit of any exit policy on the trained heads
    assert [o["cap"] for o in oracle] == [1, 2, 3] and oracle[-1]["agreement"] == 1.0
    for o, heads_row in zip(oracle, trained["agreement"], strict=True):
        assert o["agreement"] >= heads_row["trained"] - 1e-12  # a head right at l: first <= l
        assert 1.0 <= o["mean_exit_layer"] <= o["cap"]
    assert all(a["agreement"] <= b["agreement"] for a, b in zip(oracle, oracle[1:], strict=False))


def test_a_passing_calibration_times_the_predictor_at_its_threshold(monkeypatch) -> None:
    """With a tolerance the tiny model meets, Learn-then-Test passes a threshold and the row is
    timed with the predictor rule at exactly that threshold on the trained heads."""
    from exitgym.bench import generation_goals
    from exitgym.bench.generation import _setup

    monkeypatch.setattr(generation_goals, "CALIBRATION_DELTA", 0.6)
    cfg = BenchConfig(quick=True)
    bb = _setup(cfg)[0]
    timed: list[tuple[str, Any, Any]] = []
    trained = generation_goals.trained_rows(
        cfg, bb, 4, lambda name, policy, heads: timed.append((name, policy, heads)))
    theta = trained["calibration"]["theta"]
    cal = trained["calibration"]
    assert theta is not None and cal["risks"][cal["tested"].index(theta)] <= 0.6
    [(name, policy, heads)] = timed
    section = {"rows": [{"name": name, "batch_size": 1, "agreement": 0.95, "mean_cost": 1.0,
                         "flops_speedup": 1.0, "ratio_to_hf_generate": 1.0, "wall_speedup": 1.0}],
               "trained_heads": trained}
    held = [g for g in generation_goals.goals(section) if g["goal"].startswith("calibrated")]
    assert held == [{"goal": "calibrated predictor on held-out prompts: agreement >= 1 - δ",
                     "target": 1.0 - 0.6, "measured": 0.95, "row": name, "met": True}]
    assert name == f"generate, predictor θ={theta} (trained heads, LTT)"
    assert policy.theta == theta and policy.predictor is not None
    assert heads.num_layers == bb.num_layers  # the trained maps, not the plain LM head
