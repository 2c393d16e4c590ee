"""``exitgym envs``: the registered environment ids with one line each."""

from __future__ import annotations

import argparse

from exitgym.cli.common import add_command


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_command(sub, "envs", run, help="List the registered environments.")


def run() -> int:
    from exitgym.registration import ENVS

    width = max(len(e.id) for e in ENVS)
    for entry in ENVS:
        print(f"{entry.id:<{width}}  {entry.description}")
    return 0
