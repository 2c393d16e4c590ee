"""Tests stay out of the user's exitgym cache, module-scoped fixtures included (issue 26)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def module_cache_dir() -> str | None:
    """What a module-scoped fixture (one that prepares a tiny project, say) sees: it runs before
    any function-scoped fixture, so only a session-wide setting reaches it."""
    return os.environ.get("EXITGYM_CACHE")


def test_module_fixtures_and_subprocesses_use_the_session_test_cache(
        module_cache_dir: str | None, tmp_path_factory: pytest.TempPathFactory) -> None:
    from exitgym.utils.paths import cache_dir

    expected = tmp_path_factory.getbasetemp() / "exitgym-cache"
    assert module_cache_dir == str(expected)
    assert Path(cache_dir()).resolve() == expected.resolve()
    child = subprocess.run([sys.executable, "-c",
                            "from exitgym.utils.paths import cache_dir; print(cache_dir())"],
                           capture_output=True, text=True, check=True)
    assert Path(child.stdout.strip()).resolve() == expected.resolve()
