"""Skip policies measured like exit policies (issue 26): the fixed skip baselines act exactly as
their patterns say in both skip envs, the pattern search is right and its shared-prefix shortcut
exact, and ``compare --env <skip env>`` reports learned, fixed and exit rows with the findings."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import exitgym.agents.skip_baselines as sb
from exitgym.agents.rollout import evaluate
from exitgym.agents.skip_baselines import (
    FixedSkips,
    RandomSkips,
    SkipTarget,
    every_other,
    extensions_outcome,
    pattern_outcome,
    search_patterns,
)
from exitgym.envs.skip_core import synthetic_world
from tests.tiny_project import make_tiny_project

SKIPBLOCK, SWITCHABLE = "exitgym/SkipBlock-v0", "exitgym/SwitchableDecision-v0"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world():
    return synthetic_world(num_samples=12, num_layers=4, seed=3)


def _vec(env_id: str, world, n: int = 5):
    return gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point",
                        world=world, reward="accuracy")


def test_action_codes_agree_with_the_environment() -> None:
    from exitgym.envs import skip_block

    assert (sb.SKIP_ATTENTION, sb.SKIP_FFN) == (skip_block.SKIP_ATTENTION, skip_block.SKIP_FFN)
    assert skip_block.SKIP_LAYER == sb.SKIP_ATTENTION | sb.SKIP_FFN


@pytest.mark.parametrize("env_id", [SKIPBLOCK, SWITCHABLE])
def test_a_fixed_pattern_acts_in_both_envs_as_the_pattern_says(world, env_id) -> None:
    """The policy run through ``evaluate`` gives, per sample, the outcome of running the pattern
    directly (``SkipWorld.decide``), and its skip rates are the pattern's."""
    skips = np.array([True, False, False, False, True, True])  # att 2; ffn 3 and 4
    target = SkipTarget(env_id, 4, token_entry=env_id == SWITCHABLE)
    env = _vec(env_id, world)
    result = evaluate(FixedSkips(skips, target), env, sample_ids=np.arange(world.num_samples))
    env.close()
    ids = np.arange(world.num_samples)
    want = world.decide(ids, np.tile(sb.decision_row(skips, True), (ids.size, 1)))
    got = {r.sample_id: r for r in result.records}
    for i in ids:
        assert got[i].correct == bool(want["correct"][i])
        assert got[i].cost == pytest.approx(float(want["cost"][i]), rel=1e-9)
    assert pattern_outcome(world, skips, batch=5) == pytest.approx(
        (result.accuracy, result.cost), rel=1e-9)


def test_extensions_share_the_layers_below_and_equal_running_each_pattern(world) -> None:
    current = np.array([False, False, True, False, False, False])
    ext = extensions_outcome(world, current, batch=5)
    assert sorted(ext) == [0, 1, 3, 4, 5]  # every block the pattern still runs
    for j, outcome in ext.items():
        skips = current.copy()
        skips[j] = True
        assert outcome == pytest.approx(pattern_outcome(world, skips, batch=7), rel=1e-12)


def test_search_is_exhaustive_when_small_and_greedy_otherwise(world, monkeypatch) -> None:
    from itertools import combinations

    found = search_patterns(world, 4)
    assert [k for k, _ in found] == list(range(7)) and not found[0][1].any()
    for k, skips in found[1:]:
        assert skips.sum() == k
        best = max(pattern_outcome(world, np.isin(np.arange(6), c))[0]
                   for c in combinations(range(6), k))
        assert pattern_outcome(world, skips)[0] == pytest.approx(best)
    monkeypatch.setattr(sb, "EXHAUSTIVE_LIMIT", 1)
    greedy = search_patterns(world, 4)
    for (k, before), (_, after) in zip(greedy, greedy[1:], strict=False):
        added = np.flatnonzero(after & ~before)
        assert added.size == 1 and (after | before).sum() == k + 1  # one block more each step
        scores = extensions_outcome(world, before)
        assert scores[int(added[0])][0] == max(s[0] for s in scores.values())


def test_random_skips_repeat_per_input_whatever_the_batch() -> None:
    target = SkipTarget(SWITCHABLE, 7, token_entry=False)
    policy = RandomSkips(0.3, seed=5, target=target)
    a = policy.skips(3, {"sample_id": np.array([4, 9, 2])})
    b = policy.skips(2, {"sample_id": np.array([2, 4])})
    np.testing.assert_array_equal(a[[2, 0]], b)
    many = policy.skips(400, {"sample_id": np.arange(400)})
    assert abs(many.mean() - 0.3) < 0.03
    assert not np.array_equal(many, RandomSkips(0.3, 6, target).skips(
        400, {"sample_id": np.arange(400)}))
    with pytest.raises(ValueError, match="sample id"):
        policy.skips(1, None)


def test_every_other_skips_the_even_layers() -> None:
    target = SkipTarget(SKIPBLOCK, 6, token_entry=False)  # layers 2..6: entries 0..4, 5..9
    even = [True, False, True, False, True]  # layers 2, 4, 6
    np.testing.assert_array_equal(every_other(1, target).pattern, even + [False] * 5)
    np.testing.assert_array_equal(every_other(2, target).pattern, [False] * 5 + even)
    np.testing.assert_array_equal(every_other(3, target).pattern, even + even)
    with pytest.raises(ValueError, match="1 .attention., 2 .FFN. or 3"):
        every_other(4, target)


def test_skip_sides_of_the_findings_never_mix_skipping_and_exiting() -> None:
    from exitgym.reports.findings import BEST_EXIT, BEST_SKIP, _on_side

    assert _on_side(BEST_SKIP, "reinforce-vanilla") and _on_side(BEST_SKIP, "skip-pattern")
    assert not _on_side(BEST_SKIP, "entropy") and not _on_side(BEST_SKIP, "qexit")
    assert _on_side(BEST_EXIT, "entropy") and _on_side(BEST_EXIT, "qexit")
    assert not _on_side(BEST_EXIT, "skip-pattern") and not _on_side(BEST_EXIT, "lexicographic")


def test_configs_refuse_what_skip_envs_cannot_do() -> None:
    from exitgym.experiments.configs import CompareConfig, TrainConfig

    with pytest.raises(ValueError, match="no skip decisions"):
        CompareConfig(env=SKIPBLOCK, consistentee=(0.5,))
    with pytest.raises(ValueError, match="one decision long"):
        TrainConfig(env=SWITCHABLE, dense=True)
    assert "dense" not in TrainConfig(env=SWITCHABLE).env_spec().kwargs


def test_full_depth_quality_is_the_last_heads_loss_or_error() -> None:
    from exitgym.agents.lexicographic import full_depth_quality
    from exitgym.data.synthetic import synthetic_cache

    cache = synthetic_cache(num_samples=30, num_layers=3, seed=1)
    z = cache.logits[:, -1].astype(np.float64)
    ce = np.log(np.exp(z).sum(1)) - z[np.arange(30), cache.labels]
    assert full_depth_quality(cache) == pytest.approx(ce.mean(), rel=1e-9)
    assert full_depth_quality(cache, "accuracy") == pytest.approx(1 - cache.correct[:, -1].mean())


@pytest.fixture(scope="module")
def skip_compared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One skip comparison of every kind of row on the tiny task (two seeds, few updates)."""
    from exitgym.cli import main

    root = tmp_path_factory.mktemp("skipcmp")
    names = make_tiny_project(root)
    out = root / "cmp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EXITGYM_CACHE", str(tmp_path_factory.getbasetemp() / "exitgym-cache"))
        code = main(["compare", "--env", SKIPBLOCK, "--task", names["task"], "--backbone",
                     names["backbone"], "--heads", "joint", "--skip-prob", "0.15",
                     "--max-length", "16", "--steps", "4", "--batch-size", "8", "--num-envs",
                     "8", "--rewards", "vanilla", "--alphas", "0.1,1", "--drops", "0.1",
                     "--rules", "entropy", "--sb3", "ppo", "--sb3-steps", "128",
                     "--sb3-n-steps", "16", "--seeds", "0,1", "--out", str(out)])
    assert code == 0
    return {"out": out, "summary": json.loads((out / "summary.json").read_text())}


def test_skip_compare_reports_learned_fixed_and_exit_rows(skip_compared) -> None:
    summary = skip_compared["summary"]
    assert summary["meta"]["env"] == SKIPBLOCK
    methods = {r["method"] for r in summary["rows"]}
    assert {"reinforce-vanilla", "lexicographic", "ppo-vanilla", "skip-pattern", "skip-every-other",
            "skip-random", "static", "random", "entropy", "full-depth"} <= methods
    assert not any(m.endswith("-greedy") for m in methods)  # skip policies: greedy only
    pattern = {r["knob"]: r for r in summary["rows"] if r["method"] == "skip-pattern"}
    assert sorted(pattern) == [0.0, 1.0, 2.0, 3.0, 4.0]  # k blocks, 3 layers: 4 blocks
    full = next(r for r in summary["rows"] if r["method"] == "full-depth")
    assert pattern[0.0]["accuracy"] == pytest.approx(full["accuracy"])  # k = 0 runs everything
    assert pattern[0.0]["cost"] == pytest.approx(1.0)
    assert pattern[4.0]["cost"] < pattern[0.0]["cost"]
    random_seeds = {r["seed"] for r in summary["rows"] if r["method"] == "skip-random"}
    assert random_seeds == {0, 1}  # seeded baselines once per seed
    table_methods = {r["method"] for r in summary["budget_table"]}
    assert {"skip-pattern", "static"} <= table_methods
    assert {f["finding"] for f in summary["findings"]} >= {"S1", "S3"}
    for f in summary["findings"]:
        if f["reference"] == "best-exit":
            assert not f["reference_method"].startswith("skip-")


def test_replay_verifies_every_skip_comparison_file(skip_compared) -> None:
    from exitgym.cli import main

    assert main(["replay", str(skip_compared["out"]), "--verify"]) == 0


def test_demo_skip_runs_the_skip_comparison_and_verifies_it(tmp_path: Path, capsys) -> None:
    """``demo --skip`` is ``compare --env`` with the demo's skip presets (joint heads trained
    with block skipping), then ``replay --verify`` of every file."""
    from exitgym.cli import main
    from exitgym.cli.demo import SKIP_DATA, SKIP_TARGETS

    names = make_tiny_project(tmp_path)
    out = tmp_path / "demo"
    assert main(["demo", "--skip", SWITCHABLE, "--task", names["task"], "--backbone",
                 names["backbone"], "--seeds", "0", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["env"] == SWITCHABLE and config["targets"] == list(SKIP_TARGETS)
    assert {k: config[k] for k in SKIP_DATA} == SKIP_DATA
    report = (out / "report.md").read_text()
    assert "demo --skip" in report and "Replay verification" in report
    assert "skip-pattern" in capsys.readouterr().out


def test_tune_refuses_a_skip_comparison_before_starting_ray(capsys) -> None:
    from exitgym.cli import main
    from exitgym.experiments.matrix import TUNE_ENV

    assert main(["compare", "--env", SKIPBLOCK, "--engine", "tune", "--out", "unused"]) == 2
    assert TUNE_ENV in capsys.readouterr().err
