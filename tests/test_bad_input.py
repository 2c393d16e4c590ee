"""Bad input at every entry point: the error names the problem and what is allowed, and nothing
already written is lost.

Entry points: env constructors and ``reset`` options, actions of the wrong type / shape / value
(single and vector envs, early exit and skip envs), NaN, task files with missing columns, empty
or missing labels and unsupported types, the backbone API, ``infer``, and the command line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import exitgym  # noqa: F401  (registers the ids)
from exitgym.backbones.layer_cache import LayerCache
from exitgym.cli import main
from exitgym.data.synthetic import synthetic_cache
from exitgym.data.tasks import load_task
from exitgym.envs.early_exit import EarlyExitEnv
from exitgym.envs.skip_block import SkipBlockEnv
from exitgym.envs.switchable_decision import SwitchableDecisionEnv
from exitgym.experiments.runs import RunDir, RunError
from tests.test_skip_live import tiny_world

CACHE = synthetic_cache(num_samples=16, num_layers=4, num_labels=3, hidden_size=8)
EXIT_ACTIONS = r"allowed: 0 \(continue\) or 1 \(exit\)"


def nan_cache() -> LayerCache:
    logits = np.array(CACHE.logits)
    logits[3, 1, 0] = np.nan
    return LayerCache(pooled=CACHE.pooled, logits=logits, labels=CACHE.labels,
                      lengths=CACHE.lengths, flops_embed=CACHE.flops_embed,
                      flops_layer=CACHE.flops_layer, flops_head=CACHE.flops_head)


ENV_KWARGS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"observation": "bogus"}, ValueError, r"unknown observation view.*registered views"),
    ({"observation": ""}, ValueError, "non-empty string like 'features'"),
    ({"reward": "bogus"}, ValueError, r"unknown reward 'bogus'; registered rewards"),
    ({"alpha": float("nan")}, ValueError, "alpha must be a finite number >= 0"),
    ({"alpha": -0.5}, ValueError, "alpha must be a finite number >= 0"),
    ({"policy_flops": -1.0}, ValueError, "policy_flops must be a finite number >= 0"),
    ({"policy_flops": float("nan")}, ValueError, "policy_flops must be a finite number >= 0"),
    ({"render_mode": "human"}, ValueError,
     r"render_mode='human' is not supported; (allowed|use None)"),
    ({"cache": "not a cache"}, TypeError, "cache must be a LayerCache"),
    ({"cache": nan_cache()}, ValueError, "non-finite"),
    ({"obsevation": "features"}, (TypeError, ValueError), "obsevation"),  # a typo is named
]


@pytest.mark.parametrize(("kwargs", "error", "match"), ENV_KWARGS,
                         ids=[str(sorted(k)) + str(i) for i, (k, _, _) in enumerate(ENV_KWARGS)])
@pytest.mark.parametrize("vector", [False, True])
def test_early_exit_kwargs(kwargs: dict[str, Any], error: Any, match: str, vector: bool) -> None:
    full = {"cache": CACHE, **kwargs}
    with pytest.raises(error, match=match):
        if vector:
            gym.make_vec("exitgym/EarlyExit-v0", num_envs=3,
                         vectorization_mode="vector_entry_point", **full)
        else:
            EarlyExitEnv(**full)


@pytest.mark.parametrize("options", [{"sample_id": 16}, {"sample_id": -1}, {"sample_id": 1.5},
                                     {"sample_id": "3"}])
def test_reset_sample_id_names_the_range(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must be (an integer )?in \[0, 15\]"):
        EarlyExitEnv(cache=CACHE).reset(options=options)


def test_unknown_reset_option_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown reset options \['sampleid'\]"):
        EarlyExitEnv(cache=CACHE).reset(options={"sampleid": 1})


@pytest.mark.parametrize("action", [2, -1, 0.5, "exit", None, np.array([0, 1]), np.nan,
                                    np.float32(1.0), [1]])
def test_early_exit_bad_actions(action: Any) -> None:
    env = EarlyExitEnv(cache=CACHE)
    env.reset(seed=0)
    obs_before = env.unwrapped._l
    with pytest.raises(ValueError, match=EXIT_ACTIONS):
        env.step(action)
    assert env.unwrapped._l == obs_before, "a refused action must not advance the episode"
    env.step(0)  # the episode goes on normally


@pytest.mark.parametrize(("actions", "match"), [
    (np.array([0, 1]), r"shape \(3,\)"),
    (np.array([[0, 1, 0]]), r"shape \(3,\)"),
    (np.array([0.0, 1.0, 0.0]), r"integer array of shape \(3,\)"),
    (np.array([0, 2, 1]), r"0 \(continue\) or 1 \(exit\)"),
    (np.array([0, -1, 1]), r"0 \(continue\) or 1 \(exit\)"),
    (np.array([np.nan, 0, 1]), r"integer array"),
])
def test_vector_bad_actions(actions: np.ndarray, match: str) -> None:
    env = gym.make_vec("exitgym/EarlyExit-v0", num_envs=3, vectorization_mode="vector_entry_point",
                       cache=CACHE)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(actions)


@pytest.fixture(scope="module")
def world() -> Any:
    return tiny_world()


@pytest.mark.parametrize(("options", "action", "match"), [
    ({}, 4, r"\b0\b.*\b3\b"),
    ({}, -1, r"\b0\b.*\b3\b"),
    ({}, 1.5, r"\b0\b.*\b3\b"),
    ({"allow_exit": True}, 5, r"\b0\b.*\b4\b"),
    ({"token_strategy": True}, np.array([0, 7]), "MultiDiscrete|token"),
    ({"token_strategy": True}, 0, r"allowed: a pair \[block action in 0\.\.3, token strategy"),
])
def test_skip_block_bad_actions(world: Any, options: dict[str, Any], action: Any,
                                match: str) -> None:
    env = SkipBlockEnv(world=world, **options)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


@pytest.mark.parametrize("action", [np.zeros(3, dtype=np.int64), np.full(7, 2), np.zeros(7) + 0.5])
def test_switchable_decision_bad_actions(world: Any, action: np.ndarray) -> None:
    env = SwitchableDecisionEnv(world=world)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"MultiDiscrete|shape|allowed"):
        env.step(action)


def test_skip_envs_name_bad_construction(world: Any) -> None:
    with pytest.raises(ValueError, match="both as names .* or both as objects"):
        SkipBlockEnv(backbone=world.executor.backbone, heads="frozen")
    with pytest.raises(ValueError, match="pass inputs="):
        SkipBlockEnv(backbone=world.executor.backbone, heads=world.executor.heads)
    with pytest.raises(ValueError, match="policy_flops"):
        SkipBlockEnv(world=world, policy_flops=float("nan"))


# ---- data -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "suffix", "match"), [
    ("sentence,label\nfine,pos\n", ".csv", r"no column for text_column='text'; available"),
    ("text,target\nfine,pos\n", ".csv", r"no column for label_column='label'; available"),
    ("text,label\nfine,pos\nbad,\nok,neg\n", ".csv", r"rows have an empty text or label"),
    ("text,label\n,pos\nok,neg\n", ".csv", r"rows have an empty text or label"),
    ("text,label\n", ".csv", r"(?i)no rows|empty"),
    ("text\tlabel\n", ".xlsx", r"unsupported file type '\.xlsx'"),
])
def test_task_files_name_the_problem(tmp_path: Path, content: str, suffix: str,
                                     match: str) -> None:
    path = tmp_path / f"task{suffix}"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_task(str(path))


def test_unknown_task_lists_the_registry() -> None:
    with pytest.raises(KeyError, match="rt-polarity"):
        load_task("no-such-task")


# ---- command line ---------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "match"), [
    (["bench", "--num-texts", "0"], "must be a positive integer"),
    (["bench", "--repeats", "many"], "must be an integer"),
    (["train", "--agent", "bogus"], r"--agent: unknown value 'bogus'; allowed: .*reinforce"),
    (["train", "--reward", "bogus"], r"--reward: unknown value 'bogus'; allowed: .*vanilla"),
    (["train", "--alpha", "abc"], "invalid float value"),
    (["train", "--eval-split", "dev"], r"invalid choice: 'dev'"),
    (["prepare", "--heads", "bogus"], r"invalid choice: 'bogus'"),
    (["nosuchcommand"], r"invalid choice: 'nosuchcommand'"),
])
def test_cli_names_bad_flags(argv: list[str], match: str, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a run that wrongly started would write here, not in the repo
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert __import__("re").search(match, capsys.readouterr().err), argv
    assert not any(tmp_path.iterdir()), "a refused command must not write anything"


# ---- nothing already written is lost --------------------------------------------------------
def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def complete_run(path: Path) -> Path:
    run = RunDir.create(path)
    run.write_json("config.json", {"config": {"agent": "reinforce"}})
    run.write_text("report.md", "# results that took an hour\n")
    run.mark_complete()
    return path


@pytest.mark.parametrize(("attempt", "message"), [
    (lambda out: RunDir.create(out), "already holds a run (status 'complete')"),
    (lambda out: main(["train", "--out", str(out), "--steps", "1"]),
     "already holds a run (status 'complete')"),
    (lambda out: main(["bench", "--out", str(out), "--num-texts", "-3"]),
     "--num-texts must be >= 1"),
])
def test_existing_results_survive_a_refused_command(tmp_path: Path, capsys,
                                                    attempt: Callable[[Path], Any],
                                                    message: str) -> None:
    """Each attempt is refused (a RunError, or exit code 2 with the reason on stderr; a success
    or a bare ``sys.exit()`` is not a refusal) and the run on disk is left byte for byte."""
    out = complete_run(tmp_path / "run")
    (out / "bench.json").write_text('{"schema": "exitgym-bench/1"}\n')
    before = digest(out)
    try:
        code, text = attempt(out), capsys.readouterr().err
    except RunError as err:
        code, text = 2, str(err)
    except SystemExit as err:  # argparse-style exits must carry the error code too
        code, text = err.code, capsys.readouterr().err
    assert code == 2 and message in text, (code, text)
    assert digest(out) == before
