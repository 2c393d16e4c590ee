"""Plug-in exit rules and trainers (``register_rule`` / ``register_agent``): the worked example
``tests/plugins_example/my_exit_methods.py`` given to ``--import`` is compared, trained, evaluated
and replayed by the code the built-ins go through, and never joins a listing unasked.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gymnasium as gym
import pytest

import exitgym
from exitgym.agents.registry import METHODS, lookup, make_rule, names
from exitgym.agents.rules import EntropyExit, ExitRule
from exitgym.cli import main
from exitgym.experiments.configs import CompareConfig
from exitgym.experiments.generation_compare import rule_views
from exitgym.utils import plugins
from tests.tiny_project import make_tiny_project

EXAMPLE = Path(__file__).parent / "plugins_example"
FAST = ["--max-length", "16", "--steps", "3", "--batch-size", "8", "--num-envs", "8"]


def _forget() -> None:
    """As in a new process: the example module neither imported nor registered."""
    for name in ("falling-maxprob", "reinforce-wide", "plugin-entropy"):
        METHODS.pop(name, None)
    sys.modules.pop("my_exit_methods", None)
    plugins._IMPORTED.pop("my_exit_methods", None)


@pytest.fixture()
def example(monkeypatch: pytest.MonkeyPatch):
    """The example's folder on ``sys.path`` (as ``PYTHONPATH`` would put it), nothing loaded."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    _forget()
    yield
    _forget()


def test_a_plugin_rule_is_compared_like_a_built_in_and_replayed(example, tmp_path,
                                                                capsys) -> None:
    project = make_tiny_project(tmp_path / "project")
    data = ["--task", project["task"], "--backbone", project["backbone"]]
    out = tmp_path / "cmp"
    argv = ["compare", *data, *FAST, "--rewards", "vanilla", "--alphas", "0.2", "--seeds", "0",
            "--rules", "falling-maxprob", "--out", str(out)]
    assert main(argv) == 2  # not imported: an unknown name
    assert "--rules: unknown value 'falling-maxprob'; allowed: entropy" in capsys.readouterr().err
    assert main([argv[0], "--import", "my_exit_methods", *argv[1:]]) == 0
    from my_exit_methods import FallingMaxProb

    summary = json.loads((out / "summary.json").read_text())
    rows = [r for r in summary["rows"] if r["method"] == "falling-maxprob"]
    assert sorted(r["knob"] for r in rows) == [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
    assert {r["category"] for r in summary["budget_table"]
            if r["method"] == "falling-maxprob"} <= {"rule"}
    # the same numbers as evaluating the rule by hand on the test split
    from exitgym.data.prepare import get_cache

    cache = get_cache(task=project["task"], backbone=project["backbone"], split="test",
                      max_length=16, progress=False)
    env = gym.make("exitgym/EarlyExit-v0", cache=cache, observation="features+logits")
    by_hand = exitgym.evaluate(FallingMaxProb(0.9), env)
    row = next(r for r in rows if r["knob"] == 0.9)
    assert (row["accuracy"], row["cost"]) == pytest.approx((by_hand.accuracy, by_hand.cost))
    record = json.loads((out / "config.json").read_text())["plugins"]["imports"]
    assert [e["module"] for e in record] == ["my_exit_methods"]

    _forget()  # a new process: replay imports the recorded module again
    capsys.readouterr()
    assert main(["replay", str(out), "--verify", "--select", "falling-maxprob"]) == 0
    assert "verified 70 episodes" in capsys.readouterr().out  # 7 knobs x 10 test rows
    assert "falling-maxprob" in METHODS


def test_a_plugin_trainer_trains_evaluates_and_loads_back(example, tmp_path, capsys) -> None:
    project = make_tiny_project(tmp_path / "project")
    run = tmp_path / "run"
    assert main(["train", "--import", "my_exit_methods", "--task", project["task"],
                 "--backbone", project["backbone"], *FAST, "--agent", "reinforce-wide",
                 "--reward", "vanilla", "--alpha", "0.3", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["config"]["agent"] == "reinforce-wide"
    _forget()  # a new process: the run's agent comes back from its recorded import
    from exitgym.experiments.policies import load_policy

    assert load_policy(run).config.hidden == 128
    assert main(["evaluate", str(run), "--num-envs", "8"]) == 0
    assert METHODS["reinforce-wide"].kind == "trainer"


def test_plugins_join_no_listing_unasked_and_cannot_take_a_built_in_name(example) -> None:
    import my_exit_methods  # noqa: F401  (registers on import)

    assert lookup("falling-maxprob", "rule").plugin == "my_exit_methods.FallingMaxProb"
    assert "falling-maxprob" in names("rule") and "reinforce-wide" in names("trainer")
    assert "falling-maxprob" not in names("rule", plugins=False)
    assert "falling-maxprob" not in rule_views()  # demo --generation's rules
    assert "falling-maxprob" not in CompareConfig().all_rules
    assert "falling-maxprob" in CompareConfig(rules=("falling-maxprob",)).all_rules
    assert exitgym.register_rule("falling-maxprob")(my_exit_methods.FallingMaxProb)  # re-import
    with pytest.raises(ValueError, match="rule 'entropy' is already registered as the built-in "
                                         "rule; register yours under another name"):
        exitgym.register_rule("entropy")(type("MyEntropy", (EntropyExit,), {}))
    assert lookup("entropy").factory is EntropyExit and EntropyExit.name == "entropy"
    with pytest.raises(ValueError, match="rule 'falling-maxprob' is already registered as "
                                         "my_exit_methods.FallingMaxProb"):
        exitgym.register_rule("falling-maxprob")(type("Other", (ExitRule,), {}))
    with pytest.raises(TypeError, match="needs an ExitRule subclass"):
        exitgym.register_rule("not-a-rule")(dict)
    with pytest.raises(ValueError, match="unknown rule 'nope'; allowed: "):
        CompareConfig(rules=("nope",))


def test_an_entry_point_may_name_a_rule_class(tmp_path, monkeypatch) -> None:
    site = tmp_path / "site"
    info = site / "entropy_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "entropy_plugin.py").write_text(
        "from exitgym.agents.rules import EntropyExit\n\n\n"
        "class PluginEntropy(EntropyExit):\n    \"\"\"Entropy, from a plug-in.\"\"\"\n")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: entropy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[exitgym.agents]\nplugin-entropy = entropy_plugin:PluginEntropy\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_LOADED", {})
    try:
        rule = make_rule("plugin-entropy", theta=0.4)
        assert (type(rule).__name__, rule.name, rule.theta) == ("PluginEntropy",
                                                                "plugin-entropy", 0.4)
        assert lookup("plugin-entropy").description == "Entropy, from a plug-in."
        assert "plugin-entropy" not in rule_views()
    finally:
        METHODS.pop("plugin-entropy", None)
        sys.modules.pop("entropy_plugin", None)
