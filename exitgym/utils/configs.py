"""Frozen config dataclasses as command lines and as JSON: the one way every command is built.

The model is CleanRL's ``Args`` dataclass parsed by tyro: a config dataclass is the single
source of a command's options, so the flags, their defaults, their help and the Python API can
never drift apart. :func:`add_arguments` turns a dataclass into argparse options:

- the flag comes from the field name (``max_samples`` -> ``--max-samples``), its help from the
  docstring under the field, followed by the default;
- the type comes from the annotation: ``int``, ``float``, ``str``, ``X | None`` (None only as a
  default), ``tuple[X, ...]`` (comma-separated values, or several words) and ``bool`` (``--name``
  when the default is False, ``--no-name`` when it is True);
- a nested dataclass field contributes its own fields' flags (flattened; names stay unique);
- a field without a default is a positional argument;
- :func:`option` adds what a value must satisfy: allowed values (a tuple is argparse's own
  ``choices``, listed in the usage line; a callable is a registry, looked up when the flag is
  used) and a lower bound.

A bad value fails while the command line is parsed, before any work starts, with a message
naming the flag and what is allowed. :func:`from_dict` reads a config back from JSON, including
the flat layout written before configs were nested (stored runs stay loadable).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")
Choices = Sequence[Any] | Mapping[str, str] | Callable[[], Sequence[Any] | Mapping[str, str]]
"""Allowed values: fixed (a tuple) or a registry read when the parser is built (a callable); a
mapping gives each allowed name its one-line description (listed in ``--help``)."""

_CHECK = "exitgym.utils.configs.check"
"""Key of a field's metadata holding its :class:`Check`."""
_NOUNS = {int: "an integer", float: "a number", str: "a string"}
"""What a value of each type must look like, for parse errors."""
_INT_BOUNDS = {0: "a non-negative integer", 1: "a positive integer"}
"""Lower bounds of integers that have a name, for bound errors."""


@dataclass(frozen=True)
class Check:
    """What the value of one field must satisfy on the command line."""

    choices: Choices | None = None
    """Allowed values, in the order error messages list them (None: any)."""
    minimum: float | None = None
    """Smallest allowed number (None: no bound)."""


def option(default: Any = MISSING, *, default_factory: Any = MISSING,
           choices: Choices | None = None, minimum: float | None = None) -> Any:
    """A dataclass field whose flag checks allowed values and a lower bound.

    Why: the rules a value must follow live next to the field they constrain, so the CLI and
    the dataclass state them once.
    """
    return field(default=default, default_factory=default_factory,
                 metadata={_CHECK: Check(choices, minimum)})


@dataclass(frozen=True)
class Flag:
    """One command-line option generated from a (possibly nested) dataclass field."""

    name: str
    """Field name: the namespace attribute, and with dashes the flag."""
    kind: type
    """``int``, ``float``, ``str`` or ``bool`` (for a tuple field: the type of its items)."""
    many: bool
    """A ``tuple[X, ...]`` field: comma-separated values."""
    default: Any
    """Default value (MISSING: a required positional argument)."""
    help: str
    """The field's docstring."""
    check: Check
    """Allowed values and lower bound."""

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def native_choices(self) -> bool:
        """argparse checks the choices itself: a fixed tuple of strings for one value."""
        choices = self.check.choices
        return (choices is not None and not callable(choices) and not self.many
                and self.kind is str and not isinstance(choices, Mapping))

    @property
    def flag(self) -> str:
        """``--max-samples`` (or the bare name of a positional argument)."""
        return self.name if self.required else "--" + self.name.replace("_", "-")

    def parse(self, text: str) -> Any:
        """One value from its text, checked; errors name the flag and what is allowed."""
        kind = self.kind.__name__
        try:
            value = self.kind(text)
        except ValueError:
            what = (f"{text!r} is not a valid {kind}" if self.many
                    else f"invalid {kind} value {text!r}")
            raise _error(f"{self.flag}: {what} (must be {_NOUNS[self.kind]})") from None
        choices = self.check.choices
        # Fixed string choices of a single value are argparse's own check (listed in the usage
        # line); registries, the items of a list and typed values are checked here.
        if choices is not None and not self.native_choices:
            allowed = list(choices() if callable(choices) else choices)
            if value not in allowed:
                raise _error(f"{self.flag}: unknown value {text!r}; allowed: "
                             f"{', '.join(map(str, allowed))}")
        low = self.check.minimum
        if low is not None and not value >= low:  # written so that NaN fails too
            named = _INT_BOUNDS.get(low) if self.kind is int else None
            raise _error(f"{self.flag} must be >= {low}, got {text}"
                         + (f" (must be {named})" if named else ""))
        return value


def _error(message: str) -> argparse.ArgumentError:
    """An argparse error printed as ``message`` alone (it already names the flag)."""
    return argparse.ArgumentError(None, message)


class _Value(argparse.Action):
    """Parses and checks a flag's text(s) into the value(s) of its :class:`Flag`."""

    def __init__(self, option_strings: list[str], dest: str, spec: Flag, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.spec = spec

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if not self.spec.many:
            setattr(namespace, self.dest, self.spec.parse(values))
            return
        items = [v.strip() for text in values for v in text.split(",") if v.strip()]
        if not items:
            raise _error(f"{self.spec.flag} needs at least one value (comma-separated)")
        setattr(namespace, self.dest, [self.spec.parse(item) for item in items])


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per field of dataclass ``cls`` (nested dataclasses flattened)."""
    seen: set[str] = set()
    for spec in flags(cls):
        if spec.name in seen:
            raise ValueError(f"{cls.__name__}: two fields give the flag {spec.flag}")
        seen.add(spec.name)
        text = _plain(spec.help).replace("%", "%%")
        if spec.kind is bool:
            negate = bool(spec.default)
            if negate:  # the help describes the field; the flag turns it off
                text = f"Turn this off (on by default): {text}"
            parser.add_argument(f"--no-{spec.flag[2:]}" if negate else spec.flag,
                                dest=spec.name, default=spec.default,
                                action="store_false" if negate else "store_true", help=text)
            continue
        kwargs: dict[str, Any] = {"action": _Value, "spec": spec, "help": text}
        if spec.many:
            kwargs["nargs"] = "+"
        elif spec.native_choices:
            kwargs["choices"] = spec.check.choices
        if spec.required:
            parser.add_argument(spec.name, **kwargs)
            continue
        notes = ["comma-separated"] if spec.many else []
        if spec.check.choices is not None and not spec.native_choices:
            notes.append("allowed: " + _allowed(spec.check.choices).replace("%", "%%"))
        if spec.default is not None:  # a None default is explained by the docstring
            notes.append(f"default: {_show(spec.default)}")
        if notes:
            kwargs["help"] = f"{text} ({'; '.join(notes)})"
        default = list(spec.default) if spec.many else spec.default
        parser.add_argument(spec.flag, dest=spec.name, default=default, **kwargs)


def _allowed(choices: Choices) -> str:
    """The allowed values for ``--help``: ``a, b`` or ``a (what a does); b (...)``."""
    values = choices() if callable(choices) else choices
    if isinstance(values, Mapping):
        return "; ".join(f"{name} ({what})" for name, what in values.items())
    return ", ".join(map(str, values))


def from_args(cls: type[T], namespace: argparse.Namespace) -> T:
    """The ``cls`` instance described by arguments parsed with :func:`add_arguments`."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        kind = _hints(cls)[f.name]
        if is_dataclass(kind):
            values[f.name] = from_args(kind, namespace)  # type: ignore[arg-type]
        else:
            value = getattr(namespace, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def flags(cls: type, defaults: Any = None) -> list[Flag]:
    """The options of dataclass ``cls``; ``defaults`` (an instance) overrides field defaults."""
    out: list[Flag] = []
    docs = field_docs(cls)
    for f in fields(cls):
        hint = _hints(cls)[f.name]
        default = _default(f) if defaults is None else getattr(defaults, f.name)
        if is_dataclass(hint):
            out += flags(hint, None if default is MISSING else default)  # type: ignore[arg-type]
            continue
        kind, many = _kind(hint, f"{cls.__name__}.{f.name}")
        out.append(Flag(f.name, kind, many, default, docs.get(f.name, ""),
                        f.metadata.get(_CHECK, Check())))
    return out


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Rebuild a config from its JSON form: nested dicts, lists for tuples.

    The flat layout written before configs were nested (e.g. ``task`` at the top level of a
    ``TrainConfig``) is accepted too, so runs recorded then still load. Unknown keys raise
    ``TypeError`` like the constructor does.
    """
    values = nest(cls, data)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in values:
            continue
        kind, value = _hints(cls)[f.name], values[f.name]
        if is_dataclass(kind) and isinstance(value, Mapping):
            values[f.name] = from_dict(kind, value)  # type: ignore[arg-type]
        elif isinstance(value, list) and typing.get_origin(_strip_none(kind)) is tuple:
            values[f.name] = tuple(value)
    return cls(**values)


def nest(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with the keys of nested dataclass fields moved under those fields (legacy flat
    layouts -> the nested one; already nested data is returned unchanged)."""
    out = dict(data)
    own = {f.name for f in fields(cls)}
    for f in fields(cls):
        kind = _hints(cls)[f.name]
        if not is_dataclass(kind):
            continue
        names = _names(kind)
        moved = {k: out.pop(k) for k in list(out) if k in names and k not in own}
        if moved:
            out[f.name] = nest(kind, {**moved, **dict(out.get(f.name) or {})})
    return out


def _names(cls: type) -> set[str]:
    """Every field name of ``cls`` and of the dataclasses nested in it."""
    out = set()
    for f in fields(cls):
        out.add(f.name)
        if is_dataclass(_hints(cls)[f.name]):
            out |= _names(_hints(cls)[f.name])
    return out


def flatten(obj: Any) -> dict[str, Any]:
    """Field name -> value of a config with nested dataclasses flattened (as its flags are)."""
    return dict(_leaves(obj))


def _leaves(obj: Any) -> Iterator[tuple[str, Any]]:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            yield from _leaves(value)
        else:
            yield f.name, value


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings under the fields of ``cls`` and its dataclass bases (for help text)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # defined where no source is kept
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def _strip_none(hint: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _kind(hint: Any, where: str) -> tuple[type, bool]:
    """(item type, is a tuple) of a field annotation the command line supports."""
    hint = _strip_none(hint)
    args = typing.get_args(hint)
    many = typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis
    kind = args[0] if many else hint
    if kind not in (int, float, str, bool) or (many and kind is bool):
        raise TypeError(f"{where}: no command-line form for the type {hint!r}")
    return kind, many


def _plain(doc: str) -> str:
    """A docstring as terminal text: Sphinx roles and double backticks removed."""
    return re.sub(r":\w+:`~?([^`]*)`", r"\1", doc).replace("``", "")


def _show(value: Any) -> str:
    """A default as the user would type it (``0.05,0.2`` for a tuple of floats)."""
    if isinstance(value, tuple | list):
        return ",".join(_show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
