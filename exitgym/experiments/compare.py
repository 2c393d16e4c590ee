"""``compare``: train the RL agents over reward shapes × α × seeds, sweep the exit rules, report.

Layout of the output directory::

    runs/<agent>-<reward>-a<α>-s<seed>/   one complete training run each (experiments.training)
    trajectories/<method>-k<knob>-s<seed>.parquet   every rule / baseline evaluation episode
    summary.json  pareto.png  report.md    (exitgym.reports.comparison)
    compare_state.json                    status; ``complete`` only when everything is written

Everything is evaluated greedily on the evaluation split (``test``) with every episode recorded, so
``exitgym replay <out> --verify`` re-executes the whole comparison. Rules whose outcome does not
depend on a seed (entropy, maxprob, patience, static, oracle) are evaluated once, with the first
seed; trained baselines (PALBERT's Q-exit, BERxiT) and random exits once per seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from exitgym.experiments.runs import RunDir, write_config
from exitgym.experiments.training import (
    EnvSpec,
    TrainConfig,
    evaluate_and_record,
    one_torch_thread,
    train,
)
from exitgym.reports.comparison import FULL_DEPTH, ORACLE, make_row, row_from_eval, write_report

SEEDLESS_RULES = ("entropy", "maxprob", "patience", "static", "oracle")
"""Rules whose decisions do not depend on a seed: evaluated once."""


def _palbert(train_cache: Any, seed: int) -> list[tuple[Any, float]]:
    from exitgym.agents.palbert import Palbert, PalbertConfig

    model = Palbert.fit(train_cache, PalbertConfig(seed=seed), seed=seed)
    return [(model.with_knob(q), q) for q in model.default_grid(train_cache.num_layers)]


def _berxit(train_cache: Any, seed: int) -> list[tuple[Any, float]]:
    from exitgym.agents.berxit import Berxit, BerxitConfig

    model = Berxit.fit(train_cache, BerxitConfig(seed=seed))
    return [(model.with_knob(t), t) for t in model.default_grid(train_cache.num_layers)]


def _rule(name: str) -> Callable[[Any, int], list[tuple[Any, float | None]]]:
    def sweep(train_cache: Any, seed: int) -> list[tuple[Any, float | None]]:
        from exitgym.agents.rules import make_rule

        base = make_rule(name, seed=seed) if name == "random" else make_rule(name)
        return [(r, getattr(r, r.knob) if r.knob else None) for r in base.sweep(
            train_cache.num_layers)]

    return sweep


BASELINES: dict[str, Callable[[Any, int], list[tuple[Any, float | None]]]] = {
    "entropy": _rule("entropy"), "maxprob": _rule("maxprob"), "patience": _rule("patience"),
    "static": _rule("static"), "random": _rule("random"), "qexit": _palbert, "berxit": _berxit,
}
"""Non-RL methods: name -> ``sweep(train_cache, seed)`` returning (policy, knob) pairs.
``oracle`` is always evaluated (it is a reference row)."""
RULE_CHOICES = (*BASELINES, "oracle")


@dataclass(frozen=True)
class CompareConfig:
    """What ``exitgym compare`` trains and evaluates."""

    task: str = "rt-polarity"
    """Task registry name or local data file."""
    backbone: str = "minilm-l6"
    """Backbone short name or local directory."""
    heads: str = "frozen"
    """Prepared heads mode."""
    agent: str = "reinforce"
    """RL agent trained per reward shape and α (REINFORCE family)."""
    rewards: tuple[str, ...] = ("vanilla", "hardness")
    """Reward shapes compared."""
    alphas: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0)
    """Cost weights α: each traces one point of an agent's curve."""
    rules: tuple[str, ...] = ("entropy", "patience", "maxprob", "qexit", "oracle")
    """Exit rules and trained baselines swept over their default knob grids."""
    seeds: tuple[int, ...] = (0,)
    """Seeds of every trained method."""
    steps: int = 300
    """REINFORCE updates per trained agent."""
    batch_size: int = 64
    """Episodes per update."""
    num_envs: int = 64
    """Vector-env slots (training and evaluation)."""
    lr: float = 3e-3
    """Learning rate of the agents."""
    observation: str = "features"
    """Observation of the RL agents."""
    train_split: str = "train"
    """Split the agents and trained baselines learn on."""
    eval_split: str = "test"
    """Split everything is evaluated and recorded on."""
    max_samples: int | None = None
    """Prepare option: first n rows of every split (quick runs)."""
    max_length: int = 128
    """Prepare option: tokenizer truncation length."""

    def __post_init__(self) -> None:
        bad = [r for r in self.rules if r not in RULE_CHOICES]
        if bad:
            raise ValueError(f"unknown rules {bad}; allowed: {list(RULE_CHOICES)}")
        if not self.seeds:
            raise ValueError("compare needs at least one seed")

    def train_config(self, reward: str, alpha: float, seed: int) -> TrainConfig:
        return TrainConfig(agent=self.agent, task=self.task, backbone=self.backbone,
                           heads=self.heads, reward=reward, alpha=alpha,
                           observation=self.observation, seed=seed, steps=self.steps,
                           batch_size=self.batch_size, num_envs=self.num_envs, lr=self.lr,
                           checkpoint_every=max(1, self.steps), train_split=self.train_split,
                           eval_split=self.eval_split, max_samples=self.max_samples,
                           max_length=self.max_length)

    def rule_spec(self, observation: str) -> EnvSpec:
        """Env of the rules: evaluation split, the observation the rule reads, no policy cost."""
        base = self.train_config("vanilla", 0.2, 0).env_spec(self.eval_split)
        return base.with_kwargs(observation=observation, alpha=None)


@dataclass(frozen=True)
class CompareResult:
    """What :func:`compare` wrote."""

    out: Path
    """Output directory."""
    summary: dict[str, Any]
    """The ``summary.json`` payload."""
    timings: dict[str, float]
    """Seconds per phase."""


def _slug_knob(knob: float | None) -> str:
    return "none" if knob is None else f"{knob:g}"


def compare(config: CompareConfig, out: str | Path, *, caches: dict[str, Any] | None = None,
            progress: bool = True, sections: tuple[str, ...] = ()) -> CompareResult:
    """Train and evaluate everything in ``config``; write the report into ``out``."""
    out = Path(out)
    state = RunDir.create(out)
    timings: dict[str, float] = {}
    tic = time.perf_counter()
    try:
        caches = dict(caches or {})
        for split in (config.train_split, config.eval_split):
            if split not in caches:
                caches[split] = config.train_config("vanilla", 0.2, 0).env_spec(split).cache(
                    progress=progress)
        write_config(state, _plain(asdict(config)), caches=caches, extra={"command": "compare"})
        timings["caches"] = time.perf_counter() - tic
        with one_torch_thread():  # small MLPs: one thread is faster on a busy CPU
            rows = _train_agents(config, out, caches, progress, timings)
            rows += _baselines(config, out, caches, progress, timings)
        test = caches[config.eval_split]
        rows.append(make_row(FULL_DEPTH, None, config.seeds[0],
                             float(test.correct[:, -1].mean()), 1.0, float(test.num_layers)))
        tic = time.perf_counter()
        title = (f"{config.task} × {config.backbone} ({config.heads} heads): "
                 f"accuracy vs cost on {config.eval_split}")
        meta = {"task": config.task, "backbone": config.backbone, "heads": config.heads,
                "split": config.eval_split, "samples": test.num_samples,
                "layers": test.num_layers, "seeds": list(config.seeds),
                "updates_per_agent": config.steps}
        summary = write_report(out, rows, title, meta, sections)
        timings["report"] = time.perf_counter() - tic
        state.mark_complete(timings=timings)
        return CompareResult(out, summary, timings)
    except KeyboardInterrupt:
        state.set_status("interrupted")
        raise
    except Exception as err:
        state.set_status("failed", error=f"{type(err).__name__}: {err}")
        raise


def _bar(total: int, desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress)


def _train_agents(config: CompareConfig, out: Path, caches: dict[str, Any], progress: bool,
                  timings: dict[str, float]) -> list[dict[str, Any]]:
    tic = time.perf_counter()
    rows = []
    jobs = [(r, a, s) for r in config.rewards for a in config.alphas for s in config.seeds]
    with _bar(len(jobs), f"train {config.agent}", progress) as bar:
        for reward, alpha, seed in jobs:
            cfg = config.train_config(reward, alpha, seed)
            name = f"{config.agent}-{reward}-a{alpha:g}-s{seed}"
            bar.set_postfix_str(name)
            result = train(cfg, out / "runs" / name, caches=caches, progress=False,
                           plots=False)
            rows.append(row_from_eval(f"{config.agent}-{reward}", alpha, seed, result.eval))
            bar.update(1)
    timings["train"] = time.perf_counter() - tic
    return rows


def _baselines(config: CompareConfig, out: Path, caches: dict[str, Any], progress: bool,
               timings: dict[str, float]) -> list[dict[str, Any]]:
    from exitgym.agents.rules import OracleExit

    tic = time.perf_counter()
    train_cache, test = caches[config.train_split], caches[config.eval_split]
    jobs: list[tuple[str, int]] = []
    for name in config.rules:
        if name == "oracle":
            continue
        seeds = config.seeds[:1] if name in SEEDLESS_RULES else config.seeds
        jobs += [(name, s) for s in seeds]
    rows = []
    with _bar(len(jobs) + 1, "baselines", progress) as bar:
        for name, seed in [*jobs, (ORACLE, config.seeds[0])]:
            bar.set_postfix_str(f"{name} seed {seed}")
            sweep = [(OracleExit(test), None)] if name == ORACLE else BASELINES[name](
                train_cache, seed)
            for policy, knob in sweep:
                spec = config.rule_spec(policy.required_observation)
                result = evaluate_and_record(
                    policy, spec, out, f"{name}-k{_slug_knob(knob)}-s{seed}", method=name,
                    knob=knob, seed=seed, num_envs=config.num_envs, cache=test)
                rows.append(row_from_eval(name, knob, seed, result))
            bar.update(1)
    timings["baselines"] = time.perf_counter() - tic
    return rows


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def with_overrides(config: CompareConfig, **overrides: Any) -> CompareConfig:
    """``config`` with the non-None overrides applied (CLI helper)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
