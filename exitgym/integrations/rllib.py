"""``exitgym train --engine rllib``: an RLlib algorithm (new API stack) trained into a run dir.

The run directory is the one every exitgym run has (:mod:`exitgym.experiments.runs`):
``config.json`` (the :class:`~exitgym.experiments.configs.TrainConfig`, package versions with
Ray's, cache fingerprints, ``engine: rllib``), ``metrics.csv`` + TensorBoard (one row per RLlib
training iteration), ``policy.safetensors`` + ``policy.json``, ``env_spec.json``, the recorded
evaluation and ``report.md``. So ``evaluate``, ``replay --verify``, ``compare`` readers and
``infer`` read it unchanged.

How the policy is exported: RLlib's default module is built with one hidden layer of 64 ReLU
units and no extra head layers, so its actor (``encoder.actor_encoder`` then ``pi``) is exactly
exitgym's :class:`~exitgym.agents.mlp_policy.MLPPolicy` (Linear-ReLU-Linear); the weights are
copied across by shape and saved as safetensors. The env charges that policy's FLOPs during
training, as it does for REINFORCE. The value network is training-only and is not exported.

What ``TrainConfig`` fields mean here: ``steps`` = RLlib training iterations; each samples
``batch_size × num_layers`` env steps (the steps of ``batch_size`` full-depth episodes);
``num_envs`` = slots of the native vector env per env runner; ``seed`` = RLlib's seed (runner
``w`` resets with ``seed + w``, see :mod:`exitgym.integrations.ray`). No ``--resume``: RLlib
checkpoints are pickles, which exitgym never loads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitgym.experiments.configs import RLLIB_AGENTS, TrainConfig
from exitgym.experiments.env_spec import CACHE_ENVS
from exitgym.experiments.metrics import MetricsLog
from exitgym.experiments.policies import record_policy_checksums
from exitgym.experiments.runs import RunDir, RunError, write_config
from exitgym.experiments.training import TrainResult, finish_run
from exitgym.integrations.ray import (
    ray_session,
    register_envs,
    rllib_env_settings,
    rllib_resources,
    worker_cache_path,
)
from exitgym.utils.atomic import jsonable
from exitgym.utils.threads import one_torch_thread

ALGORITHMS: dict[str, str] = {"ppo": "ray.rllib.algorithms.ppo:PPOConfig",
                              "appo": "ray.rllib.algorithms.appo:APPOConfig"}
"""``--agent`` name -> RLlib algorithm config class (the names of :data:`RLLIB_AGENTS`)."""
HIDDEN = 64
"""Hidden width of the exported actor (MLPPolicy's default)."""
RUNNER_CACHE_DIR = "rllib-cache"
"""Where a cache given as an object (tests) is saved for the workers to load by path."""


@dataclass(frozen=True)
class RLlibOptions:
    """How RLlib runs (not what it learns: none of these are stored as the run's config)."""

    num_env_runners: int = 0
    """Remote env runners (0: sample in the driver process)."""
    address: str | None = None
    """Ray cluster to join (``ray start --head`` prints it); None: a local Ray."""
    num_cpus: int = 2
    """CPUs of a local Ray."""
    num_gpus_per_env_runner: float = 0.0
    """GPUs (or a share) each remote env runner reserves; the learner's GPU follows
    ``TrainConfig.device`` (:func:`~exitgym.integrations.ray.rllib_resources`)."""


def algorithm_config(name: str) -> Any:
    """A fresh RLlib ``AlgorithmConfig`` of ``--agent name``."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown RLlib agent {name!r}; allowed: {sorted(ALGORITHMS)}")
    module, cls = ALGORITHMS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def train_rllib(cfg: TrainConfig, out: str | Path, *, options: RLlibOptions | None = None,
                caches: dict[str, Any] | None = None, plots: bool = True,
                overwrite: bool = False) -> TrainResult:
    """Train ``cfg.agent`` with RLlib into run directory ``out`` (see the module docstring);
    ``overwrite`` replaces the run there once the new one is complete."""
    import ray

    from exitgym.agents.mlp_policy import MLPPolicy, MLPPolicyConfig

    options = options or RLlibOptions()
    cfg = cfg.with_agent_defaults("rllib")  # steps=None: RLlib iterations, not SB3 timesteps
    if cfg.agent not in RLLIB_AGENTS:
        raise RunError(f"--engine rllib: unknown agent {cfg.agent!r}; allowed: "
                       f"{sorted(RLLIB_AGENTS)}")
    if cfg.env not in CACHE_ENVS:
        raise RunError(f"--engine rllib trains on the cached envs {list(CACHE_ENVS)}; "
                       f"got {cfg.env}")
    run = RunDir.create(out, overwrite=overwrite)
    with run.status_on_error():
        caches = dict(caches or {})
        for split in (cfg.train_split, cfg.eval_split):
            if split not in caches:
                caches[split] = cfg.env_spec(split).cache()
        write_config(run, jsonable(cfg.flat()), caches=caches,
                     extra={"command": "train", "engine": "rllib", "ray": ray.__version__})
        spaces_env = cfg.env_spec().make(None, caches[cfg.train_split])
        policy_cfg = MLPPolicyConfig.from_spaces(spaces_env.observation_space,
                                                 spaces_env.action_space, HIDDEN, 2,
                                                 cfg.observation)
        spaces_env.close()
        spec = cfg.env_spec(policy_flops=policy_cfg.flops)
        env_config = {**spec.kwargs, "cache_path": worker_cache_path(caches[cfg.train_split],
                                                       run.path / RUNNER_CACHE_DIR / "train"),
                      "torch_threads": 1}
        layers = caches[cfg.train_split].num_layers
        metrics, weights = _fit(cfg, options, env_config, layers, run)
        policy = MLPPolicy(policy_cfg)
        policy.load_state_dict(actor_state(weights, policy.state_dict()))
        policy.save(run.path, {"trainer": f"rllib-{cfg.agent}", "updates": cfg.steps,
                               "env_spec": spec.to_json(), "ray": ray.__version__})
        record_policy_checksums(run)
        return finish_run(cfg, run, policy, spec, caches, metrics, plots=plots)


def _fit(cfg: TrainConfig, options: RLlibOptions, env_config: dict[str, Any], layers: int,
         run: RunDir) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Build and train the algorithm: the logged rows and the final module's weights.

    The learner runs in this process on one torch thread, like exitgym's own trainers (a small
    MLP on a few hundred rows; see :func:`~exitgym.utils.threads.one_torch_thread`).
    """
    with one_torch_thread(), ray_session(options.address, options.num_cpus):
        register_envs()
        return _iterate(cfg, env_config, options, layers, run)


def _iterate(cfg: TrainConfig, env_config: dict[str, Any], options: RLlibOptions, layers: int,
             run: RunDir) -> tuple[list[dict[str, float]], dict[str, Any]]:
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from exitgym.utils.devices import resolve_device

    settings = rllib_env_settings(cfg.env, env_config, options.num_env_runners, cfg.num_envs)
    gpus = rllib_resources(str(resolve_device(cfg.device)), options.num_env_runners,
                           options.num_gpus_per_env_runner)
    batch = cfg.batch_size * layers
    algo_cfg = (algorithm_config(cfg.agent)
                .environment(**settings["environment"])
                .env_runners(**settings["env_runners"], **gpus["env_runners"])
                .learners(**gpus["learners"])
                .training(lr=cfg.learning_rate, train_batch_size_per_learner=batch)
                .rl_module(model_config=DefaultModelConfig(
                    fcnet_hiddens=[HIDDEN], fcnet_activation="relu", head_fcnet_hiddens=[],
                    vf_share_layers=False))
                .debugging(seed=cfg.seed))
    if cfg.agent == "ppo":
        algo_cfg = algo_cfg.training(minibatch_size=min(batch, 128), num_epochs=4)
    log = MetricsLog(run.path)
    rows: list[dict[str, float]] = []
    algo = algo_cfg.build_algo()
    try:
        for it in range(1, cfg.steps + 1):
            result = algo.train()
            row = {"update": float(it), **iteration_metrics(result)}
            log.log(row, step=it)
            rows.append(row)
        log.flush()
        weights = {k: v.detach().cpu() for k, v in algo.get_module().state_dict().items()}
    finally:
        log.close()
        algo.stop()
    return rows, weights


def iteration_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The numbers of one RLlib iteration that exitgym logs (those present, as floats)."""
    runners = result.get("env_runners", {})
    learner = result.get("learners", {}).get("default_policy", {})
    picks = {"episode_return_mean": runners.get("episode_return_mean"),
             "episode_len_mean": runners.get("episode_len_mean"),
             "env_steps": result.get("num_env_steps_sampled_lifetime"),
             "policy_loss": learner.get("policy_loss"), "vf_loss": learner.get("vf_loss"),
             "entropy": learner.get("entropy")}
    return {k: float(v) for k, v in picks.items() if isinstance(v, int | float)}


def actor_state(weights: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """The actor's tensors of an RLlib module state, renamed to ``target``'s (MLPPolicy) keys.

    The actor is the ``encoder.actor_encoder`` layers followed by the ``pi`` head, in order
    (their weights and biases; constant buffers are not parameters of the policy);
    every shape must match its MLPPolicy counterpart, so a module of another architecture is
    refused rather than half-copied.
    """
    def layer(key: str) -> bool:  # not buffers such as pi.log_std_clip_param_const
        return key.endswith((".weight", ".bias"))

    actor = [k for k in weights if k.startswith("encoder.actor_encoder.") and layer(k)]
    actor += [k for k in weights if k.startswith("pi.") and layer(k)]
    if len(actor) != len(target):
        raise RunError(f"the RLlib actor has {len(actor)} tensors ({actor}); the exported "
                       f"MLPPolicy needs {len(target)} ({list(target)})")
    out = {}
    for src, (dst, want) in zip(actor, target.items(), strict=True):
        if tuple(weights[src].shape) != tuple(want.shape):
            raise RunError(f"RLlib tensor {src} has shape {tuple(weights[src].shape)}; "
                           f"MLPPolicy's {dst} needs {tuple(want.shape)}")
        out[dst] = weights[src]
    return out


__all__ = ["ALGORITHMS", "RLlibOptions", "actor_state", "algorithm_config",
           "iteration_metrics", "train_rllib"]
