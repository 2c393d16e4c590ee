"""``exitgym envs``: the registered environment ids with one line each."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("envs", help="list the registered environments")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from exitgym.registration import ENVS

    width = max(len(e.id) for e in ENVS)
    for entry in ENVS:
        print(f"{entry.id:<{width}}  {entry.description}")
    return 0
