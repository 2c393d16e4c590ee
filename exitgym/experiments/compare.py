"""``compare``: train the RL agents over reward shapes × α (or target costs) × seeds, sweep the
exit rules, report.

Layout of the output directory::

    runs/<agent>-<reward>-a<α>-s<seed>/   one complete training run each (experiments.training;
                                          b<target> for budget-targeted agents, ``--targets``)
    trajectories/<method>-k<knob>-s<seed>.parquet   every rule / baseline evaluation episode
    summary.json  pareto.png  report.md    (exitgym.reports.comparison)
    run_state.json  manifest.json         status; ``complete`` only when everything is written

An unfinished comparison in ``out`` is resumed by the same call (its finished training runs are
skipped; :mod:`exitgym.experiments.compare_runs`).

Protocol (docs/design.md §5): every method, at every knob value and seed, is evaluated greedily
by the same code (:func:`~exitgym.agents.rollout.evaluate`) on the **selection** split
(``validation``; only its mean cost and accuracy are kept, to choose knobs) and on the
**evaluation** split (``test``; every episode recorded, so ``exitgym replay <out> --verify``
re-executes the whole reported comparison). The budget table (:mod:`exitgym.reports.budget`)
picks each method's point per FLOPs budget on validation and reports it on test, against static
truncation with a paired bootstrap CI. Static truncation and random exit are always evaluated.
Rules whose outcome does not depend on a seed (``Method.seeded`` False, e.g. entropy, patience) are
evaluated once, with the first seed; the others (random exits, the fitted baselines PALBERT
Q-exit and BERxiT) once per seed. Every policy is charged its own decision FLOPs
(``policy_flops``: the RL policies' and fitted baselines' networks; rules 0).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitgym.agents.registry import lookup
from exitgym.experiments.binding import check_cache
from exitgym.experiments.collect import Collected, select_and_collect, selection_env
from exitgym.experiments.compare_runs import open_comparison, read_back, resume_note, run_complete
from exitgym.experiments.configs import LEXICOGRAPHIC, CompareConfig, TrainConfig
from exitgym.experiments.env_spec import SKIP_ENVS, EnvSpec
from exitgym.experiments.readings import GREEDY_SUFFIX, readings, record_name, spec_for
from exitgym.experiments.runs import CONFIG_FILE, STATE_FILE, write_config
from exitgym.experiments.skip_compare import skip_baselines, skip_readings
from exitgym.experiments.training import train
from exitgym.experiments.trajectories import evaluate_and_record
from exitgym.reports.budget import budget_table, smallest_detectable, target_costs
from exitgym.reports.categories import categories
from exitgym.reports.comparison import FULL_DEPTH, ORACLE, make_row, row_from_eval, write_report
from exitgym.reports.findings import FINDINGS, SKIP_FINDINGS, findings
from exitgym.utils.atomic import jsonable
from exitgym.utils.configs import flatten
from exitgym.utils.threads import one_torch_thread


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
            progress: bool = True, sections: tuple[str, ...] = (),
            overwrite: bool = False, train_all: TrainAll | None = None,
            resume: bool = False) -> CompareResult:
    """Train and evaluate everything in ``config``; write the report into ``out``.

    An unfinished comparison of the same config in ``out`` is continued (its finished training
    runs skipped); ``resume`` insists on one. ``overwrite`` replaces a comparison already there,
    once the new one is complete. ``train_all`` replaces the local training loop (Tune).
    """
    state, previous = open_comparison(config, Path(out), overwrite=overwrite, resume=resume)
    out = state.path  # an --overwrite comparison is written beside the one it replaces
    timings: dict[str, float] = {}
    tic = time.perf_counter()
    with state.status_on_error():
        caches = dict(caches or {})
        for split in (config.train_split, config.selection_split, config.eval_split):
            if split not in caches:
                caches[split] = _split_cache(config, split, progress)
        if previous is not None and state.file(CONFIG_FILE).is_file():
            for split, cache in caches.items():  # resumed on the data it started on
                check_cache(out, split, cache)
        else:
            write_config(state, jsonable(flatten(config)), caches=caches,
                         extra={"command": "compare"})
        timings["caches"] = time.perf_counter() - tic
        found = Collected([], [], [])
        if previous is not None and progress:
            print(resume_note(out, previous, [job.name for job in train_jobs(config)]),
                  flush=True)
        with one_torch_thread():  # small MLPs: one thread is faster on a busy CPU
            _train_agents(config, out, caches, progress, timings, found, train_all)
            _consistentee(config, out, caches, progress, timings, found)
            _baselines(config, out, caches, progress, timings, found)
            if config.env in SKIP_ENVS:
                skip_baselines(config, out, caches, found, progress, timings)
        test = caches[config.eval_split]
        found.rows.append(make_row(FULL_DEPTH, None, config.seeds[0],
                                   float(test.correct[:, -1].mean()), 1.0,
                                   float(test.num_layers)))
        tic = time.perf_counter()
        table = budget_table(found.evaluations, config.seeds, config.budgets,
                             categories=categories({e.method for e in found.evaluations}))
        paired = findings(found.evaluations, config.seeds, config.budgets,
                          table=SKIP_FINDINGS if config.env in SKIP_ENVS else FINDINGS)
        timings["budget_table"] = time.perf_counter() - tic
        tic = time.perf_counter()
        data = config.data
        title = (f"{data.task} × {data.backbone} ({data.heads} heads): "
                 f"accuracy vs cost on {config.eval_split}")
        if config.env in SKIP_ENVS:
            title = f"{config.env}: {title} (exit methods: EarlyExit-v0, same heads)"
        meta = {"env": config.env, "task": data.task, "backbone": data.backbone,
                "heads": data.heads, "split": config.eval_split, "samples": test.num_samples,
                "layers": test.num_layers, "seeds": list(config.seeds),
                "updates_per_agent": config.steps}
        extra = {**_heads_summary(config, caches, progress),
                 "selection_split": config.selection_split, "seeds": list(config.seeds),
                 "budget_table": table, "smallest_detectable": smallest_detectable(table),
                 "findings": paired, "target_costs": target_costs(found.selection_rows),
                 "selection_rows": found.selection_rows}
        summary = write_report(out, found.rows, title, meta, sections, extra)
        timings["report"] = time.perf_counter() - tic
        state.mark_complete(timings=timings)
        return CompareResult(state.path, summary, timings)


def _split_cache(config: CompareConfig, split: str, progress: bool) -> Any:
    """The prepared per-layer cache of ``split`` for this comparison's data."""
    return config.train_config("vanilla", 0.2, 0).env_spec(split).cache(progress=progress)


def _heads_summary(config: CompareConfig, caches: dict[str, Any],
                   progress: bool) -> dict[str, Any]:
    """The recipe and every exit head's accuracy on validation and test (summary.json keys)."""
    per_layer = {}
    for split in ("validation", "test"):
        cache = caches.get(split) or _split_cache(config, split, progress)
        per_layer[split] = [float(a) for a in cache.correct.mean(axis=0)]
    return {"heads": config.data.heads, "per_layer_accuracy": per_layer}


def _bar(total: int, desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress)


def _collect_readings(config: CompareConfig, out: Path, caches: dict[str, Any],
                      found: Collected, policy: Any, spec: EnvSpec, method: str,
                      knob: float | None, seed: int, name: str, greedy: Any) -> None:
    """The greedy reading as ``<method>-greedy`` and every calibrated reading (τ chosen on the
    selection split like a rule's knob, :mod:`exitgym.experiments.readings`) as ``method``; a
    skip policy's greedy reading as ``method`` (:func:`~exitgym.experiments.skip_compare.
    skip_readings`)."""
    if spec.env_id in SKIP_ENVS:
        skip_readings(config, out, caches, found, policy, spec, method, knob, seed, name, greedy)
        return
    select_and_collect(config, out, caches, found, policy, spec, method + GREEDY_SUFFIX, knob,
                        seed, greedy)
    test_cache = caches[config.eval_split]
    for reading in readings(policy, lambda p: selection_env(config, out, caches, spec), seed):
        acting = spec_for(spec, reading)
        test = acting.with_split(config.eval_split)
        result = evaluate_and_record(
            reading.policy, test, out, record_name(name, reading), method=method, knob=knob,
            seed=seed, num_envs=config.num_envs, cache=test.own_heads(test_cache, out),
            meta={"tau": reading.tau, "alpha": reading.alpha, "run": f"runs/{name}"})
        select_and_collect(config, out, caches, found, reading.policy, acting, method, knob,
                            seed, result, reading.tau, reading.alpha)


@dataclass(frozen=True)
class TrainJob:
    """One trained agent of a comparison."""

    name: str
    """Run directory name under ``runs/``."""
    method: str
    """Row label, ``<agent>-<reward>`` (``-budget`` when budget-targeted)."""
    knob: float | None
    """The row's knob: α, or the target cost (None: a cost-conditioned agent, read at every
    α)."""
    seed: int
    """Seed."""
    config: TrainConfig
    """The training run."""


def train_jobs(config: CompareConfig) -> list[TrainJob]:
    """Every (reward, knob, seed) agent of ``config``, in the order rows are reported."""
    tag = "b" if config.targets else "a"  # budget-targeted (knob = target cost) or α
    suffix = "-budget" if config.targets else ""
    jobs = [TrainJob(f"{config.agent}-{r}-{tag}{k:g}-s{s}", f"{config.agent}-{r}{suffix}", k, s,
                     config.agent_config(r, k, s))
            for r in config.rewards for k in config.agent_knobs for s in config.seeds]
    if config.targets:  # the fixed-λ arm next to the budget-targeted agents
        jobs += [TrainJob(f"{config.agent}-vanilla-a{a:g}-s{s}", f"{config.agent}-vanilla", a, s,
                          config.train_config("vanilla", a, s))
                 for a in config.fixed_alphas for s in config.seeds]
    jobs += [TrainJob(f"{config.agent}-{r}-cond-s{s}", f"{config.agent}-{r}-conditioned", None,
                      s, config.conditioned_config(r, s))
             for r in config.conditioned for s in config.seeds]
    jobs += [TrainJob(f"{a}-{r}-a{k:g}-s{s}", f"{a}-{r}", k, s, config.sb3_config(a, r, k, s))
             for a in config.sb3 for r in config.rewards for k in config.alphas
             for s in config.seeds]
    jobs += [TrainJob(f"{LEXICOGRAPHIC}-d{d:g}-s{s}", LEXICOGRAPHIC, d, s,
                      config.lexico_config(d, s)) for d in config.drops for s in config.seeds]
    return jobs


TrainAll = Callable[[list[TrainJob], Path, dict[str, Any], bool], list[Any]]
"""``(jobs, out, caches, progress) -> [TrainResult per job]``: trains every job into
``out/runs/<name>`` (one after another here; as Tune trials in ``exitgym.integrations.tune``),
reading back the runs already complete and resuming the begun ones."""


def _train_locally(jobs: list[TrainJob], out: Path, caches: dict[str, Any],
                   progress: bool) -> list[Any]:
    results = []
    with _bar(len(jobs), "train agents", progress) as bar:
        for job in jobs:
            bar.set_postfix_str(job.name)
            path = out / "runs" / job.name
            results.append(read_back(path, job.config, caches) if run_complete(path) else
                           train(job.config, path, resume=(path / STATE_FILE).is_file(),
                                 caches=caches, progress=False, plots=False))
            bar.update(1)
    return results


def _train_agents(config: CompareConfig, out: Path, caches: dict[str, Any], progress: bool,
                  timings: dict[str, float], found: Collected,
                  train_all: TrainAll | None = None) -> None:
    tic = time.perf_counter()
    jobs = train_jobs(config)
    results = (train_all or _train_locally)(jobs, out, caches, progress)
    for job, result in zip(jobs, results, strict=True):
        _collect_readings(config, out, caches, found, result.policy, result.spec, job.method,
                          job.knob, job.seed, job.name, result.eval)
    timings["train"] = time.perf_counter() - tic


def _consistentee(config: CompareConfig, out: Path, caches: dict[str, Any], progress: bool,
                  timings: dict[str, float], found: Collected) -> None:
    """Train every ConsistentEE agent; evaluate each on its own heads (saved with it)."""
    from exitgym.experiments.consistentee_runs import (
        CONSISTENTEE,
        HEADS_SPLIT,
        consistentee_jobs,
        train_consistentee,
    )

    jobs = consistentee_jobs(config.consistentee, config.seeds)
    if not jobs:
        return
    tic = time.perf_counter()
    base = config.train_config("hardness", 0.0, 0).env_spec()
    heads_split = HEADS_SPLIT  # ConsistentEE refits its heads where the prepared ones were fit
    if heads_split not in caches:
        caches[heads_split] = _split_cache(config, heads_split, progress)
    with _bar(len(jobs), "consistentee", progress) as bar:
        for job in jobs:
            bar.set_postfix_str(job.name)
            policy, spec = train_consistentee(
                job, base, caches[heads_split], caches[config.train_split], out,
                steps=config.steps,
                batch_size=config.batch_size, num_envs=config.num_envs, lr=config.lr)
            test = spec.with_split(config.eval_split)
            result = evaluate_and_record(
                policy, test, out, job.name + GREEDY_SUFFIX, method=CONSISTENTEE + GREEDY_SUFFIX,
                knob=job.target,
                seed=job.seed, num_envs=config.num_envs,
                cache=test.own_heads(caches[config.eval_split], out))
            _collect_readings(config, out, caches, found, policy, spec, CONSISTENTEE,
                              job.target, job.seed, job.name, result)
            bar.update(1)
    timings[CONSISTENTEE] = time.perf_counter() - tic


def _baselines(config: CompareConfig, out: Path, caches: dict[str, Any], progress: bool,
               timings: dict[str, float], found: Collected) -> None:
    tic = time.perf_counter()
    train_cache, test = caches[config.train_split], caches[config.eval_split]
    jobs: list[tuple[str, int]] = []
    for name in config.all_rules:
        if name == "oracle":
            continue
        seeds = config.seeds if lookup(name).seeded else config.seeds[:1]
        jobs += [(name, s) for s in seeds]
    with _bar(len(jobs) + 1, "baselines", progress) as bar:
        for name, seed in jobs:
            bar.set_postfix_str(f"{name} seed {seed}")
            sweep = lookup(name, "rule", "fitted").sweep
            assert sweep is not None
            for policy, knob in sweep(train_cache, test, seed):
                spec = config.rule_spec(policy.required_observation).with_kwargs(
                    policy_flops=float(getattr(policy, "policy_flops", 0.0)))
                result = evaluate_and_record(
                    policy, spec, out, f"{name}-k{_slug_knob(knob)}-s{seed}", method=name,
                    knob=knob, seed=seed, num_envs=config.num_envs, cache=test)
                select_and_collect(config, out, caches, found, policy, spec, name, knob, seed,
                                    result)
            bar.update(1)
        # The oracle reads the evaluated split's labels: a reference row, never selected.
        oracle = lookup(ORACLE, "rule").sweep
        assert oracle is not None
        seed = config.seeds[0]
        for policy, knob in oracle(train_cache, test, seed):
            result = evaluate_and_record(
                policy, config.rule_spec(policy.required_observation), out,
                f"{ORACLE}-k{_slug_knob(knob)}-s{seed}", method=ORACLE, knob=knob, seed=seed,
                num_envs=config.num_envs, cache=test)
            found.rows.append(row_from_eval(ORACLE, knob, seed, result))
        bar.update(1)
    timings["baselines"] = time.perf_counter() - tic
