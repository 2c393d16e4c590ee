"""Env docstrings: Gymnasium's sections, arguments = the settings fields, examples that run.

The examples are run with :mod:`doctest` here (not ``--doctest-modules``), so each module's
examples are counted and a failing one prints its own output.
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import importlib
from typing import Any

import pytest

ENV_CLASSES = {
    "exitgym.envs.early_exit": "EarlyExitEnv",
    "exitgym.envs.skip_block": "SkipBlockEnv",
    "exitgym.envs.switchable_decision": "SwitchableDecisionEnv",
    "exitgym.envs.token_exit": "TokenExitEnv",
}
SECTIONS = ("## Description", "## Action Space", "## Observation Space", "## Rewards",
            "## Starting State", "## Episode End", "## Arguments", "## Version History",
            "## Examples")


@pytest.mark.parametrize("module_name", sorted(ENV_CLASSES))
def test_env_docstring_has_gymnasium_sections_and_an_observation_table(module_name: str) -> None:
    cls: Any = getattr(importlib.import_module(module_name), ENV_CLASSES[module_name])
    doc = cls.__doc__ or ""
    positions = [doc.find(section) for section in SECTIONS]
    assert -1 not in positions, [s for s, p in zip(SECTIONS, positions, strict=True) if p < 0]
    assert positions == sorted(positions), "sections out of Gymnasium's order"
    table = doc[doc.find("## Observation Space"):doc.find("## Rewards")]
    assert "| Index" in table and "| Min" in table and "| Max" in table


@pytest.mark.parametrize("module_name", sorted(ENV_CLASSES))
def test_env_module_doctests_run_and_pass(module_name: str) -> None:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(verbose=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module) if t.examples]
    for test in tests:
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0, f"{module_name} has no doctest examples"
    assert results.failed == 0, f"{results.failed} doctest example(s) of {module_name} failed"
    assert any(t.name.endswith(ENV_CLASSES[module_name]) for t in tests)


@pytest.mark.parametrize("module_name", sorted(ENV_CLASSES))
def test_documented_arguments_are_the_settings_fields_and_defaults(module_name: str) -> None:
    cls: Any = getattr(importlib.import_module(module_name), ENV_CLASSES[module_name])
    doc = cls.__doc__ or ""
    section = doc[doc.find("## Arguments"):doc.find("## Version History")]
    code = section.split("```python")[1].split("```")[0]
    call = ast.parse(code.strip()).body[0].value  # type: ignore[attr-defined]
    documented = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
    settings = {f.name: f.default for f in dataclasses.fields(cls.settings_class)
                if f.name != "reward_kwargs"}
    assert documented == settings
