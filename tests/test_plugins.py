"""Plug-ins: rewards, views and tasks from an installed distribution's entry points, and modules
given with ``--import``, usable from every command and loaded again by ``evaluate`` / ``replay``.

The distribution is a real one as far as ``importlib.metadata`` is concerned: a ``dist-info``
folder with ``entry_points.txt`` on ``sys.path`` (what ``pip install`` leaves behind).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from exitgym.cli import main
from exitgym.data.config import SPLITS
from exitgym.envs.observations import OBSERVATIONS, make_observation
from exitgym.envs.rewards import REWARDS, load_reward_plugins, make_reward
from exitgym.utils import plugins
from tests.tiny_project import PREPARE_OPTIONS, make_tiny_project

PLUGIN = '''
import numpy as np
import pandas as pd

from exitgym.data.sources import RawTask
from exitgym.data.tasks import TaskSpec
from exitgym.envs.observations import ObservationView
from exitgym.envs.rewards import RewardShape


class CheapDepth(RewardShape):
    """Correctness minus alpha times cost."""

    def quality(self, ce, correct):
        return np.asarray(correct, dtype=np.float64)

    def cost_weight(self, memorized, num_layers):
        return self.alpha


class Depth(ObservationView):
    """l / L only."""

    def dim(self, hidden_size, num_labels):
        return 1

    def compute(self, inputs):
        n, length = inputs.logits.shape[:2]
        depth = np.arange(1, length + 1)[None, :, None] / inputs.num_layers
        return np.broadcast_to(depth, (n, length, 1)).astype(np.float32)


def _words():
    rows = [(f"word{i} " + ("good" if i % 2 else "bad"), i % 2) for i in range(60)]
    return RawTask({"all": pd.DataFrame(rows, columns=["text", "label"])})


TASK = TaskSpec("ignored-name", "sixty rows", _words, offline=False)
'''
IMPORTED = '''
import numpy as np

from exitgym.envs.rewards import VanillaReward, register_reward


@register_reward("sqrt-cost")
class SqrtCost(VanillaReward):
    def cost_weight(self, memorized, num_layers):
        return self.alpha
'''
ENTRY_POINTS = """[exitgym.rewards]
cheap-depth = cheapdepth_plugin:CheapDepth

[exitgym.observations]
plugin-depth = cheapdepth_plugin:Depth

[exitgym.tasks]
sixty-words = cheapdepth_plugin:TASK
"""
FAST = ["--max-length", str(PREPARE_OPTIONS["max_length"]), "--steps", "3", "--batch-size", "8",
        "--num-envs", "8", "--alpha", "0.3"]


def _forget(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a new process: nothing of the plug-ins registered or imported."""
    for registry, name in ((REWARDS, "cheap-depth"), (REWARDS, "sqrt-cost"),
                           (OBSERVATIONS, "plugin-depth")):
        registry.pop(name, None)
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.setattr(plugins, "_IMPORTED", {})
    for module in ("cheapdepth_plugin", "sqrt_cost_plugin"):
        sys.modules.pop(module, None)


@pytest.fixture()
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``cheapdepth-plugin 0.3`` installed (entry points), ``sqrt_cost_plugin`` importable."""
    site = tmp_path / "site"
    (site / "cheapdepth_plugin-0.3.dist-info").mkdir(parents=True)
    (site / "cheapdepth_plugin.py").write_text(PLUGIN)
    (site / "sqrt_cost_plugin.py").write_text(IMPORTED)
    info = site / "cheapdepth_plugin-0.3.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cheapdepth-plugin\n"
                                   "Version: 0.3\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    _forget(monkeypatch)
    yield site
    _forget(monkeypatch)


def test_entry_point_plugins_register_on_first_use(installed) -> None:
    from exitgym.data.tasks import load_task

    assert "cheap-depth" not in REWARDS
    assert make_reward("cheap-depth", alpha=0.5).alpha == 0.5  # loaded on the miss
    assert [type(v).__name__ for v in make_observation("features+plugin-depth").parts] == [
        "FeaturesView", "Depth"]
    task = load_task("sixty-words")
    assert sum(len(task.split(s)) for s in SPLITS) == 60
    record = plugins.plugin_record()["entry_points"]
    assert {(e["group"], e["name"], e["distribution"], e["version"]) for e in record} == {
        ("exitgym.rewards", "cheap-depth", "cheapdepth-plugin", "0.3"),
        ("exitgym.observations", "plugin-depth", "cheapdepth-plugin", "0.3"),
        ("exitgym.tasks", "sixty-words", "cheapdepth-plugin", "0.3")}


def test_cli_trains_evaluates_and_replays_with_plugins(installed, tmp_path, monkeypatch,
                                                       capsys) -> None:
    project = make_tiny_project(tmp_path / "project")
    data = ["--task", project["task"], "--backbone", project["backbone"]]
    run = tmp_path / "run"
    assert main(["train", *data, *FAST, "--reward", "cheap-depth", "--observation",
                 "features+plugin-depth", "--out", str(run)]) == 0
    config = json.loads((run / "config.json").read_text())
    assert {"group": "exitgym.rewards", "name": "cheap-depth", "distribution": "cheapdepth-plugin",
            "version": "0.3", "value": "cheapdepth_plugin:CheapDepth"} in \
        config["plugins"]["entry_points"]
    _forget(monkeypatch)  # a new process: evaluate and replay find the plug-ins again
    assert main(["evaluate", str(run)]) == 0
    assert main(["replay", str(run), "--verify", "--policy"]) == 0
    capsys.readouterr()

    imported = tmp_path / "imported"
    assert main(["train", *data, *FAST, "--reward", "sqrt-cost", "--out", str(imported)]) == 2
    assert "--reward: unknown value 'sqrt-cost'; allowed: accuracy, cheap-depth" in \
        capsys.readouterr().err
    assert main(["train", "--import", "sqrt_cost_plugin", *data, *FAST, "--reward", "sqrt-cost",
                 "--out", str(imported)]) == 0
    record = json.loads((imported / "config.json").read_text())["plugins"]["imports"]
    assert [e["module"] for e in record] == ["sqrt_cost_plugin"]
    _forget(monkeypatch)
    assert main(["evaluate", str(imported)]) == 0  # re-imported from config.json
    assert "sqrt-cost" in REWARDS
    assert main(["train", "--import", "no_such_plugin", "--steps", "1"]) == 2
    assert ("exitgym train: error: --import no_such_plugin: No module named 'no_such_plugin'; "
            "the module must be installed or on PYTHONPATH") in capsys.readouterr().err

    # Uninstalled: the run says what it used and what to install.
    sys.path.remove(str(installed))
    _forget(monkeypatch)
    assert main(["evaluate", str(run)]) == 2
    assert ("exitgym evaluate: error: this run used plug-in 'plugin-depth' (entry-point group "
            "'exitgym.observations', cheapdepth_plugin:Depth) from cheapdepth-plugin==0.3, which "
            "is not installed; install it to use this run") in capsys.readouterr().err


def test_evaluate_wraps_a_stable_baselines3_model() -> None:
    import gymnasium as gym
    from stable_baselines3 import PPO

    import exitgym  # noqa: F401
    from exitgym.agents import evaluate
    from exitgym.data.synthetic import synthetic_cache

    env = gym.make("exitgym/EarlyExit-v0", cache=synthetic_cache(12, num_layers=3))
    model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, seed=0)
    result = evaluate(model, env)
    expected = model.predict(env.reset(seed=0, options={"sample_id": 0})[0], deterministic=True)
    assert len(result.records) == 12 and result.records[0].actions[0] == int(expected[0])
    with pytest.raises(TypeError, match="evaluate needs a Policy"):
        evaluate(object(), env)
    np.testing.assert_array_equal([r.sample_id for r in result.records], np.arange(12))


def test_a_run_is_refused_when_its_plugin_version_changed(installed, tmp_path, monkeypatch,
                                                          capsys) -> None:
    """Runs record ``dist==version``; evaluating with another version installed used to pass."""
    project = make_tiny_project(tmp_path / "project")
    run = tmp_path / "run"
    assert main(["train", "--task", project["task"], "--backbone", project["backbone"], *FAST,
                 "--reward", "cheap-depth", "--out", str(run)]) == 0
    capsys.readouterr()
    info = installed / "cheapdepth_plugin-0.3.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cheapdepth-plugin\n"
                                   "Version: 0.4\n")
    _forget(monkeypatch)
    before = (run / "eval-test.json").read_bytes()
    assert main(["evaluate", str(run)]) == 2
    # every plug-in of the process is recorded; the first, by group, is named
    assert ("exitgym evaluate: error: this run used plug-in 'plugin-depth' (entry-point group "
            "'exitgym.observations', cheapdepth_plugin:Depth) from cheapdepth-plugin==0.3, but "
            "cheapdepth-plugin==0.4 is installed; another version may compute other results: "
            "install cheapdepth-plugin==0.3 (pip install 'cheapdepth-plugin==0.3') to use this "
            "run, or train a new one") in capsys.readouterr().err
    assert main(["replay", str(run), "--verify"]) == 2
    assert "but cheapdepth-plugin==0.4 is installed" in capsys.readouterr().err
    assert (run / "eval-test.json").read_bytes() == before
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cheapdepth-plugin\n"
                                   "Version: 0.3\n")
    _forget(monkeypatch)
    assert main(["evaluate", str(run)]) == 0


SHADOWING = '''
import numpy as np

from exitgym.data.tasks import TaskSpec
from exitgym.envs.observations import ObservationView
from exitgym.envs.rewards import RewardShape


class DepthView(ObservationView):
    """Same class name as the built-in view."""

    def dim(self, hidden_size, num_labels):
        return 1

    def compute(self, inputs):
        return np.zeros(inputs.logits.shape[:2] + (1,), dtype=np.float32)


class VanillaReward(RewardShape):
    def quality(self, ce, correct):
        return np.asarray(correct, dtype=np.float64)


def _rows():
    raise AssertionError("never loaded")


TASK = TaskSpec("rt-polarity", "not the built-in", _rows, offline=True)
'''


@pytest.mark.parametrize("group", ["observations", "rewards", "tasks"])
def test_a_plugin_cannot_replace_a_built_in_of_the_same_name(tmp_path, monkeypatch, group) -> None:
    """A plug-in registering ``depth`` / ``vanilla`` / ``rt-polarity`` (even with the built-in's
    class name) is refused with its name, and the built-in stays what every run was made with."""
    from exitgym.data import tasks
    from exitgym.envs import observations, rewards

    site = tmp_path / "site"
    info = site / "shadow_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "shadow_plugin.py").write_text(SHADOWING)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shadow-plugin\nVersion: 1.0\n")
    entry = {"observations": "depth = shadow_plugin:DepthView",
             "rewards": "vanilla = shadow_plugin:VanillaReward",
             "tasks": "rt-polarity = shadow_plugin:TASK"}[group]
    (info / "entry_points.txt").write_text(f"[exitgym.{group}]\n{entry}\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_LOADED", {})
    load, registry, name = {
        "observations": (observations.load_observation_plugins, OBSERVATIONS, "depth"),
        "rewards": (rewards.load_reward_plugins, REWARDS, "vanilla"),
        "tasks": (tasks.load_task_plugins, tasks.TASKS, "rt-polarity")}[group]
    before = registry[name]
    try:
        with pytest.raises(ValueError, match=f"{name!r} (is already registered|clashes)"):
            load()
        assert registry[name] is before
    finally:
        sys.modules.pop("shadow_plugin", None)


@pytest.fixture()
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``broken-plugin 1.0`` installed: its reward entry point fails to import (a missing
    dependency), as a half-installed plug-in does."""
    site = tmp_path / "broken-site"
    info = site / "broken_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "broken_plugin.py").write_text("import exitgym_missing_dependency  # noqa: F401\n")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[exitgym.rewards]\nbroken-reward = "
                                           "broken_plugin:Reward\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.setattr(plugins, "_BROKEN", {})
    yield site
    sys.modules.pop("broken_plugin", None)


BROKEN_WHY = ("plug-in 'broken-reward' of entry-point group 'exitgym.rewards' "
              "(broken_plugin:Reward, from broken-plugin 1.0) failed to load: "
              "ModuleNotFoundError: No module named 'exitgym_missing_dependency'")


def test_a_broken_plugin_is_skipped_with_one_warning(broken, tmp_path, capsys) -> None:
    """A plug-in that fails to import used to fail every command, also ``train --reward
    vanilla`` and ``replay --verify`` of a run without plug-ins, and ``--reward vanila`` showed
    its error instead of "unknown value"."""
    with pytest.warns(plugins.PluginWarning) as caught:
        with pytest.raises(ValueError, match="unknown reward 'vanila'; registered rewards: "):
            make_reward("vanila")
    assert [str(w.message) for w in caught] == [
        f"{BROKEN_WHY}; skipped (reinstall or uninstall broken-plugin to silence this)"]
    assert make_reward("vanilla", alpha=0.3).alpha == 0.3  # warned once: nothing more
    named = f"unknown reward 'broken-reward'.*; {re.escape(BROKEN_WHY)}$"
    with pytest.raises(ValueError, match=named):
        make_reward("broken-reward")
    recorded = {"entry_points": [{"group": "exitgym.rewards", "name": "broken-reward",
                                  "value": "broken_plugin:Reward",
                                  "distribution": "broken-plugin", "version": "1.0"}]}
    with pytest.raises(plugins.PluginError) as err:  # a run that used it says why it cannot
        plugins.load_recorded(recorded, load_reward_plugins)
    assert str(err.value) == ("this run used plug-in 'broken-reward' (entry-point group "
                              "'exitgym.rewards', broken_plugin:Reward) from broken-plugin==1.0, "
                              f"which fails to load now ({BROKEN_WHY})")

    plugins._BROKEN.clear()  # a new process
    project = make_tiny_project(tmp_path / "project")
    data = ["--task", project["task"], "--backbone", project["backbone"]]
    run = tmp_path / "run"
    assert main(["train", *data, *FAST, "--reward", "vanila", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and f"exitgym train: warning: {BROKEN_WHY}" in err
    assert "--reward: unknown value 'vanila'; allowed: accuracy, flops, hardness, vanilla" in err
    assert main(["train", *data, *FAST, "--reward", "vanilla", "--out", str(run)]) == 0
    assert main(["replay", str(run), "--verify"]) == 0
    assert "warning:" not in capsys.readouterr().err  # once per process
