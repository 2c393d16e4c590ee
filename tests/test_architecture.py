"""The layout rules of docs/design.md: import direction, package coverage, module sizes.

The import direction is the layers contract in ``pyproject.toml`` (``[tool.importlinter]``);
running ``lint-imports`` here makes a wrong-way import fail CI like any other defect.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"envs": ROOT / "envs", "agents": ROOT / "agents", "backbones": ROOT / "backbones"}
"""Top-level folders installed as ``exitgym.<name>`` (package-dir in pyproject.toml)."""
MAX_LINES = 400
MAX_ROOT_MODULES = 10


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return list(contract["layers"])


def _source_files() -> list[Path]:
    files = [p for p in (ROOT / "exitgym").rglob("*.py") if not p.is_symlink()]
    files = [p for p in files if not any(part in PACKAGE_DIRS for part in
                                         p.relative_to(ROOT / "exitgym").parts[:1])]
    for folder in PACKAGE_DIRS.values():
        files += folder.rglob("*.py")
    return sorted(files)


def test_import_direction_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_every_subpackage_is_in_a_layer() -> None:
    """A new sub-package cannot escape the contract by being left out of it."""
    packages = {f"exitgym.{p.name}" for p in (ROOT / "exitgym").iterdir()
                if p.is_dir() and (p / "__init__.py").is_file()}
    packages |= {"exitgym.inference"}
    assert packages == set(_layers())


def test_symlinks_show_the_top_level_folders_inside_the_package() -> None:
    for name, folder in PACKAGE_DIRS.items():
        link = ROOT / "exitgym" / name
        assert link.is_symlink() and link.resolve() == folder.resolve(), link


def test_modules_stay_small() -> None:
    too_long = {str(p.relative_to(ROOT)): n for p in _source_files()
                if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_package_root_holds_few_modules() -> None:
    root_modules = sorted(p.name for p in (ROOT / "exitgym").glob("*.py"))
    assert len(root_modules) <= MAX_ROOT_MODULES, root_modules


def test_every_package_is_installed_by_a_plain_pip_install() -> None:
    """An editable install finds any folder; a wheel only holds what ``packages`` lists."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {"exitgym"} | {f"exitgym.{p.name}" for p in (ROOT / "exitgym").iterdir()
                           if p.is_dir() and (p / "__init__.py").is_file()}
    for folder in PACKAGE_DIRS.values():
        found |= {"exitgym." + ".".join(p.parent.relative_to(ROOT).parts)
                  for p in folder.rglob("__init__.py")}
    assert listed == found
