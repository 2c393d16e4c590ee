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
    table = "\n".join(to_markdown(section))
    assert "| generate, exits off | 1 |" in table
