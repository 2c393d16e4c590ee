"""The documentation site: it builds with warnings as errors, its environment pages come from the
environments' docstrings, its results tables come from the result files in ``results/``, and the
README is a short landing page that points into it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _ext():  # docs/_ext is not a package of exitgym: load the extension by path
    spec = importlib.util.spec_from_file_location("exitgym_docs", DOCS / "_ext" / "exitgym_docs.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


MEASURED = ("accuracy", "speed-up", "tokens/s", "Δ", "ms/text", "steps/s", "agreement", "GFLOPs",
            "texts/s", "prepare")
"""Header words of a table of measurements: such a table must be generated from a result file."""


def test_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for page in ("index", "getting-started", "findings", "api", "benchmarks"):
        assert (out / f"{page}.html").is_file(), page
    # one page per environment, generated from its docstring (Gymnasium's sections, its table)
    from exitgym.registration import ENVS

    for entry in ENVS:
        html = (out / "environments" / f"{entry.id.split('/')[-1].lower()}.html").read_text()
        for section in ("Action Space", "Observation Space", "Rewards", "Version History"):
            assert section in html, (entry.id, section)
    # the API page documents the public functions from their docstrings
    api = (out / "api.html").read_text()
    for name in ("exitgym.agents.rollout.evaluate", "exitgym.inference.infer",
                 "exitgym.experiments.training.train", "exitgym.experiments.generation.generate"):
        assert f'id="{name}"' in api, name


def test_env_page_is_the_docstring() -> None:
    from exitgym.envs.early_exit import EarlyExitEnv

    page = _ext().env_page("exitgym/EarlyExit-v0")
    assert page.startswith("# `exitgym/EarlyExit-v0`")
    assert "| Index | Name" in page and "```pycon" in page
    # a line of the docstring, word for word
    line = next(x.strip() for x in (EarlyExitEnv.__doc__ or "").splitlines() if "Discrete(2)" in x)
    assert line in page


def test_every_results_table_equals_its_result_file() -> None:
    ext = _ext()
    blocks = 0
    for path in ext.markdown_files():
        text = path.read_text(encoding="utf-8")
        blocks += len(ext.BLOCK.findall(text))
        assert ext.stale_blocks(text) == [], (
            f"{path}: regenerate with `python docs/_ext/exitgym_docs.py --write`")
    assert blocks >= 20


def test_a_table_edited_by_hand_is_caught() -> None:
    ext = _ext()
    text = (DOCS / "findings.md").read_text(encoding="utf-8")
    match = next(m for m in ext.BLOCK.finditer(text) if m["spec"].startswith("findings"))
    edited = text.replace(match["body"], match["body"].replace("0.8", "0.9", 1))
    assert edited != text and ext.stale_blocks(edited) == [match["spec"]]
    assert ext.stale_blocks(ext.regenerate(edited)) == []


def test_every_measurement_table_is_generated() -> None:
    """A table whose header names a measurement sits inside a generated block."""
    ext = _ext()
    typed = []
    for path in ext.markdown_files():
        lines = ext.BLOCK.sub("", path.read_text(encoding="utf-8")).splitlines()
        for header, rule in zip(lines, lines[1:], strict=False):
            if header.startswith("|") and re.match(r"^\|[-:| ]+\|$", rule):
                if any(word in header for word in MEASURED):
                    typed.append(f"{path.name}: {header[:80]}")
    assert typed == []


def test_the_findings_page_holds_every_tasks_headline_finding() -> None:
    text = (DOCS / "findings.md").read_text(encoding="utf-8")
    for task in ("rt-polarity", "trec6", "sms-spam"):
        assert f"<!-- table: findings {task} 0 best-non-rl -->" in text
        assert f"<!-- table: meta {task} -->" in text


def test_readme_is_a_short_landing_page() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 200
    for command in ("make demo", "make test"):
        assert f"{command}   #" in text
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert len(links) >= 10
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert missing == []
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_every_page_is_in_the_site(page: str) -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    assert page[:-3] in index.split("```{toctree}", 1)[1], page
