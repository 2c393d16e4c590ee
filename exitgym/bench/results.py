"""Keep a ``bench.json`` in the repository (``results/<name>.json``) with the command and date
that made it, so the documentation's benchmark tables are generated from it and cannot go stale.

Usage, after ``exitgym bench --out DIR`` on a quiet machine (``uptime`` load under 1)::

    python -m exitgym.bench.results DIR/bench.json bench --command "exitgym bench --out DIR"

Then ``python docs/_ext/exitgym_docs.py --write`` regenerates the tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from exitgym.reports.results import RESULTS_DIR
from exitgym.utils.atomic import write_json


def keep(bench: dict[str, Any], command: str) -> dict[str, Any]:
    """``bench`` with ``command`` and its date (the ``machine`` section's, when it was taken)."""
    date = str(bench.get("machine", {}).get("date", ""))[:10]
    if not date:
        raise ValueError("bench.json has no machine.date: keep a complete exitgym bench result")
    return {**bench, "command": command, "date": date}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exitgym.bench.results",
                                     description="Keep a bench.json under results/.")
    parser.add_argument("bench", help="the bench.json an exitgym bench run wrote")
    parser.add_argument("name", help="results/<name>.json")
    parser.add_argument("--command", required=True, help="the command that made it")
    args = parser.parse_args(argv)
    kept = keep(json.loads(Path(args.bench).read_text()), args.command)
    write_json(RESULTS_DIR / f"{args.name}.json", kept)
    print(f"wrote {RESULTS_DIR / f'{args.name}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
