"""Keep a ``bench.json`` in the repository (``results/<name>.json``) with the command and date
that made it, so the documentation's benchmark tables are generated from it and cannot go stale.

Usage, after ``exitgym bench --out DIR`` on a quiet machine (``uptime`` load under 1)::

    python -m exitgym.bench.results DIR/bench.json bench --command "exitgym bench --out DIR"

Then ``python docs/_ext/exitgym_docs.py --write`` regenerates the tables.
"""

from __future__ import annotations

import json
from typing import Any

from exitgym.reports.results import keep_main


def keep(bench: dict[str, Any], command: str) -> dict[str, Any]:
    """``bench`` with ``command`` and its date (the ``machine`` section's, when it was taken)."""
    date = str(bench.get("machine", {}).get("date", ""))[:10]
    if not date:
        raise ValueError("bench.json has no machine.date: keep a complete exitgym bench result")
    return {**bench, "command": command, "date": date}


def main(argv: list[str] | None = None) -> int:
    return keep_main(
        argv, prog="python -m exitgym.bench.results",
        description="Keep a bench.json under results/.",
        source_help="the bench.json an exitgym bench run wrote",
        make=lambda path, command: keep(json.loads(path.read_text()), command))


if __name__ == "__main__":
    raise SystemExit(main())
