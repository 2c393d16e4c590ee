"""Plug-ins: users' own rewards, agents, observation views and tasks, found the ecosystem's way.

Two ways in, both recorded so a run can load what it used again:

- **Entry points** (how pytest and Gymnasium find plug-ins): a distribution declares, e.g. ::

      [project.entry-points."exitgym.rewards"]
      cheap-depth = "mypkg.rewards:CheapDepth"

  in the groups of :data:`GROUPS`. The object is registered under the entry point's name; an
  entry point naming a module is imported (its decorators register what it defines).
  Registries load their group when a name is missing, and the CLI loads every group first, so
  ``--reward cheap-depth`` is a valid choice. An entry point that fails to load is skipped with
  one :class:`PluginWarning` naming it and its error: a broken plug-in must not break commands
  that never use it (it made ``exitgym train --reward vanilla`` fail).
- **Imports**: ``--import MODULE`` on every command (or :func:`import_modules`) imports a module
  whose ``@register_reward(...)`` etc. run on import.

:func:`plugin_record` is what ``config.json`` stores; :func:`load_recorded` imports it again on
``evaluate`` / ``replay`` / ``infer`` / ``--resume``, and names the distribution and version to
install when a recorded plug-in is missing or its version changed. Standard library only (bottom
layer).
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any

GROUPS: dict[str, str] = {
    "rewards": "exitgym.rewards",
    "agents": "exitgym.agents",
    "observations": "exitgym.observations",
    "tasks": "exitgym.tasks",
}
"""Registry -> entry-point group: reward shapes (``RewardShape`` subclasses), agents
(``agents.registry.Method`` entries, ``ExitRule`` subclasses or trainer classes), observation
views (``ObservationView`` subclasses) and tasks (``data.tasks.TaskSpec`` entries)."""

_LOADED: dict[tuple[str, str], dict[str, Any]] = {}
"""(group, name) -> record of every entry point loaded in this process."""
_IMPORTED: dict[str, dict[str, Any]] = {}
"""Module -> record of every module imported with :func:`import_modules`."""
_BROKEN: dict[tuple[str, str], str] = {}
"""(group, name) -> why the entry point failed to load: warned about once, then skipped."""


class PluginError(ImportError, ValueError):
    """A plug-in cannot be loaded (the message names it and what to install)."""


class PluginWarning(UserWarning):
    """An installed plug-in failed to load and was skipped (the message names it and why)."""


def _dist_of(module: str) -> tuple[str | None, str | None]:
    """Distribution name and version providing top-level package of ``module`` (None if none)."""
    top = module.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None, None


def require_type(kind: str, name: str, obj: Any, cls: type) -> None:
    """Refuse a plug-in ``obj`` that is not a ``cls`` (the registries' one check of it)."""
    if not isinstance(obj, cls):
        raise TypeError(f"{kind} plug-in {name!r} must be an {cls.__module__}.{cls.__qualname__}"
                        f", got {type(obj).__name__}")


def load_entry_points(group: str, register: Callable[[str, Any], None]) -> list[str]:
    """Load the group's entry points not loaded yet; ``register(name, obj)`` each non-module.

    An entry point that fails to import is skipped with a :class:`PluginWarning` (once per
    process) naming it, its distribution and the error; :func:`failed_note` tells a registry's
    "unknown name" error about it.

    Returns:
        The names loaded by this call.
    """
    loaded = []
    for ep in metadata.entry_points(group=group):
        if (group, ep.name) in _LOADED or (group, ep.name) in _BROKEN:
            continue
        dist = getattr(ep, "dist", None)
        where = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
        try:
            obj = ep.load()
        except Exception as err:
            why = (f"plug-in {ep.name!r} of entry-point group {group!r} ({ep.value}, from "
                   f"{where}) failed to load: {type(err).__name__}: {err}")
            _BROKEN[(group, ep.name)] = why
            fix = f"reinstall or uninstall {dist.name}" if dist is not None else "fix it"
            warnings.warn(f"{why}; skipped ({fix} to silence this)", PluginWarning,
                          stacklevel=2)
            continue
        if not isinstance(obj, types.ModuleType):
            register(ep.name, obj)
        _LOADED[(group, ep.name)] = {
            "group": group, "name": ep.name, "value": ep.value,
            "distribution": dist.name if dist is not None else None,
            "version": dist.version if dist is not None else None}
        loaded.append(ep.name)
    return loaded


def failed_note(group: str, names: Iterable[str]) -> str:
    """``"; plug-in 'x' ... failed to load: ..."`` for each of ``names`` that is a broken entry
    point of ``group`` (``""`` when none is): what an "unknown name" error adds, so a user who
    named the broken plug-in learns why it is missing."""
    return "".join(f"; {_BROKEN[(group, n)]}" for n in names if (group, n) in _BROKEN)


def import_modules(modules: Iterable[str]) -> None:
    """Import each module (``--import``), recording it with its distribution's version.

    Raises:
        PluginError: a module cannot be imported (the message says what to check).
    """
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise PluginError(f"--import {module}: {err}; the module must be installed or on "
                              f"PYTHONPATH") from err
        dist, version = _dist_of(module)
        _IMPORTED[module] = {"module": module, "distribution": dist, "version": version}


def plugin_record() -> dict[str, list[dict[str, Any]]]:
    """Every plug-in loaded in this process: what a run's ``config.json`` records."""
    return {"entry_points": [dict(v) for _, v in sorted(_LOADED.items())],
            "imports": [dict(v) for _, v in sorted(_IMPORTED.items())]}


def load_recorded(record: dict[str, Any], load_groups: Callable[[], None]) -> None:
    """Load the plug-ins a run recorded: its imports, then every entry-point group.

    Args:
        record: ``config.json["plugins"]`` (see :func:`plugin_record`).
        load_groups: loads every entry-point group into its registry.

    Raises:
        PluginError: a recorded plug-in is not available now; the message names the distribution
            and version the run used.
    """
    for entry in record.get("imports", []):
        if entry["module"] not in sys.modules:
            try:
                import_modules([entry["module"]])
            except PluginError as err:
                raise PluginError(f"this run used plug-in module {entry['module']!r}"
                                  f"{_installed_as(entry)}, which cannot be imported now ({err})"
                                  ) from err
        _same_version(f"plug-in module {entry['module']!r}", entry,
                      _dist_of(entry["module"])[1])
    load_groups()
    for entry in record.get("entry_points", []):
        what = (f"plug-in {entry['name']!r} (entry-point group {entry['group']!r}, "
                f"{entry['value']})")
        if (entry["group"], entry["name"]) in _BROKEN:
            raise PluginError(f"this run used {what}{_installed_as(entry)}, which fails to load "
                              f"now ({_BROKEN[(entry['group'], entry['name'])]})")
        if (entry["group"], entry["name"]) not in _LOADED:
            raise PluginError(f"this run used {what}{_installed_as(entry)}, which is not "
                              f"installed; install it to use this run")
        _same_version(what, entry, _LOADED[(entry["group"], entry["name"])].get("version"))


def _same_version(what: str, entry: dict[str, Any], version: str | None) -> None:
    """Refuse a plug-in whose distribution's version changed since the run recorded it.

    Why: a reward or task of another version may compute other numbers; the run's results would
    be recomputed (and compared) against code that did not produce them.
    """
    recorded = entry.get("version")
    if recorded and version and version != recorded:
        dist = entry["distribution"]
        raise PluginError(f"this run used {what} from {dist}=={recorded}, but {dist}=={version} "
                          f"is installed; another version may compute other results: install "
                          f"{dist}=={recorded} (pip install '{dist}=={recorded}') to use this "
                          f"run, or train a new one")


def _installed_as(entry: dict[str, Any]) -> str:
    if entry.get("distribution"):
        return f" from {entry['distribution']}=={entry['version']}"
    return ""
