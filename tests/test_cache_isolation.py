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


def test_the_user_cache_check_sees_new_and_changed_entries_only(tmp_path: Path) -> None:
    """The session check of tests/conftest.py: a cache that does not exist lists nothing (and is
    not created), a new or rewritten top-level entry of a watched folder is reported, a removed
    one or a file outside the watched folders is not."""
    from tests.conftest import cache_changes, cache_listing

    missing = tmp_path / "no-cache"
    assert cache_listing(missing) == {} and not missing.exists()
    root = tmp_path / "cache"
    (root / "prepared" / "old").mkdir(parents=True)
    (root / "prepared" / "gone").mkdir()
    (root / "downloads").mkdir()
    before = cache_listing(root)
    assert set(before) == {"prepared/old", "prepared/gone"}
    (root / "prepared" / "gone").rmdir()
    (root / "downloads" / "wheel").write_text("x")
    assert cache_changes(before, cache_listing(root)) == []
    (root / "caches").mkdir()
    (root / "caches" / "toy.csv__tiny").mkdir()
    os.utime(root / "prepared" / "old", ns=(1, before["prepared/old"] + 1))
    assert cache_changes(before, cache_listing(root)) == ["caches/toy.csv__tiny (new)",
                                                          "prepared/old (changed)"]


def test_a_session_that_writes_into_the_user_cache_fails(pytester: pytest.Pytester,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A nested session with this conftest whose test writes into the cache in effect before
    the session: every test passes, yet the session fails and names the entry."""
    user = tmp_path / "user-cache"
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_leak=f"""
        from pathlib import Path

        def test_leaks():
            (Path({str(user)!r}) / "prepared" / "leaked").mkdir(parents=True)
        """)
    monkeypatch.setenv("EXITGYM_CACHE", str(user))
    monkeypatch.delenv("EXITGYM_TESTS_IGNORE_USER_CACHE", raising=False)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*wrote into the user's exitgym cache*prepared/leaked (new)*"])
