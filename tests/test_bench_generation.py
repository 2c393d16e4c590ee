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
