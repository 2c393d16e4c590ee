"""The bench's generation section on a tiny decoder (numbers not meaningful; the keys are)."""

from __future__ import annotations

from exitgym.bench.config import BenchConfig
from exitgym.bench.generation import generation_section, to_markdown


def test_generation_rows_compare_with_hf_generate_and_report_exits() -> None:
    section = generation_section(BenchConfig(quick=True))
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
