"""Config dataclasses as command lines and JSON (exitgym.utils.configs), and the shared DataConfig.

Every ``exitgym`` command is generated from its arguments dataclass; these tests pin the
generation rules, that the documented commands still map onto the same configs, and that runs
recorded with the flat config layout (before :class:`DataConfig` was nested) still load.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from exitgym.cli import build_parser
from exitgym.cli.compare import CompareArgs
from exitgym.cli.prepare import PrepareArgs
from exitgym.cli.train import TrainArgs
from exitgym.data.config import COLUMN_DEFAULTS, DataConfig
from exitgym.data.prepare import PrepareConfig
from exitgym.experiments.configs import CompareConfig, TrainConfig
from exitgym.experiments.policies import run_env_spec
from exitgym.experiments.runs import RunDir, RunError
from exitgym.experiments.training import train
from exitgym.utils.configs import add_arguments, flatten, from_args, from_dict, nest, option
from tests.test_runs import CACHES, CFG, Interrupt


@dataclass(frozen=True)
class Inner:
    """A nested group of options."""

    size: int = option(3, minimum=1)
    """How many."""
    mode: str = option("a", choices=("a", "b"))
    """Which mode (fixed choices)."""


@dataclass(frozen=True)
class Toy:
    """Every kind of field the generator supports."""

    path: str
    """Where (positional)."""
    inner: Inner = field(default_factory=Inner)
    """Flattened into --size / --mode."""
    names: tuple[str, ...] = option(("x",), choices=lambda: ["x", "y", "z"])
    """Names from a registry."""
    weights: tuple[float, ...] = option((0.5,), minimum=0)
    """Non-negative weights."""
    limit: int | None = None
    """Optional limit (100% documented)."""
    quick: bool = False
    """A flag that is off by default."""
    check: bool = True
    """A flag that is on by default."""


def _parse(cls: type, argv: list[str]) -> Any:
    parser = argparse.ArgumentParser(prog="toy")
    add_arguments(parser, cls)
    return from_args(cls, parser.parse_args(argv))


def test_flags_follow_names_types_and_docstrings() -> None:
    assert _parse(Toy, ["p"]) == Toy("p")
    got = _parse(Toy, ["p", "--size", "7", "--mode", "b", "--names", "y,z", "--weights", "1",
                       "2.5", "--limit", "4", "--quick", "--no-check"])
    assert got == Toy("p", Inner(7, "b"), ("y", "z"), (1.0, 2.5), 4, True, False)
    parser = argparse.ArgumentParser(prog="toy")
    add_arguments(parser, Toy)
    text = parser.format_help()
    for needle in ("Where (positional).", "--size SIZE", "How many. (default: 3)", "{a,b}",
                   "Names from a registry. (comma-separated; allowed: x, y, z; default: x)",
                   "--no-check",
                   "Optional limit (100% documented)."):
        assert needle in " ".join(text.split()), needle


@dataclass(frozen=True)
class Described:
    """Choices that are numbers, and choices with descriptions."""

    level: int = option(1, choices=(1, 2))
    """A number from a fixed set."""
    method: str = option("fast", choices=lambda: {"fast": "one pass", "slow": "two passes"})
    """A method from a registry with descriptions."""


def test_typed_choices_and_described_choices() -> None:
    assert _parse(Described, ["--level", "2", "--method", "slow"]) == Described(2, "slow")
    parser = argparse.ArgumentParser(prog="toy")
    add_arguments(parser, Described)
    text = " ".join(parser.format_help().split())
    assert "allowed: 1, 2; default: 1" in text
    assert "allowed: fast (one pass); slow (two passes); default: fast" in text
    with pytest.raises(SystemExit):
        _parse(Described, ["--level", "3"])
    with pytest.raises(SystemExit):
        _parse(Described, ["--method", "medium"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--size", "0"], "--size must be >= 1, got 0 (must be a positive integer)"),
    (["--size", "two"], "--size: invalid int value 'two' (must be an integer)"),
    (["--mode", "c"], "argument --mode: invalid choice: 'c'"),
    (["--names", "x,w"], "--names: unknown value 'w'; allowed: x, y, z"),
    (["--weights", "1,nan"], "--weights must be >= 0, got nan"),
    (["--weights", "1,b"], "--weights: 'b' is not a valid float (must be a number)"),
    (["--weights", ","], "--weights needs at least one value (comma-separated)"),
])
def test_bad_values_fail_while_parsing_naming_the_flag(argv: list[str], message: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parse(Toy, ["p", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_two_fields_with_one_flag_are_refused() -> None:
    @dataclass(frozen=True)
    class Clash:
        inner: Inner = field(default_factory=Inner)
        size: int = 1

    with pytest.raises(ValueError, match="two fields give the flag --size"):
        add_arguments(argparse.ArgumentParser(), Clash)


def _command(name: str, cls: type, argv: list[str]) -> Any:
    return from_args(cls, build_parser([name]).parse_args([name, *argv]))


def test_documented_commands_map_onto_the_same_configs() -> None:
    train_args = _command("train", TrainArgs, [
        "--env", "exitgym/EarlyExit-v0", "--agent", "reinforce", "--reward", "hardness",
        "--alpha", "0.5", "--seed", "0"])
    assert train_args == TrainArgs(TrainConfig(reward="hardness", alpha=0.5, seed=0))
    compare_args = _command("compare", CompareArgs, [
        "--task", "rt-polarity", "--rewards", "vanilla,hardness", "--alphas", "0.2,0.5,1.0",
        "--rules", "entropy,patience,maxprob,qexit,oracle", "--seeds", "0,1,2", "--out",
        "runs/compare"])
    assert compare_args == CompareArgs(CompareConfig(
        alphas=(0.2, 0.5, 1.0), seeds=(0, 1, 2)), out="runs/compare")
    prepare_args = _command("prepare", PrepareArgs, ["--task", "rt-polarity", "--backbone",
                                                     "minilm-l6", "--splits", "train", "test"])
    assert prepare_args == PrepareArgs(PrepareConfig(), splits=("train", "test"))
    assert _command("prepare", PrepareArgs, ["--splits", "train,test"]) == prepare_args
    cache_flags = ["--task", "t.csv", "--backbone", "bb", "--heads", "two-stage",
                   "--max-samples", "9", "--max-length", "16"]
    data = DataConfig("t.csv", "bb", "two-stage", 9, 16)
    assert _command("train", TrainArgs, cache_flags).config.data == data
    assert _command("compare", CompareArgs, cache_flags).config.data == data
    assert _command("prepare", PrepareArgs, cache_flags).config == PrepareConfig(**asdict(data))


def test_env_spec_json_keeps_its_stored_form() -> None:
    cfg = TrainConfig(data=DataConfig(max_samples=60, max_length=16), alpha=0.5)
    stored = {"env_id": "exitgym/EarlyExit-v0", "task": "rt-polarity", "backbone": "minilm-l6",
              "heads": "two-stage", "split": "test",
              "prepare": {"max_length": 16, "max_samples": 60},
              "kwargs": {"reward": "hardness", "alpha": 0.5, "dense": False,
                         "policy_flops": 0.0, "observation": "features"}}
    assert json.dumps(cfg.env_spec("test").to_json()) == json.dumps(stored)
    assert TrainConfig().env_spec().to_json()["prepare"] == {"max_length": 128}


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """A config.json ``config`` in the layout written before DataConfig was nested."""
    data = dict(config.pop("data"))
    return {"env": config.pop("env"), "agent": config.pop("agent"), "task": data.pop("task"),
            "backbone": data.pop("backbone"), "heads": data.pop("heads"), **config, **data}


def test_json_configs_load_nested_or_in_the_old_flat_layout() -> None:
    cfg = TrainConfig(data=DataConfig(task="t.csv", max_samples=5), alpha=0.3, steps=7)
    nested = json.loads(json.dumps(asdict(cfg)))
    flat = _flat(dict(nested))
    assert from_dict(TrainConfig, nested) == from_dict(TrainConfig, flat) == cfg
    assert nest(TrainConfig, flat) == nested
    # Runs recorded before the data columns were options load with the default columns.
    old = {k: v for k, v in flat.items() if not k.endswith("_column")}
    assert from_dict(TrainConfig, old) == cfg
    assert flatten(cfg)["task"] == "t.csv" and "data" not in flatten(cfg)
    compare = CompareConfig(alphas=(0.1,), seeds=(1, 2))
    assert from_dict(CompareConfig, json.loads(json.dumps(asdict(compare)))) == compare
    with pytest.raises(TypeError):
        from_dict(TrainConfig, {**nested, "nope": 1})


def _stop_after(update: int) -> Callable[[int], None]:
    """An ``after_update`` hook that interrupts training after ``update`` updates."""

    def hook(done: int) -> None:
        if done == update:
            raise Interrupt

    return hook


LEGACY_KEYS = {"env", "agent", "task", "backbone", "heads", "reward", "alpha", "observation",
               "dense", "seed", "steps", "batch_size", "num_envs", "lr", "baseline",
               "checkpoint_every", "train_split", "eval_split", "max_samples", "max_length"}
"""The ``config`` keys of a run's config.json before DataConfig existed."""


def test_runs_recorded_with_the_flat_layout_resume_and_rebuild_their_env(tmp_path: Path) -> None:
    run, options = tmp_path / "run", {"caches": CACHES, "progress": False, "plots": False}
    with pytest.raises(Interrupt):
        train(CFG, run, after_update=_stop_after(4), **options)
    stored = RunDir.open(run).config["config"]
    # written flat, as before (plus target_cost, allowed_drop, n_steps, multiplier,
    # cost_conditioned, the data columns, allow_suspect_labels and device, options since)
    assert set(stored) == LEGACY_KEYS | {"target_cost", "allowed_drop", "n_steps", "multiplier",
                                         "cost_conditioned", "allow_suspect_labels", "skip_prob",
                                         "device"} | set(
                                             COLUMN_DEFAULTS)
    # a run recorded before target_cost existed resumes too (the field takes its default)
    config_file = run / "config.json"
    record = json.loads(config_file.read_text())
    del record["config"]["target_cost"]
    config_file.write_text(json.dumps(record))
    state = RunDir.open(run).state  # (and before config.json was checksummed)
    RunDir.open(run).update_state(sha256={k: v for k, v in state["sha256"].items()
                                          if k != "config.json"})
    changed = TrainConfig(**{**CFG.__dict__, "alpha": 0.9})
    with pytest.raises(RunError, match="differ from the run's config.json"):
        train(changed, run, resume=True, **options)
    assert train(CFG, run, resume=True, **options).run.status == "complete"
    assert "task" in RunDir.open(run).config["config"]  # resume keeps the recorded config.json
    (run / "env_spec.json").unlink()  # the fallback reads config.json (a run from before
    state = RunDir.open(run).state  # env_spec.json existed, so without its checksum either)
    RunDir.open(run).update_state(sha256={k: v for k, v in state["sha256"].items()
                                          if k != "env_spec.json"})
    assert run_env_spec(RunDir.open(run)) == CFG.env_spec()
