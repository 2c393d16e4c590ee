"""REINFORCE with self-critical / mean-of-K / moving-average baselines on the exit environments.

Each update runs a batch of episodes on chosen samples (see :mod:`exitgym.agents.rollout`), weights
``Σ_t log π(a_t | s_t)`` of every episode by its advantage ``R − b`` and adds an entropy bonus:

    loss = −mean_episodes[(R − b) · Σ_t log π(a_t|s_t)] − entropy_coef · mean_steps[H(π(·|s_t))]

Baselines (``ReinforceConfig.baseline``; names in :data:`ADVANTAGE_BASELINES`):

- ``self-critical``: b = return of the *greedy* rollout of the same policy on the same sample
  (the sample is rerun with ``options={"sample_id": i}``); the advantage is exactly 0 when the
  sampled episode equals the greedy one.
- ``mean-of-k``: every sample is run K times (sampled); b = the mean of its K returns
  (ConsistentEE's code).
- ``moving-average``: b = exponential moving average of past batch-mean returns.
- ``none``: b = 0.

Exploration: entropy bonus and epsilon-greedy (with probability ε a sampled action is uniform; the
gradient still uses log π of the action taken, the usual practical choice). Everything is seeded:
the same config and seed give identical weights (``torch.equal``), sample draws, action sampling,
initialisation and env resets use independent children of the seed (:mod:`exitgym.agents.seeding`),
and :meth:`Reinforce.state_dict` holds every generator, so a checkpointed run resumes
bit-identically (the :class:`~exitgym.agents.base.Trainer` protocol).

Two ways to ask for a cost instead of an α: the budget-targeted mode (``target_cost``; α is a
Lagrange multiplier, :mod:`exitgym.agents.multiplier`) and cost-conditioned training
(``cost_conditioned``; α is a policy input drawn per update, :mod:`exitgym.agents.conditioned`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exitgym.agents.base import ADVANTAGE_BASELINES, Logger
from exitgym.agents.conditioned import (
    CONDITIONED_RANGE,
    AlphaConditioning,
    check_alpha_range,
    conditioned_config,
    make_policy,
)
from exitgym.agents.mlp_policy import MLPPolicy, MLPPolicyConfig
from exitgym.agents.multiplier import MULTIPLIERS, Multiplier, PIDGains, make_multiplier
from exitgym.agents.rollout import (
    Rollout,
    concat_rollouts,
    cost_weighted_shape,
    decision_steps,
    env_attr,
    env_observation,
    num_samples_of,
    run_episodes,
)
from exitgym.agents.seeding import SeedLike, trainer_streams
from exitgym.utils.torch_state import load_optimizer_tensors, optimizer_tensors


@dataclass(frozen=True)
class ReinforceConfig:
    """Hyper-parameters of :class:`Reinforce`."""

    baseline: str = "self-critical"
    """One of :data:`ADVANTAGE_BASELINES`."""
    batch_size: int = 64
    """Sampled episodes per update (for mean-of-k: distinct samples x k)."""
    k: int = 4
    """Rollouts per sample for the ``mean-of-k`` baseline."""
    lr: float = 3e-3
    """Adam learning rate."""
    hidden: int = 64
    """Hidden width of the 2-layer MLP policy. The env charges the policy's FLOPs at every layer
    it runs, so a wider policy makes every exit decision dearer."""
    num_layers: int = 2
    """Linear layers of the policy MLP."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus: it keeps the policy from settling on "always exit" (or
    "never") before the advantages have told the samples apart."""
    epsilon: float = 0.0
    """Epsilon-greedy exploration probability while sampling."""
    ma_decay: float = 0.9
    """Decay of the moving-average baseline."""
    normalize_advantage: bool = False
    """Divide advantages by their batch std (keeps the exact zeros of self-critical)."""
    max_grad_norm: float = 5.0
    """Gradient clipping (0 = off)."""
    seed: int = 0
    """Seeds initialisation, sample choice, action sampling and env resets (independent streams)."""
    target_cost: float | None = None
    """Budget-targeted mode: the mean cost (FLOPs fraction) the policy must meet. The reward's
    cost weight α becomes a Lagrange multiplier updated after every update from the batch's mean
    sampled cost ``c̄`` (rule: ``multiplier``), so a user asks for a budget instead of guessing
    an α. None: α stays as the env was made."""
    multiplier: str = "pid"
    """Multiplier rule of the budget-targeted mode: ``pid`` (default: it lands, measured in
    :class:`~exitgym.agents.multiplier.PIDGains`) or ``plain`` (``α ← max(0, α +
    multiplier_lr·(c̄ − target))``, the rule of earlier runs, kept so they reproduce)."""
    multiplier_lr: float = 2.0
    """Step of the ``plain`` multiplier rule."""
    pid: PIDGains = field(default_factory=PIDGains)
    """Gains of the ``pid`` multiplier rule."""
    cost_conditioned: bool = False
    """Train one policy for every cost weight: α is an extra policy input, drawn log-uniformly
    from ``alpha_range`` for each update (:mod:`exitgym.agents.conditioned`). The policy is a
    :class:`~exitgym.agents.conditioned.ConditionedPolicy`, read per budget with ``.at(α)``."""
    alpha_range: tuple[float, float] = CONDITIONED_RANGE
    """Range of the cost weights drawn by ``cost_conditioned`` training."""

    def __post_init__(self) -> None:
        if self.baseline not in ADVANTAGE_BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r}; choose one of "
                             f"{ADVANTAGE_BASELINES}")
        if self.batch_size < 1 or self.k < 1:
            raise ValueError("batch_size and k must be >= 1")
        if self.baseline == "mean-of-k" and (self.k < 2 or self.batch_size % self.k):
            raise ValueError(f"mean-of-k needs k >= 2 dividing batch_size (got k={self.k}, "
                             f"batch_size={self.batch_size})")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.target_cost is not None and not self.target_cost > 0:
            raise ValueError(f"target_cost must be a FLOPs fraction > 0, got {self.target_cost}")
        if self.multiplier_lr < 0:
            raise ValueError(f"multiplier_lr must be >= 0, got {self.multiplier_lr}")
        if self.multiplier not in MULTIPLIERS:
            raise ValueError(f"unknown multiplier {self.multiplier!r}; choose one of "
                             f"{MULTIPLIERS}")
        if self.cost_conditioned and self.target_cost is not None:
            raise ValueError("cost_conditioned trains for every cost weight; target_cost fixes "
                             "one budget: use one or the other")
        check_alpha_range(self.alpha_range)


def compute_advantages(
    baseline: str, returns: np.ndarray, greedy_returns: np.ndarray | None = None,
    k: int = 1, moving_average: float = 0.0,
) -> np.ndarray:
    """Advantage ``R − b`` of each sampled episode under the chosen baseline.

    Args:
        baseline: One of :data:`ADVANTAGE_BASELINES`.
        returns: ``[B]`` returns of the sampled episodes. For ``mean-of-k`` ordered sample-major:
            the K rollouts of one sample are consecutive.
        greedy_returns: ``[B]`` greedy returns on the same samples (``self-critical``).
        k: Rollouts per sample (``mean-of-k``).
        moving_average: Current moving-average baseline value.
    """
    returns = np.asarray(returns, dtype=np.float64)
    if baseline == "self-critical":
        if greedy_returns is None:
            raise ValueError("the self-critical baseline needs the greedy returns")
        return returns - np.asarray(greedy_returns, dtype=np.float64)
    if baseline == "mean-of-k":
        grouped = returns.reshape(-1, k)
        return (grouped - grouped.mean(axis=1, keepdims=True)).reshape(-1)
    if baseline == "moving-average":
        return returns - moving_average
    if baseline == "none":
        return returns.copy()
    raise ValueError(f"unknown baseline {baseline!r}; choose one of {ADVANTAGE_BASELINES}")


class Reinforce:
    """REINFORCE trainer of an :class:`MLPPolicy` on an exit env (vector or single).

    Example:
        >>> env = gym.make_vec("exitgym/EarlyExit-v0", num_envs=64, cache=cache, reward="hardness",
        ...                    vectorization_mode="vector_entry_point")
        >>> agent = Reinforce(env, ReinforceConfig(baseline="self-critical"))
        >>> agent.learn(200); evaluate(agent.policy, env)
    """

    def __init__(
        self, env: Any, config: ReinforceConfig | None = None, observation: str | None = None,
        logger: Logger | None = None, log_dir: str | Path | None = None,
    ) -> None:
        self.env, self.config = env, config or ReinforceConfig()
        space = getattr(env, "single_action_space", None) or env.action_space
        obs_space = getattr(env, "single_observation_space", None) or env.observation_space
        spec = observation or env_observation(env) or "features"
        streams = trainer_streams(self.config.seed)
        self.policy = self._make_policy(obs_space, space, spec, streams.policy)
        self.policy.epsilon = self.config.epsilon
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=self.config.lr)
        self.rng, self._env_seed = streams.draws, streams.env_seed
        c = self.config
        self.multiplier: Multiplier | None = None if c.target_cost is None else make_multiplier(
            c.multiplier, c.target_cost, cost_weighted_shape(env, "target_cost").alpha,
            c.multiplier_lr, c.pid)
        """The budget-targeted mode's multiplier rule (None when off)."""
        self.conditioning = (AlphaConditioning(env, self.policy, streams.conditioning)
                             if self.config.cost_conditioned else None)
        """Cost-conditioned training's per-update α draws (None when off)."""
        self.num_samples = num_samples_of(env)
        forced = env_attr(env, "forced_last_step") and env_attr(env, "num_layers")
        self._forced_at: int | None = int(forced) - 1 if forced else None
        """0-based step whose action is forced (layer L of an exit env), left out of log π."""
        self.moving_average = 0.0
        self.updates = 0
        self.history: list[dict[str, float]] = []
        self.logger = logger
        self.writer = None
        if log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))
        self._seeded_env = False

    @staticmethod
    def policy_config(
        observation_space: Any, action_space: Any, config: ReinforceConfig, observation: str
    ) -> MLPPolicyConfig:
        """The policy trained on an env with these (single-slot) spaces.

        Why static: its FLOPs follow from the spaces alone, so a training env can be made
        charging them before the trainer (or any env) exists.
        """
        base = MLPPolicyConfig.from_spaces(observation_space, action_space, config.hidden,
                                           config.num_layers, observation)
        return conditioned_config(base, config.alpha_range if config.cost_conditioned else None)

    def _make_policy(self, observation_space: Any, action_space: Any, observation: str,
                     seed: SeedLike) -> MLPPolicy:
        """The policy this trainer trains, from its own seed stream (a subclass may train
        another network; ConsistentEE's per-layer one reads the env's depth)."""
        cfg = self.policy_config(observation_space, action_space, self.config, observation)
        return make_policy(cfg, seed)

    # ----- rollouts ------------------------------------------------------------------------
    def _rollout(self, ids: np.ndarray, deterministic: bool) -> Rollout:
        seed = None
        if not self._seeded_env:
            seed, self._seeded_env = self._env_seed, True
        self.policy.eval()
        blocks = run_episodes(
            self.env, lambda o, i: self.policy.act(o, i, deterministic=deterministic), ids, seed
        )
        return concat_rollouts(blocks)

    def _draw_ids(self) -> np.ndarray:
        cfg = self.config
        if cfg.baseline == "mean-of-k":
            distinct = self.rng.integers(self.num_samples, size=cfg.batch_size // cfg.k)
            return np.repeat(distinct, cfg.k)
        return self.rng.integers(self.num_samples, size=cfg.batch_size)

    def _score_terms(
        self, ro: Rollout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Σ_t log π`` per episode ``[B]`` and mean entropy over its decision steps (with grad).

        Decision steps are the live ones, less the forced action at the last layer of an exit
        env (``forced_last_step``): every action exits there, so its log-probability would only
        add noise (and a spurious push towards whichever action was sampled) to the gradient.
        """
        self.policy.train()
        obs = torch.as_tensor(ro.obs)
        logp, ent = self.policy.log_prob_entropy(obs, torch.as_tensor(ro.actions))
        alive = torch.as_tensor(decision_steps(ro.alive, self._forced_at), dtype=logp.dtype)
        return (logp * alive).sum(0), (ent * alive).sum() / alive.sum().clamp_min(1.0)

    # ----- one update ----------------------------------------------------------------------
    def update(self) -> dict[str, float]:
        """Sample a batch, compute advantages, take one optimizer step; returns the metrics."""
        cfg = self.config
        drawn = {} if self.conditioning is None else {"alpha": self.conditioning.draw()}
        ids = self._draw_ids()
        sampled = self._rollout(ids, deterministic=False)
        greedy = self._rollout(ids, deterministic=True) if cfg.baseline == "self-critical" else None
        returns = sampled.returns
        adv = compute_advantages(
            cfg.baseline, returns, greedy.returns if greedy is not None else None, cfg.k,
            self.moving_average,
        )
        if cfg.normalize_advantage and adv.std() > 0:
            adv = adv / adv.std()
        self.optimizer.zero_grad()
        sum_logp, entropy = self._score_terms(sampled)
        loss = self._loss(sampled, greedy, adv, sum_logp, entropy)
        if loss is not None:
            loss.backward()
        if self._clip_norm() > 0:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self._clip_norm())
        self.optimizer.step()
        self.moving_average = (cfg.ma_decay * self.moving_average
                               + (1 - cfg.ma_decay) * float(returns.mean()))
        mean_cost = float(np.nanmean(sampled.info_array("cost")))
        budget = self._adapt_cost_weight(mean_cost) if self.conditioning is None else drawn
        if self.conditioning is not None:
            self.conditioning.restore()
        self.updates += 1
        metrics = {
            "update": float(self.updates), "return": float(returns.mean()),
            "accuracy": float(np.mean(sampled.info_array("correct"))),
            "cost": mean_cost, **budget,
            "exit_layer": float(np.nanmean(sampled.info_array("exit_layer"))),
            "entropy": float(entropy.detach()), "advantage_abs": float(np.abs(adv).mean()),
            **self._extra_metrics(),
        }
        if greedy is not None:
            metrics["greedy_return"] = float(greedy.returns.mean())
        self._log(metrics)
        return metrics

    def _loss(
        self, sampled: Rollout, greedy: Rollout | None, adv: np.ndarray,
        sum_logp: torch.Tensor, entropy: torch.Tensor,
    ) -> torch.Tensor | None:
        """The REINFORCE loss (subclasses may instead set ``.grad`` and return None)."""
        weights = torch.as_tensor(adv, dtype=sum_logp.dtype)
        return -(weights * sum_logp).mean() - self.config.entropy_coef * entropy

    def _extra_metrics(self) -> dict[str, float]:
        return {}

    def _adapt_cost_weight(self, mean_cost: float) -> dict[str, float]:
        """Budget-targeted mode: one multiplier step on the env's cost weight α (docstring of
        :attr:`ReinforceConfig.target_cost`); the new α for the metrics (empty when off)."""
        if self.multiplier is None:
            return {}
        alpha = self.multiplier.step(mean_cost)
        env_attr(self.env, "reward_shape").alpha = alpha
        return {"alpha": float(alpha)}

    def _clip_norm(self) -> float:
        """Gradient-norm clip of the step (0: none); the lexicographic plain step has none."""
        return self.config.max_grad_norm

    def _log(self, metrics: dict[str, float]) -> None:
        self.history.append(metrics)
        if self.logger is not None:
            self.logger(metrics)
        if self.writer is not None:
            for key, value in metrics.items():
                if key != "update":
                    self.writer.add_scalar(f"train/{key}", value, self.updates)

    def learn(self, num_updates: int) -> Reinforce:
        """Run ``num_updates`` updates (each a batch of ``config.batch_size`` episodes)."""
        if num_updates < 0:
            raise ValueError(f"num_updates must be >= 0, got {num_updates}")
        t0 = time.perf_counter()
        for _ in range(num_updates):
            self.update()
        if self.writer is not None:
            self.writer.add_scalar("time/train_s", time.perf_counter() - t0, self.updates)
            self.writer.flush()
        return self

    # ----- checkpoint state (the Trainer protocol) -----------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, meta)``: policy and Adam tensors; counters and every generator's state."""
        tensors = {f"policy.{k}": v.detach().contiguous()
                   for k, v in self.policy.state_dict().items()}
        optim, param_groups = optimizer_tensors(self.optimizer)
        tensors.update(optim)
        meta = {"updates": self.updates, "moving_average": float(self.moving_average),
                "param_groups": param_groups, "trainer_rng": self.rng.bit_generator.state,
                "policy_rng": self.policy.rng_state, **self._constraint_state()}
        if self.multiplier is not None:  # the multiplier is state too
            meta["cost_weight"] = float(env_attr(self.env, "reward_shape").alpha)
            meta["multiplier"] = self.multiplier.state()
        if self.conditioning is not None:
            meta["conditioning_rng"] = self.conditioning.rng_state
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Put back a state returned by :meth:`state_dict` (the next update continues exactly)."""
        self.policy.load_state_dict(
            {k[7:]: v for k, v in tensors.items() if k.startswith("policy.")})
        load_optimizer_tensors(self.optimizer, tensors, meta["param_groups"])
        self.updates, self.moving_average = int(meta["updates"]), float(meta["moving_average"])
        self.rng.bit_generator.state = meta["trainer_rng"]
        self.policy.rng_state = meta["policy_rng"]
        if meta.get("cost_weight") is not None:
            env_attr(self.env, "reward_shape").alpha = float(meta["cost_weight"])
        if self.multiplier is not None:  # checkpoints before the PID rule held α alone
            self.multiplier.load_state(meta.get("multiplier", {"alpha": meta["cost_weight"]}))
        if self.conditioning is not None:
            self.conditioning.rng_state = meta["conditioning_rng"]

    def _constraint_state(self) -> dict[str, Any]:
        """The lexicographic multiplier's state; plain REINFORCE has none (stored as zeros so
        every trainer's checkpoint has the same keys)."""
        return {"lam": 0.0, "lambda_history": []}

    # ----- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Policy weights (safetensors) + policy and trainer config (JSON)."""
        return self.policy.save(directory, {"trainer": type(self).__name__,
                                            "trainer_config": asdict(self.config),
                                            "updates": self.updates})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
