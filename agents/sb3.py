"""stable-baselines3 glue: train PPO / A2C / DQN (and sb3-contrib MaskablePPO) on exitgym envs.

One function, :func:`train_sb3`, trains on a registered env id or an env instance and returns an
:class:`SB3Policy` that implements the :class:`~exitgym.agents.base.Policy` protocol, so SB3
models go through the same :func:`~exitgym.agents.evaluate` as rules and REINFORCE. Logging is
SB3's own logger (stdout + TensorBoard when ``log_dir`` is given, via ``tensorboard_log``).

Envs are vectorised for SB3 with ``DummyVecEnv`` over single envs (an exit step is an array look-up,
so this is fast enough; SB3's VecEnv API differs from gymnasium 1.x vector envs).

**MaskablePPO** applies where some actions are invalid in some states: the env must expose
``action_masks()``. No exitgym env does today (every action is valid in every state, SkipBlock's
exit action included), so ``train_sb3("maskable-ppo", ...)`` raises for them and is there for
users' envs that mask.

Persistence avoids SB3's zip format (it stores cloudpickled objects): :meth:`SB3Policy.save`
writes the policy weights as safetensors + JSON, :func:`load_sb3` rebuilds the model and loads them;
training checkpoints (bit-identical ``--resume``) are :mod:`exitgym.agents.sb3_resume`'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from exitgym.agents.io import load_module_state, save_module
from exitgym.agents.registry import Method, lookup
from exitgym.agents.rollout import env_observation

if TYPE_CHECKING:
    from exitgym.agents.sb3_resume import State


def _algorithm(name: str) -> Method:
    """The registry entry of an SB3 algorithm (``ppo``, ``a2c``, ``dqn``, ``maskable-ppo``)."""
    return lookup(name, "sb3", what="SB3 algorithm")


class SB3Policy:
    """A trained SB3 model as a :class:`~exitgym.agents.base.Policy` (batched ``predict``)."""

    def __init__(self, model: Any, algo: str, observation: str | None,
                 env_id: str | None = None, env_kwargs: dict[str, Any] | None = None) -> None:
        self.model, self.algo = model, algo
        self.required_observation = observation or "features"
        self.env_id, self.env_kwargs = env_id, dict(env_kwargs or {})

    def reset(self, num_envs: int) -> None:
        """SB3 MLP policies are stateless."""

    def act(
        self, obs: np.ndarray, infos: dict[str, Any] | None = None, deterministic: bool = True
    ) -> np.ndarray:
        actions, _ = self.model.predict(np.asarray(obs, dtype=np.float32),
                                        deterministic=deterministic)
        return np.asarray(actions, dtype=np.int64)

    def exit_probability(self, obs: np.ndarray) -> np.ndarray:
        """``P(exit | obs)`` per row, what :class:`~exitgym.agents.calibrated.CalibratedExit`
        thresholds: the action distribution's exit probability (PPO, A2C), or for DQN the
        logistic of the Q-difference ``Q(exit) − Q(continue)`` (monotone, and 0.5 exactly where
        the greedy action changes, so ``τ`` on it is a threshold on the Q-difference).

        Raises:
            ValueError: the model's action space is not one exit decision (``Discrete(2)``).
        """
        import torch

        space = self.model.action_space
        if getattr(space, "n", None) != 2:
            raise ValueError(f"exit_probability needs a Discrete(2) exit policy, got {space}")
        pol = self.model.policy
        obs_t, _ = pol.obs_to_tensor(np.asarray(obs, dtype=np.float32))
        with torch.no_grad():
            if self.algo == "dqn":
                q = pol.q_net(obs_t).double()
                return torch.sigmoid(q[:, 1] - q[:, 0]).cpu().numpy()
            probs = pol.get_distribution(obs_t).distribution.probs
            return probs[:, 1].double().cpu().numpy()

    @property
    def policy_flops(self) -> float:
        """FLOPs of the acting network per step (:func:`~exitgym.agents.mlp_policy.chain_flops`,
        the one function every charged network goes through)."""
        from exitgym.agents.mlp_policy import chain_flops

        pol = self.model.policy
        parts = [getattr(pol, "q_net", None)] if self.algo == "dqn" else [
            getattr(getattr(pol, "mlp_extractor", None), "policy_net", None),
            getattr(pol, "action_net", None),
        ]
        return chain_flops(*parts)

    def describe(self) -> dict[str, Any]:
        return {"method": f"sb3-{self.algo}"}

    def save(self, directory: str | Path) -> Path:
        """Policy weights (safetensors) + algo, env id and kwargs (JSON)."""
        kwargs = {k: v for k, v in self.env_kwargs.items() if _is_json(v)}
        return save_module(self.model.policy, Path(directory), "sb3_policy",
                           {"algo": self.algo, "observation": self.required_observation,
                            "env_id": self.env_id, "env_kwargs": kwargs})


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _make_vec(env_id_or_env: Any, num_envs: int, seed: int, env_kwargs: dict[str, Any]) -> Any:
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    if isinstance(env_id_or_env, str):
        # Not SB3's make_vec_env: it forces render_mode="rgb_array", which exit envs reject.
        env_id = env_id_or_env
        venv = DummyVecEnv([lambda: Monitor(gym.make(env_id, **env_kwargs))] * num_envs)
        venv.seed(seed)
        return venv
    if hasattr(env_id_or_env, "num_envs"):
        raise TypeError("pass an env id or a single gymnasium env; SB3 cannot train on a "
                        "gymnasium 1.x vector env directly (use the env id and num_envs=)")
    if env_kwargs:
        raise ValueError("env_kwargs only apply when an env id is given")
    venv = DummyVecEnv([lambda: Monitor(env_id_or_env)])
    venv.seed(seed)
    return venv


def train_sb3(
    algo: str, env_id_or_env: str | gym.Env, total_timesteps: int, seed: int = 0,
    log_dir: str | Path | None = None, num_envs: int = 8,
    env_kwargs: dict[str, Any] | None = None, policy: str = "MlpPolicy", verbose: int = 0,
    logger: Callable[[dict[str, float]], None] | None = None, progress: bool = False,
    checkpoint_every: int = 50, save: Callable[[int, State], None] | None = None,
    resume: State | None = None, after_update: Callable[[int], None] | None = None,
    **algo_kwargs: Any,
) -> SB3Policy:
    """Train an SB3 algorithm on an exitgym env and wrap it as a Policy.

    Args:
        algo: An ``sb3`` method of :mod:`exitgym.agents.registry` (``ppo``, ``a2c``, ``dqn``,
            ``maskable-ppo``).
        env_id_or_env: Registered id (``"exitgym/EarlyExit-v0"``; ``num_envs`` copies are made with
            ``env_kwargs``) or a single env instance (trained on alone).
        total_timesteps: Environment steps to train for.
        seed: Seeds the model and the envs.
        log_dir: TensorBoard log folder (SB3's ``tensorboard_log``); None = no TensorBoard.
        num_envs: Parallel envs when an id is given.
        env_kwargs: ``gym.make`` kwargs (cache=, reward=, alpha=, observation=, ...).
        policy: SB3 policy class name.
        verbose: SB3 verbosity.
        logger: receives a row of training metrics (``update``, ``timesteps``, ``episodes``,
            ``return``, ``accuracy``, ``cost``, ``exit_layer``) per :data:`LOG_EPISODES`
            finished episodes, like the REINFORCE trainers' rows (``metrics.csv``).
        progress: a tqdm bar over the environment steps.
        checkpoint_every: updates (rollout + training phases) between checkpoints.
        save: ``save(timesteps, (tensors, meta))`` writes a checkpoint
            (:mod:`exitgym.agents.sb3_resume`); None: no checkpoints.
        resume: a checkpoint to continue from (the same arguments as the run that wrote it):
            the run ends bit-identical to an uninterrupted one.
        after_update: called with the update count between updates.
        **algo_kwargs: Passed to the algorithm (``n_steps=``, ``learning_rate=``, ...).
    """
    name = algo.lower()
    method = _algorithm(name)
    if total_timesteps < 1:
        raise ValueError(f"total_timesteps must be >= 1, got {total_timesteps}")
    env_kwargs = dict(env_kwargs or {})
    venv = _make_vec(env_id_or_env, num_envs, seed, env_kwargs)
    if method.needs_action_masks and not all(_has_masks(venv)):
        raise ValueError(
            "MaskablePPO needs an env with action_masks(); "
            "EarlyExit has no invalid actions, use 'ppo'"
        )
    algorithm = method.factory()
    model = algorithm(policy, venv, seed=seed, verbose=verbose,
                      tensorboard_log=str(log_dir) if log_dir is not None else None,
                      **algo_kwargs)
    need = steps_per_update(model)
    if total_timesteps < need:
        raise ValueError(
            f"{name}: {total_timesteps} environment steps are fewer than one update needs "
            f"({need}: {_update_size(model)}), so the policy would never be trained; pass "
            f"--steps of at least {need}, and many times that to learn (SB3 counts environment "
            f"steps, not updates)")
    from stable_baselines3.common.callbacks import CallbackList

    from exitgym.agents.sb3_resume import checkpoint_callback, restore_sb3

    actions: list[np.ndarray] = []
    log_state: dict[str, Any] = {"rows": 0, "episodes": []}
    updates = 0
    if resume is not None:
        actions = restore_sb3(model, *resume)
        log_state, updates = resume[1]["extra"]["run_log"], int(resume[1]["extra"]["updates"])
    done = int(model.num_timesteps)
    run_log = _run_log(total_timesteps, logger, progress, name, done, log_state)
    checkpoints = checkpoint_callback(checkpoint_every, actions, save, after_update,
                                      lambda: {"run_log": run_log.state()}, updates)
    model.learn(total_timesteps=total_timesteps - done, tb_log_name=name,
                callback=CallbackList([run_log, checkpoints]),
                reset_num_timesteps=resume is None)
    observation = env_kwargs.get("observation")
    if observation is None:
        first = venv.envs[0] if hasattr(venv, "envs") else None
        observation = env_observation(first) if first is not None else None
    env_id = env_id_or_env if isinstance(env_id_or_env, str) else None
    return SB3Policy(model, name, observation, env_id, env_kwargs)


LOG_EPISODES = 64
"""Finished episodes per logged row of an SB3 run (a REINFORCE update's batch)."""
EPISODE_KEYS = ("correct", "cost", "exit_layer")
"""Terminal ``info`` entries averaged into a row (``correct`` becomes ``accuracy``)."""


def _run_log(total: int, logger: Callable[[dict[str, float]], None] | None, progress: bool,
             name: str, done: int = 0, state: dict[str, Any] | None = None) -> Any:
    """SB3 callback: a progress bar over steps and rows of episode metrics for ``metrics.csv``.

    ``done`` steps and the logging ``state`` (:meth:`state` of a checkpoint) are where a resumed
    run continues from. Defined in a function so stable-baselines3 is imported only when
    training.
    """
    from stable_baselines3.common.callbacks import BaseCallback

    class RunLog(BaseCallback):
        def state(self) -> dict[str, Any]:
            """Rows logged and the episodes of the next row (JSON)."""
            return {"rows": self.rows, "episodes": [list(e) for e in self.episodes]}

        def _on_training_start(self) -> None:
            start = state or {"rows": 0, "episodes": []}
            self.bar, self.rows = None, int(start["rows"])
            self.episodes = [tuple(e) for e in start["episodes"]]
            if progress:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=done, desc=f"train {name}", unit="step",
                                leave=False)

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", []):
                if "episode" in info and all(k in info for k in EPISODE_KEYS):
                    self.episodes.append((float(info["episode"]["r"]),
                                          *(float(info[k]) for k in EPISODE_KEYS)))
            if len(self.episodes) >= LOG_EPISODES:
                self._log()
            if self.bar is not None:
                self.bar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            if self.episodes:
                self._log()
            if self.bar is not None:
                self.bar.close()

        def _log(self) -> None:
            self.rows += 1
            if logger is not None:
                cols = np.asarray(self.episodes).mean(axis=0)
                logger({"update": self.rows, "timesteps": self.num_timesteps,
                        "episodes": len(self.episodes), "return": cols[0],
                        "accuracy": cols[1], "cost": cols[2], "exit_layer": cols[3]})
            self.episodes = []

    return RunLog()


def steps_per_update(model: Any) -> int:
    """Environment steps before ``model`` first updates its policy: one rollout of every env
    (on-policy: ``n_steps x n_envs``) or ``learning_starts`` plus one training interval."""
    if _on_policy(model):
        return int(model.n_steps) * int(model.n_envs)
    freq = getattr(getattr(model, "train_freq", None), "frequency", 1)
    return int(getattr(model, "learning_starts", 0)) + int(freq) * int(model.n_envs)


def _on_policy(model: Any) -> bool:
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    return isinstance(model, OnPolicyAlgorithm)


def _update_size(model: Any) -> str:
    if _on_policy(model):
        return f"a rollout of n_steps={model.n_steps} in each of {model.n_envs} envs"
    return (f"learning_starts={model.learning_starts} plus one train_freq interval in each of "
            f"{model.n_envs} envs")


def _has_masks(venv: Any) -> list[bool]:
    envs = getattr(venv, "envs", [])
    return [callable(getattr(getattr(e, "unwrapped", e), "action_masks", None)) for e in envs]


def load_sb3(directory: str | Path, env: gym.Env | None = None) -> SB3Policy:
    """Rebuild a policy saved by :meth:`SB3Policy.save` (weights via safetensors, no pickle).

    Args:
        directory: Folder holding ``sb3_policy.safetensors`` / ``sb3_policy.json``.
        env: An env with the training spaces; default: ``gym.make(env_id, **env_kwargs)``.
    """
    meta = json.loads((Path(directory) / "sb3_policy.json").read_text())
    if env is None:
        if not meta.get("env_id"):
            raise ValueError("the saved policy has no env id; pass env=")
        env = gym.make(meta["env_id"], **meta["env_kwargs"])
    from stable_baselines3.common.vec_env import DummyVecEnv

    model = _algorithm(meta["algo"]).factory()("MlpPolicy", DummyVecEnv([lambda: env]))
    model.policy.load_state_dict(load_module_state(Path(directory), "sb3_policy"))
    return SB3Policy(model, meta["algo"], meta["observation"], meta.get("env_id"),
                     meta["env_kwargs"])
