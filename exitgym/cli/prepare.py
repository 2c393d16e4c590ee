"""``exitgym prepare``: train exit heads and build per-layer caches (:mod:`exitgym.data.prepare`).

One option per :class:`~exitgym.data.prepare.PrepareConfig` field, with that field's docstring as
its help, so the CLI and the API never drift apart.
"""

from __future__ import annotations

import argparse
import ast
import inspect
from dataclasses import fields
from typing import Any

from exitgym.cli.common import user_errors


def register(sub: argparse._SubParsersAction) -> None:
    add_prepare_parser(sub)


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string right after each field), for CLI help."""
    tree = ast.parse(inspect.getsource(cls))
    body, docs = tree.body[0].body, {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(
                getattr(nxt, "value", None), ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def add_prepare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``exitgym prepare`` (one option per :class:`PrepareConfig` field) to a CLI."""
    from exitgym.data.prepare import HEADS_MODES, PrepareConfig
    from exitgym.data.prepare import __doc__ as prepare_doc
    from exitgym.data.tasks import SPLITS

    parser = subparsers.add_parser("prepare", help="train exit heads and build per-layer caches",
                                   description=(prepare_doc or "").splitlines()[0])
    docs = _field_docs(PrepareConfig)
    for f in fields(PrepareConfig):
        kind = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
        extra: dict[str, Any] = {"choices": HEADS_MODES} if f.name == "heads" else {}
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind,
                            default=f.default, help=f"{docs.get(f.name, '')} (default: "
                            f"{f.default})", **extra)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                        help="splits to build caches for")
    parser.add_argument("--force", action="store_true", help="retrain and rebuild everything")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """CLI entry: run :func:`~exitgym.data.prepare.prepare` from parsed arguments."""
    from exitgym.data.prepare import PrepareConfig, prepare

    with user_errors():
        values = {f.name: getattr(args, f.name) for f in fields(PrepareConfig)}
        prepare(PrepareConfig(**values), splits=tuple(args.splits), force=args.force)
        return 0
