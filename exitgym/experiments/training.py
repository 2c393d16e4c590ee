"""Training runs: ``train`` a :class:`~exitgym.experiments.configs.TrainConfig`, with checkpoints
and resume.

A run trains one method of the agent registry (:mod:`exitgym.agents.registry`) on the env that
an :class:`~exitgym.experiments.env_spec.EnvSpec` describes, in a run directory
(:mod:`exitgym.experiments.runs`): metrics as CSV + TensorBoard, a checkpoint every
``checkpoint_every`` updates (the trainer's ``state_dict``: policy, optimizer and every random
generator's state, so a resumed run ends bit-identical to an uninterrupted one), then
``policy.safetensors``, ``env_spec.json`` (what ``evaluate`` and ``replay --verify`` re-make), a
recorded evaluation on the test split and ``report.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exitgym.agents.registry import Method, train_agent
from exitgym.experiments.binding import check_cache, check_data, prepared_cache
from exitgym.experiments.checkpoint import (
    latest_checkpoint,
    read_state,
    restore_trainer,
    save_checkpoint,
    state_writer,
    trainer_writer,
)
from exitgym.experiments.configs import TrainConfig
from exitgym.experiments.env_spec import CACHE_ENVS, SKIP_ENVS, TOKEN_ENVS, EnvSpec
from exitgym.experiments.metrics import MetricsLog
from exitgym.experiments.plugins import load_run_plugins
from exitgym.experiments.policies import ENV_SPEC_FILE, record_policy_checksums
from exitgym.experiments.runs import CONFIG_FILE, RunDir, RunError, write_config
from exitgym.experiments.trajectories import evaluate_and_record
from exitgym.utils.atomic import jsonable
from exitgym.utils.configs import from_dict
from exitgym.utils.devices import device_record, resolve_device
from exitgym.utils.staging import published_path
from exitgym.utils.threads import one_torch_thread


# ---- train ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced."""

    run: RunDir
    """The run directory (status ``complete``)."""
    eval: Any
    """:class:`~exitgym.agents.records.EvalResult` on the evaluation split."""
    metrics: list[dict[str, float]]
    """Every logged training row."""
    policy: Any = None
    """The trained policy (``compare`` evaluates it on the selection split too)."""
    spec: EnvSpec | None = None
    """The training env's spec (policy FLOPs included); ``with_split`` re-targets it."""


def _make_train_env(cfg: TrainConfig, cache: Any, method: Method) -> tuple[Any, EnvSpec]:
    """The trainer on the training env that charges its policy's FLOPs, each built once.

    The FLOPs follow from the env's observation and action spaces alone, and the spaces do not
    depend on the charge: they are read off one single env made without it, so the policy's cost
    is known before the training vector env and the trainer are made.
    """
    from exitgym.agents.rollout import env_observation

    assert method.policy_flops is not None, f"{method.name} is not a trainer"
    knobs: dict[str, Any] = {"baseline": cfg.baseline, "batch_size": cfg.batch_size,
                             "seed": cfg.seed}
    optional = {"lr": cfg.lr, "target_cost": cfg.target_cost, "allowed_drop": cfg.allowed_drop,
                "multiplier": cfg.multiplier, "cost_conditioned": cfg.cost_conditioned or None}
    knobs.update({k: v for k, v in optional.items() if v is not None})  # else: the trainer's
    if cfg.env in SKIP_ENVS and method.name == "lexicographic":  # live: no tables to read it from
        from exitgym.agents.lexicographic import full_depth_quality

        knobs["full_quality"] = full_depth_quality(cache if cache is not None
                                                   else cfg.env_spec().cache(progress=False))
    spaces_env = cfg.env_spec().make(None, cache)
    try:
        flops = method.policy_flops(spaces_env.observation_space, spaces_env.action_space,
                                    env_observation(spaces_env) or "features", **knobs)
    finally:
        spaces_env.close()
    spec = cfg.env_spec(policy_flops=flops)
    agent = method.factory(spec.make(cfg.num_envs, cache), **knobs)
    if agent.policy.policy_flops != flops:
        raise RuntimeError(f"{method.name}: the env charges {flops} policy FLOPs but the policy "
                           f"costs {agent.policy.policy_flops}")
    return agent, spec


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          caches: dict[str, Any] | None = None, progress: bool = True,
          after_update: Callable[[int], None] | None = None, plots: bool = True) -> TrainResult:
    """Train one agent into run directory ``out`` (see the module docstring).

    Args:
        cfg: the run's configuration.
        out: run directory (created; must not hold another run unless ``resume``).
        resume: continue the interrupted run in ``out`` from its last checkpoint; ``cfg`` must
            equal the stored config.
        overwrite: replace the run already in ``out`` (after ``cfg`` is checked).
        caches: split -> LayerCache to use instead of the prepared ones (tests, notebooks).
        progress: tqdm bar over updates.
        after_update: called with the update count after each update (tests interrupt here).
        plots: draw ``training.png`` (a second or more of matplotlib; ``compare`` skips it).
    """
    cfg = cfg.with_agent_defaults()  # steps=None: the agent's default, recorded as resolved
    method = train_agent(cfg.agent)
    check_names(cfg, task=not caches)  # before a run directory exists or a model loads
    if resume:
        RunDir.open(out).refuse_if_live()
    if resume and _killed_before_config(RunDir.open(out)):
        # Nothing was trained before the kill: start afresh in the same directory.
        RunDir.open(out).state_path.unlink()
        resume = False
    if resume and RunDir.open(out).status != "complete":
        previous = RunDir.open(out)
        previous.verify_checksums(*[n for n in (CONFIG_FILE,) if n in previous.state.get("sha256",
                                                                                         {})])
        stored = previous.config.get("config")
        # from_dict(): a run recorded with the flat layout (before DataConfig), or before a
        # field existed (its default then), compares field by field
        if stored is None or _stored_config(stored) != jsonable(asdict(cfg)):
            raise RunError(f"--resume: the flags differ from the run's config.json; stored "
                           f"{stored}")
        load_run_plugins(out)
        check_data(out, cfg.env_spec())  # before anything is prepared for changed data
        if cfg.env in TOKEN_ENVS:  # the decoder and heads it was trained with
            from exitgym.experiments.token_runs import bound_decoder

            bound_decoder(out, cfg.env_spec())
    run = RunDir.create(out, resume=resume, overwrite=overwrite)
    with run.status_on_error():
        # bound: every split's prepared cache, also where a live skip env is built from it
        # (the env loads its own world; the run is bound to the cache's fingerprints all the same)
        caches, bound = dict(caches or {}), dict(caches or {})
        for split in (cfg.train_split, cfg.eval_split):
            if split not in bound and cfg.env_spec(split).reads_prepared:
                # on --resume, refused before anything is rebuilt from another backbone
                bound[split] = prepared_cache(run.path, cfg.env_spec(split), progress)
                if cfg.env in CACHE_ENVS:
                    caches[split] = bound[split]
            elif resume and split in bound:
                check_cache(run.path, split, bound[split])
        if not resume:
            extra: dict[str, Any] = {"command": "train", "trained_on": device_record(
                resolve_device(cfg.device) if method.kind == "sb3" else "cpu")}
            if cfg.env in TOKEN_ENVS:  # bound to the decoder and heads, as caches are
                from exitgym.experiments.token_runs import token_fingerprints

                extra["fingerprints"] = token_fingerprints(cfg.env_spec())
            # Flat, as the flags are: config.json keeps the layout it had before DataConfig.
            write_config(run, jsonable(cfg.flat()), caches=bound, extra=extra)
            run.record_checksums(CONFIG_FILE)  # config.json is the run's one source of truth
        if method.kind == "sb3":
            if cfg.target_cost is not None or cfg.cost_conditioned:
                raise RunError("--target-cost and --cost-conditioned are REINFORCE-family "
                               f"options; {cfg.agent!r} is an SB3 algorithm")
            if cfg.n_steps is not None and cfg.agent not in ON_POLICY_SB3:
                raise RunError(f"--n-steps sets the rollout of the on-policy SB3 agents "
                               f"{list(ON_POLICY_SB3)}; {cfg.agent!r} does not take it")
            policy, spec, metrics = _train_sb3(cfg, run, caches.get(cfg.train_split), progress,
                                               after_update)
        else:
            policy, spec, metrics = _train_reinforce(cfg, run, caches.get(cfg.train_split),
                                                     method, progress, after_update)
        return finish_run(cfg, run, policy, spec, caches, metrics, plots=plots,
                          settings=used_settings(cfg, method.kind))


def finish_run(cfg: TrainConfig, run: RunDir, policy: Any, spec: EnvSpec,
               caches: dict[str, Any], metrics: list[dict[str, float]],
               plots: bool = True, settings: Any = None) -> TrainResult:
    """What every engine does once the policy is saved: ``env_spec.json``, the recorded
    evaluation, ``report.md`` and the ``complete`` status (one place, so RLlib runs read back
    like local ones)."""
    from exitgym.agents.rollout import evaluate

    run.write_json(ENV_SPEC_FILE, spec.to_json())  # what `evaluate` re-makes
    run.record_checksums(ENV_SPEC_FILE)
    eval_spec = spec.with_split(cfg.eval_split)
    result = evaluate_and_record(
        policy, eval_spec, run.path, f"eval-{cfg.eval_split}", method=cfg.agent,
        knob=run_knob(cfg), seed=cfg.seed,
        num_envs=cfg.num_envs,
        cache=caches.get(cfg.eval_split), evaluate_fn=evaluate)
    run.write_json(f"eval-{cfg.eval_split}.json", result.summary())
    from exitgym.reports.run import write_run_report

    write_run_report(run.path, cfg, result, metrics, plot=plots, settings=settings,
                     shown=published_path(run.path))
    run.mark_complete(eval_split=cfg.eval_split, accuracy=result.accuracy,
                      cost=result.cost)
    return TrainResult(run, result, metrics, policy, spec)


def run_knob(cfg: TrainConfig) -> float | None:
    """The knob a run is trained at: its allowed drop (lexicographic), target cost
    (budget-targeted) or α."""
    if cfg.allowed_drop is not None:
        return cfg.allowed_drop
    return cfg.alpha if cfg.target_cost is None else cfg.target_cost


def _stored_config(stored: dict[str, Any]) -> Any:
    """A run's stored config as JSON with every field (defaults for fields added since)."""
    try:
        return jsonable(asdict(from_dict(TrainConfig, stored)))
    except (TypeError, ValueError):  # unknown or invalid keys: it differs
        return stored


def check_names(cfg: TrainConfig, task: bool = True) -> None:
    """Refuse an unknown observation view, reward or (``task``) task before anything is created
    or loaded.

    Raises:
        ValueError / KeyError: naming the value and what is allowed.
    """
    from exitgym.data.tasks import check_task
    from exitgym.envs.observations import make_observation
    from exitgym.envs.rewards import make_reward

    if cfg.env in CACHE_ENVS or cfg.env in TOKEN_ENVS:
        make_observation(cfg.observation)
    make_reward(cfg.reward, cfg.alpha)
    if task:
        check_task(cfg.data.task)


SB3_MAX_ENVS = 8
"""SB3 agents train on at most this many envs (``DummyVecEnv`` steps them one by one)."""
REINFORCE_ONLY = ("baseline", "batch_size")
"""Settings only the REINFORCE-family trainers read."""
SB3_ONLY = ("n_steps",)
"""Settings only SB3 agents read."""
ON_POLICY_SB3 = ("ppo", "a2c", "maskable-ppo")
"""SB3 agents with a rollout length (``n_steps``)."""


def used_settings(cfg: TrainConfig, kind: str) -> dict[str, Any]:
    """The run's settings as its agent used them (what ``report.md`` lists): SB3 agents do not
    read REINFORCE's baseline, batch size or checkpoint interval, and use at most
    :data:`SB3_MAX_ENVS` envs."""
    settings = {**cfg.flat(), "lr": cfg.learning_rate}
    if kind == "sb3":
        settings = {k: v for k, v in settings.items() if k not in REINFORCE_ONLY}
        settings["num_envs"] = min(cfg.num_envs, SB3_MAX_ENVS)
    else:
        settings = {k: v for k, v in settings.items() if k not in SB3_ONLY}
    return settings


def _killed_before_config(run: RunDir) -> bool:
    """A run killed between creating its state file and writing ``config.json``."""
    return run.status != "complete" and not run.file(CONFIG_FILE).is_file()


def _train_reinforce(cfg: TrainConfig, run: RunDir, cache: Any, method: Method,
                     progress: bool, after_update: Callable[[int], None] | None):
    with one_torch_thread():
        return _train_reinforce_loop(cfg, run, cache, method, progress, after_update)


def _train_reinforce_loop(cfg: TrainConfig, run: RunDir, cache: Any, method: Method,
                          progress: bool, after_update: Callable[[int], None] | None):
    agent, spec = _make_train_env(cfg, cache, method)
    log = MetricsLog(run.path)
    start = 0
    found = latest_checkpoint(run)
    if found is not None:
        path, start = found
        restore_trainer(agent, path)
        log.load(up_to_step=start)
    agent.logger = lambda m: log.log(m, step=int(m.get("update", 0)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.agent} {cfg.reward} "
                   f"α={cfg.alpha}", unit="update", leave=False)
    try:
        for u in range(start, cfg.steps):
            agent.update()
            done = u + 1
            if bar is not None:
                bar.update(1)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                log.flush()
                save_checkpoint(run, done, trainer_writer(agent))
            if after_update is not None:
                after_update(done)
    finally:
        if bar is not None:
            bar.close()
        log.close()
    agent.policy.save(run.path, {"trainer": type(agent).__name__, "updates": agent.updates,
                                 "env_spec": spec.to_json()})
    record_policy_checksums(run)
    return agent.policy, spec, log.rows


def _train_sb3(cfg: TrainConfig, run: RunDir, cache: Any, progress: bool,
               after_update: Callable[[int], None] | None,
               ) -> tuple[Any, EnvSpec, list[dict[str, float]]]:
    """Train (or, from the run's last checkpoint, continue) an SB3 agent; checkpoints every
    ``checkpoint_every`` updates, safetensors + JSON like the REINFORCE trainers'."""
    from exitgym.agents.sb3 import train_sb3

    spec = cfg.env_spec()
    kwargs = spec.make_kwargs(cache)  # what every other agent's env is made with
    log = MetricsLog(run.path)
    found = latest_checkpoint(run)
    resume = read_state(found[0]) if found is not None else None
    if resume is not None:
        log.load(up_to_step=int(resume[1]["extra"]["run_log"]["rows"]))

    def save(timesteps: int, state: Any) -> None:
        log.flush()
        save_checkpoint(run, timesteps, state_writer(lambda: state))

    try:
        with one_torch_thread():
            policy = train_sb3(cfg.agent, cfg.env, total_timesteps=cfg.steps, seed=cfg.seed,
                               log_dir=run.path / "tb", num_envs=min(cfg.num_envs, SB3_MAX_ENVS),
                               env_kwargs=kwargs, learning_rate=cfg.learning_rate,
                               progress=progress,
                               logger=lambda row: log.log(row, step=int(row["update"])),
                               checkpoint_every=cfg.checkpoint_every, save=save, resume=resume,
                               after_update=after_update, device=str(resolve_device(cfg.device)),
                               **({"n_steps": cfg.n_steps} if cfg.n_steps is not None else {}))
    finally:
        log.close()
    policy.save(run.path)
    record_policy_checksums(run)
    # Evaluation charges the acting network's FLOPs like the REINFORCE agents' (SB3 builds the
    # network inside train_sb3, so training itself ran with policy_flops=0).
    return policy, spec.with_kwargs(policy_flops=float(policy.policy_flops)), log.rows


__all__ = ["TrainResult", "finish_run", "train"]
