"""Sphinx extension of exitgym's docs: pages generated from code and from result files.

Two things in the docs must not be typed by hand, because typed copies go stale:

- **One page per environment, from its docstring** (as Gymnasium's pages are): at build time the
  class docstring of every registered environment becomes ``environments/<name>.md`` (written
  into the build's source tree, git-ignored), so the page is the docstring a user reads in
  ``help()``.
- **Every results table, from a result file kept in ``results/``**: a table sits between
  ``<!-- table: KIND ARGS -->`` and ``<!-- /table -->`` markers and equals what :func:`render`
  makes from the file. The build fails (a warning, an error under ``-W``) on a block that differs
  from its file; ``python docs/_ext/exitgym_docs.py --write`` regenerates every block after a
  result file is re-measured.

Block kinds (``results/<name>.json``):

- ``source NAME``: the command and date that made the file;
- ``meta NAME``: what a comparison measured (task, test size, seeds, smallest detectable
  difference) and the command and date that made it;
- ``findings NAME [FINDING [REFERENCE [METHOD]]]``: a comparison's finding rows (default finding
  0, best RL against best non-RL);
- ``headline NAME METHOD,METHOD,...``: the budget table with static truncation and the methods;
- ``table NAME``: a small measured table kept as ``columns`` / ``align`` / ``rows`` with the
  command, date and a note on how it was measured;
- ``bench NAME SECTION``: one section of a ``bench.json`` as ``bench.md`` shows it (its heading
  dropped);
- ``goals NAME``: the generation goals of issue 25, read off a ``bench.json``'s generation rows.

One kind is made from code instead of a result file, for the same reason (no typed copy):

- ``matrix ENGINE``: which environment runs through which command with that engine, and
  ``matrix reasons``: the numbered refusal reasons its cells cite, both from
  :mod:`exitgym.experiments.matrix` (what ``tests/test_matrix.py`` runs cell by cell).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
RESULTS = ROOT / "results"
BLOCK = re.compile(r"(<!-- table: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
ENV_PAGES = DOCS / "environments"


def _load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"results/{name}.json does not exist (known: "
                         f"{', '.join(sorted(p.stem for p in RESULTS.glob('*.json')))})")
    return json.loads(path.read_text(encoding="utf-8"))


def _source(name: str) -> list[str]:
    result = _load(name)
    return [f"*From `results/{name}.json`, made by `{result['command']}` on "
            f"{result['date']}.*"]


def _meta(name: str) -> list[str]:
    from exitgym.reports.results import meta_line

    return [meta_line(_load(name))]


def _findings(name: str, finding: str = "0", reference: str = "best-non-rl",
              method: str | None = None) -> list[str]:
    from exitgym.reports.results import findings_table

    return findings_table(_load(name), finding, reference, method)


def _headline(name: str, methods: str) -> list[str]:
    from exitgym.reports.results import headline_table

    return headline_table(_load(name), methods.split(","))


def _bench(name: str, section: str) -> list[str]:
    from exitgym.bench.report import PARTS

    parts = dict(PARTS)
    result = _load(name)
    if section not in parts or section not in result:
        raise ValueError(f"results/{name}.json has no bench section {section!r} (it has: "
                         f"{', '.join(k for k in parts if k in result)})")
    lines = parts[section](result)
    while lines and (not lines[0].strip() or lines[0].startswith("#")):
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def _goals(name: str) -> list[str]:
    from exitgym.bench.generation_goals import goals_table

    result = _load(name)
    if "trained_heads" not in result.get("generation", {}):
        raise ValueError(f"results/{name}.json has no generation goals (an exitgym bench from "
                         "before they were measured)")
    return goals_table(result["generation"])


def _table(name: str) -> list[str]:
    result = _load(name)
    align = {"l": "---", "r": "---:"}
    lines = ["| " + " | ".join(result["columns"]) + " |",
             "|" + "|".join(align[a] for a in result["align"]) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in result["rows"]]
    return [*lines, "", f"*From `results/{name}.json` ({result['date']}): {result['note']}*"]


def _matrix(engine: str) -> list[str]:
    from exitgym.experiments.matrix import markdown_table, reasons_list

    return reasons_list() if engine == "reasons" else markdown_table(engine)


KINDS: dict[str, Callable[..., list[str]]] = {
    "source": _source, "meta": _meta, "findings": _findings, "headline": _headline,
    "bench": _bench, "goals": _goals, "table": _table, "matrix": _matrix,
}
"""Block kind -> renderer of its lines from the arguments after the kind."""


def render(spec: str) -> str:
    """The body of the block ``<!-- table: spec -->`` (lines, newline-terminated)."""
    kind, *args = spec.split()
    if kind not in KINDS:
        raise ValueError(f"unknown table kind {kind!r}; known: {', '.join(KINDS)}")
    return "".join(f"{line}\n" for line in KINDS[kind](*args))


def stale_blocks(text: str) -> list[str]:
    """The specs of the blocks in ``text`` whose body is not what their result file makes."""
    return [m["spec"] for m in BLOCK.finditer(text) if m["body"] != render(m["spec"])]


def regenerate(text: str) -> str:
    """``text`` with every block's body replaced by what its result file makes."""
    return BLOCK.sub(lambda m: m[1] + render(m["spec"]) + m[4], text)


def markdown_files() -> list[Path]:
    """The hand-written pages (generated environment pages excluded) and the README."""
    pages = [p for p in DOCS.rglob("*.md") if ENV_PAGES not in p.parents
             and "_build" not in p.parts]
    return sorted([*pages, ROOT / "README.md"])


# --- environment pages -------------------------------------------------------------------------

_ROLE = re.compile(r":(?:class|func|mod|data|attr|meth|obj):`~?([^`]+)`")


def env_page(env_id: str) -> str:
    """The page of one registered environment: its class docstring as MyST markdown."""
    import gymnasium as gym

    import exitgym  # noqa: F401  (registers the ids)

    entry = gym.spec(env_id).entry_point
    module_name, cls_name = str(entry).split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    doc = _ROLE.sub(r"``\1``", inspect.getdoc(cls) or "")
    summary, _, body = doc.partition("\n\n")
    out, in_example = [f"# `{env_id}`", "", f"**{summary.strip()}**", "",
                       f"Class: `{module_name}.{cls_name}`.", ""], False
    for line in body.splitlines():
        is_example = line.startswith((">>>", "...")) or (in_example and line.strip())
        if is_example and not in_example:
            out.append("```pycon")
        elif in_example and not is_example:
            out.append("```")
        in_example = bool(is_example)
        out.append(line)
    if in_example:
        out.append("```")
    return "\n".join(out) + "\n"


def write_env_pages() -> list[str]:
    """Write ``environments/<name>.md`` for every exitgym id; returns the page names."""
    from exitgym.registration import ENVS

    ENV_PAGES.mkdir(exist_ok=True)
    names = []
    for entry in ENVS:
        env_id = entry.id
        name = env_id.split("/")[-1].lower()
        path = ENV_PAGES / f"{name}.md"
        text = env_page(env_id)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        names.append(name)
    return names


# --- Sphinx ------------------------------------------------------------------------------------

def _check_tables(app: Any) -> None:
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    for path in markdown_files():
        try:
            stale = stale_blocks(path.read_text(encoding="utf-8"))
        except (ValueError, KeyError) as err:
            logger.warning(f"{path.relative_to(ROOT)}: a results table cannot be made: {err}")
            continue
        for spec in stale:
            logger.warning(f"{path.relative_to(ROOT)}: the table '{spec}' differs from its "
                           "result file; run `python docs/_ext/exitgym_docs.py --write`")


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", lambda app: write_env_pages())
    app.connect("builder-inited", _check_tables)
    return {"version": "1", "parallel_read_safe": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check or regenerate the docs' result tables.")
    parser.add_argument("--write", action="store_true", help="rewrite stale tables in place")
    args = parser.parse_args(argv)
    stale = 0
    for path in markdown_files():
        text = path.read_text(encoding="utf-8")
        for m in BLOCK.finditer(text):
            try:
                body = render(m["spec"])
            except (ValueError, KeyError) as err:
                stale += 1
                print(f"{path.relative_to(ROOT)}: {m['spec']}: cannot be made: {err}")
                continue
            if body != m["body"]:
                stale += 1
                print(f"{path.relative_to(ROOT)}: {m['spec']}")
                if args.write:
                    text = text.replace(m[0], m[1] + body + m[4])
        if args.write:
            path.write_text(text, encoding="utf-8")
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
