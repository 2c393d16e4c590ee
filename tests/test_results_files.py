"""The README's findings tables are generated from the result files kept in ``results/``
(``exitgym.reports.results``): a table edited by hand, or a result file re-measured without the
README following, fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from exitgym.reports.results import RESULTS_DIR, findings_table, headline_table, load, trim

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TASKS = ("rt-polarity", "trec6", "sms-spam")
HEADLINE = ("entropy", "berxit", "reinforce-hardness-budget", "reinforce-hardness-conditioned",
            "lexicographic")
"""The columns of the README's headline budget table (rt-polarity)."""


@pytest.mark.parametrize("task", TASKS)
def test_result_files_say_what_made_them_and_hold_the_headline_finding(task: str) -> None:
    result = load(task)
    assert result["command"].startswith("exitgym ") and result["date"].startswith("2026-")
    assert result["meta"]["task"] == task and len(result["seeds"]) >= 3
    rows = [r for r in result["findings"] if r["finding"] == "0"
            and r["reference"] == "best-non-rl"]
    assert {r["budget"] for r in rows} == {0.3, 0.4, 0.5, 0.6, 0.7, 0.8}
    static = [r for r in result["budget_table"] if r["method"] == "static"]
    assert all(abs(r["cost"] - r["budget"]) <= 0.01 for r in static)  # exactly at the budget
    assert {r["category"] for r in result["budget_table"]} <= {"rule", "supervised", "rl"}


@pytest.mark.parametrize("task", TASKS)
def test_readme_findings_tables_equal_their_result_files(task: str) -> None:
    readme = README.read_text(encoding="utf-8")
    missing = [line for line in findings_table(load(task)) if line not in readme]
    assert not missing, f"README lines not generated from results/{task}.json: {missing}"


def test_readme_headline_table_equals_its_result_file() -> None:
    readme = README.read_text(encoding="utf-8")
    missing = [line for line in headline_table(load("rt-polarity"), HEADLINE)
               if line not in readme]
    assert not missing, f"README headline lines not generated from results: {missing}"


def test_trim_keeps_the_tables_and_records_the_command() -> None:
    summary = {"budget_table": [1], "findings": [2], "rows": [3] * 1000, "meta": {"task": "t"}}
    kept = trim(summary, "exitgym demo", date="2026-12-04")
    assert kept == {"budget_table": [1], "findings": [2], "meta": {"task": "t"},
                    "command": "exitgym demo", "date": "2026-12-04"}
    assert RESULTS_DIR == ROOT / "results"


def test_readme_bench_inference_table_equals_its_result_file() -> None:
    """The deployed operating points (trained policy and best rule) and their speed-ups."""
    import json

    from exitgym.bench.report import inference_markdown

    result = json.loads((RESULTS_DIR / "bench-inference.json").read_text())
    assert result["command"].startswith("exitgym bench") and result["date"].startswith("2026-")
    categories = [e["category"] for e in result["inference"]["policies"]]
    assert categories == ["rl", "rule"]
    readme = README.read_text(encoding="utf-8")
    rows = [line for line in inference_markdown(result) if line.startswith("| ")]
    missing = [line for line in rows if line not in readme]
    assert rows and not missing, f"README bench rows not generated from the file: {missing}"
