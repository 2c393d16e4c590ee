"""The configs of experiments: one training run (:class:`TrainConfig`) and a comparison
(:class:`CompareConfig`).

Frozen dataclasses with a docstring per field; the CLI flags are generated from them
(:mod:`exitgym.utils.configs`) and a run's ``config.json`` stores them whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from exitgym.agents.base import ADVANTAGE_BASELINES
from exitgym.agents.multiplier import MULTIPLIERS
from exitgym.agents.registry import describe, lookup, names, train_agents
from exitgym.data.config import POLICY_SPLIT, SPLITS, DataConfig
from exitgym.envs.settings import KV_MODES
from exitgym.envs.token_core import HEADS as TOKEN_HEADS
from exitgym.experiments.env_spec import (
    CACHE_ENVS,
    SKIP_ENVS,
    TOKEN_ENVS,
    EnvSpec,
    env_ids,
    reward_names,
)
from exitgym.reports.budget import BUDGETS
from exitgym.utils.configs import flatten, option
from exitgym.utils.devices import check_device

RLLIB_AGENTS: dict[str, str] = {
    "ppo": "RLlib PPO (new API stack)",
    "appo": "RLlib APPO (new API stack)",
}
"""What ``--agent`` accepts with ``exitgym train --engine rllib`` (``exitgym.integrations.rllib``
maps each name to its algorithm; Ray is imported there only)."""


ONE_STEP_ENV = "exitgym/SwitchableDecision-v0"
"""The skip environment whose episodes are one decision (it takes no ``dense``)."""
DEFAULT_LR = 3e-3
"""Learning rate of every agent but the lexicographic one when ``--lr`` is not given."""
LEXICOGRAPHIC = "lexicographic"
"""The lexicographic trainer's registry name (its knob is ``allowed_drop``)."""


def agent_choices() -> dict[str, str]:
    """Every ``--agent`` name and its help line: local trainers, SB3, then RLlib-only names."""
    local = describe(tuple(sorted(train_agents())))
    rllib = {n: (f"{local[n]}; --engine rllib: {d}" if n in local else f"{d} (--engine rllib)")
             for n, d in RLLIB_AGENTS.items()}
    return {**local, **rllib}


AGENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "*": {"steps": 300},
    "ppo": {"steps": 100_000, "n_steps": 256, "lr": DEFAULT_LR},
    "a2c": {"steps": 100_000, "lr": DEFAULT_LR},
    "dqn": {"steps": 300_000, "lr": 1e-4},
}
"""The one place of per-agent defaults: :class:`TrainConfig` fields left None take the agent's
entry here, else ``"*"``'s (REINFORCE-family updates). SB3 agents count environment timesteps
and need far more of them than one update's worth to leave full depth (PPO's default rollout is
2048 steps in each of 8 envs); measured on the default task (rt-polarity, two-stage fine-tuned
MiniLM heads), see the README's SB3 section."""


@dataclass(frozen=True)
class TokenEnvConfig:
    """What a run on ``exitgym/TokenExit-v0`` generates with (the encoder envs ignore it).

    The defaults are the fast training env of ``exitgym demo --generation``: every layer runs
    for the cache (``kv="full"``) and the full model's tokens are fed back (teacher forcing), so
    one decoder pass precomputes every step (``cached``) and an update costs what an
    ``EarlyExit-v0`` update costs. The policy is deployed live by ``exitgym.generate(run_dir,
    ...)`` (``kv="copy"`` by default). The prompts are the texts of ``data.task``'s split.
    """

    decoder: str = "smollm2-135m"
    """Decoder short name or local model directory."""
    decoder_heads: str = option("distilled", choices=TOKEN_HEADS)
    """Exit heads: ``lm-head`` (the model's own head at every layer), ``distilled`` (per-layer
    maps fitted to the last layer on the task's train texts) or ``trained`` (per-layer low-rank
    adapters trained for the frozen decoder on its continuations of them); prepared once."""
    max_prompts: int = option(64, minimum=1)
    """First prompts of the split the episodes draw from."""
    max_prompt_tokens: int = option(24, minimum=1)
    """Prompts are cut to this many tokens."""
    max_new_tokens: int = option(6, minimum=1)
    """Tokens generated per episode (each one an exit decision)."""
    kv: str = option("full", choices=KV_MODES)
    """Keys and values above an exit: ``full`` (every layer runs; cacheable), ``copy`` or
    ``recompute`` (live envs, far slower to train on)."""
    teacher_forcing: bool = True
    """Feed the full-depth model's token instead of the emitted one (needed by ``cached``)."""
    cached: bool = True
    """Precompute every step in one decoder pass (needs ``kv="full"`` and teacher forcing)."""
    table_batch: int = option(16, minimum=1)
    """Prompts run side by side when the cached tables are built (speed only)."""

    def env_kwargs(self) -> dict[str, Any]:
        """The generation settings as ``gym.make`` kwargs (decoder and heads go elsewhere)."""
        return {"max_prompts": self.max_prompts, "max_prompt_tokens": self.max_prompt_tokens,
                "max_new_tokens": self.max_new_tokens, "kv": self.kv,
                "teacher_forcing": self.teacher_forcing, "cached": self.cached,
                "table_batch": self.table_batch}


@dataclass(frozen=True)
class TrainConfig:
    """One training run (``exitgym train`` flags are generated from these fields)."""

    env: str = option("exitgym/EarlyExit-v0", choices=env_ids)
    """Environment id (see ``exitgym envs``)."""
    agent: str = option("reinforce", choices=lambda: agent_choices())
    """Agent: one of our trainers or an SB3 algorithm (``exitgym.agents.registry``); with
    ``exitgym train --engine rllib`` an RLlib algorithm (:data:`RLLIB_AGENTS`)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The prepared cache trained and evaluated on."""
    reward: str = option("hardness", choices=reward_names)
    """Reward shape (``exitgym.envs.rewards.REWARDS``)."""
    alpha: float | None = option(None, minimum=0)
    """Cost weight α of the reward (None: the reward's default); with --target-cost, its
    starting value."""
    target_cost: float | None = option(None, minimum=0)
    """Budget-targeted mode (REINFORCE family): adapt α during training until the mean cost
    meets this FLOPs fraction (``ReinforceConfig.target_cost``)."""
    multiplier: str | None = option(None, choices=MULTIPLIERS)
    """Multiplier rule of --target-cost: ``pid`` or ``plain`` (``ReinforceConfig.multiplier``);
    None: the trainer's default (``pid``)."""
    cost_conditioned: bool = False
    """REINFORCE family: train one policy for every cost weight, α an extra policy input drawn
    log-uniformly per update (``ReinforceConfig.cost_conditioned``); the run is evaluated at
    --alpha (clamped into the training range), ``policy.at(α)`` reads any other."""
    observation: str = "features"
    """Observation view the policy reads, e.g. features, logits, hidden+prev."""
    dense: bool = False
    """Dense reward delivery."""
    seed: int = 0
    """Seed of the policy, its sampling, the batch draws and SB3."""
    steps: int | None = option(None, minimum=1)
    """REINFORCE-family: policy updates; SB3: environment timesteps; None: the agent's default
    (:data:`AGENT_DEFAULTS`: 300 updates, or enough timesteps for SB3 agents to learn)."""
    batch_size: int = option(64, minimum=1)
    """Episodes per REINFORCE update."""
    num_envs: int = option(64, minimum=1)
    """Slots of the training vector env."""
    lr: float | None = None
    """Learning rate (None: the agent's own default: DQN 1e-4 (:data:`AGENT_DEFAULTS`),
    lexicographic 0.1, for its plain gradient step; every other agent :data:`DEFAULT_LR`)."""
    allowed_drop: float | None = option(None, minimum=0)
    """Lexicographic agent only: allowed quality drop below full depth (its knob,
    ``LexicoConfig.allowed_drop``); None: the trainer's default (0)."""
    baseline: str = option("self-critical", choices=ADVANTAGE_BASELINES)
    """REINFORCE's advantage baseline (``exitgym.agents.reinforce.ADVANTAGE_BASELINES``)."""
    checkpoint_every: int = option(50, minimum=1)
    """Updates between checkpoints (REINFORCE family: policy updates; SB3: rollout + training
    phases)."""
    n_steps: int | None = option(None, minimum=1)
    """SB3 on-policy agents (PPO, A2C): environment steps per env in each rollout (one update);
    None: the algorithm's default (PPO 2048, A2C 5)."""
    train_split: str = option(POLICY_SPLIT, choices=SPLITS)
    """Split trained on: by default rows the exit heads were not fitted on (see
    :data:`~exitgym.data.config.SPLITS`)."""
    eval_split: str = option("test", choices=SPLITS)
    """Split evaluated (and recorded) at the end."""
    token: TokenEnvConfig = field(default_factory=TokenEnvConfig)
    """``exitgym/TokenExit-v0`` only: the decoder, its heads and the generation settings."""
    device: str = "auto"
    """Where SB3 agents' networks train (``auto``, ``cpu``, ``cuda``, ``cuda:N``); recorded as
    ``trained_on`` in ``config.json``. REINFORCE-family policies are small MLPs on host-side
    observations and train on the CPU."""

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.env not in TOKEN_ENVS and self.token != TokenEnvConfig():
            changed = sorted(k for k, v in flatten(self.token).items()
                             if v != getattr(TokenEnvConfig(), k))
            raise ValueError(f"{['--' + k.replace('_', '-') for k in changed]} set the decoder "
                             f"env; they need --env {TOKEN_ENVS[0]} (not {self.env})")
        moved = [f"--{k}" for k in ("backbone", "heads")
                 if getattr(self.data, k) != getattr(DataConfig(), k)]
        if self.env in TOKEN_ENVS and moved:  # the decoder env used to ignore them silently
            raise ValueError(f"{moved} set the encoder envs; {self.env} takes the decoder as "
                             "--decoder and its exit heads as --decoder-heads")
        if self.env in TOKEN_ENVS and self.dense:
            raise ValueError(f"--dense is not available on {self.env} (it pays each token's "
                             "reward at the token's exit); leave it off")
        if self.env == ONE_STEP_ENV and self.dense:
            raise ValueError(f"--dense is not available on {self.env}: its episodes are one "
                             "decision long, so every reward is terminal; leave it off")
        if self.cost_conditioned and self.target_cost is not None:
            raise ValueError("--cost-conditioned trains for every cost weight and --target-cost "
                             "for one budget: pass one of them")
        if self.allowed_drop is not None and self.agent != LEXICOGRAPHIC:
            raise ValueError(f"--allowed-drop is the {LEXICOGRAPHIC!r} agent's knob; agent "
                             f"{self.agent!r} has none")

    def flat(self) -> dict[str, Any]:
        """The fields flat, as the flags are and ``config.json`` stores them; the decoder env's
        (:class:`TokenEnvConfig`) only in runs of that env, so encoder runs keep their layout."""
        values = flatten(self)
        if self.env not in TOKEN_ENVS:
            values = {k: v for k, v in values.items() if k not in flatten(self.token)}
        return values

    @property
    def learning_rate(self) -> float:
        """The learning rate the run uses: ``lr``, else the agent's default (what SB3 and RLlib
        are given, and what the run's report lists)."""
        if self.lr is not None:
            return self.lr
        if self.agent == LEXICOGRAPHIC:
            from exitgym.agents.lexicographic import LexicoConfig

            return float(LexicoConfig.lr)
        return DEFAULT_LR

    def with_agent_defaults(self, engine: str = "local") -> TrainConfig:
        """This config with its unset (None) fields set to the agent's defaults
        (:data:`AGENT_DEFAULTS`; RLlib agents get the ``"*"`` entry: ``steps`` are iterations)."""
        family = AGENT_DEFAULTS.get(self.agent, {}) if engine == "local" else {}
        defaults = {**AGENT_DEFAULTS["*"], **family}
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def env_spec(self, split: str | None = None, policy_flops: float = 0.0) -> EnvSpec:
        """The env of ``split`` (default the training split) charging ``policy_flops``."""
        kwargs: dict[str, Any] = {"reward": self.reward, "alpha": self.alpha,
                                  "dense": self.dense, "policy_flops": float(policy_flops)}
        if self.env in TOKEN_ENVS:  # a decoder env: no dense delivery, no prepared cache
            del kwargs["dense"]
            return EnvSpec(self.env, self.data.task, self.token.decoder, self.token.decoder_heads,
                           split or self.train_split, self.data.column_options(),
                           {**kwargs, "observation": self.observation,
                            **self.token.env_kwargs()})
        if self.env in CACHE_ENVS:  # live skip envs have a fixed observation
            kwargs["observation"] = self.observation
        if self.env == ONE_STEP_ENV:  # one decision per episode: nothing to deliver densely
            del kwargs["dense"]
        return EnvSpec.of(self.env, self.data, split or self.train_split, kwargs)


def rule_choices() -> tuple[str, ...]:
    """What ``--rules`` accepts: the exit rules and fitted baselines of the registry
    (:mod:`exitgym.agents.registry`), plug-ins registered so far included, each swept over its
    knob. ``oracle`` is always evaluated (it is a reference row).

    A function, not a constant: a plug-in rule registered by ``--import`` after this module was
    imported must be a valid choice.
    """
    return names("rule", "fitted")
BASELINE_RULES: tuple[str, ...] = ("static", "random")
"""Evaluated in every comparison whatever ``rules`` says: static truncation is the budget
table's reference and random exit the no-information floor."""


@dataclass(frozen=True)
class CompareConfig:
    """What ``exitgym compare`` trains and evaluates."""

    env: str = option(CACHE_ENVS[0], choices=(*CACHE_ENVS, *SKIP_ENVS))
    """Environment compared: the exit env, or a skip env (``SkipBlock-v0``,
    ``SwitchableDecision-v0``, encoder backbones), whose learned policies meet static skip
    patterns, every-other-layer and random skipping, with the exit methods of ``rules`` on the
    same heads as references (:mod:`exitgym.experiments.skip_compare`; ``--skip-prob 0.15`` gives
    the skip-tolerant heads the skip envs default to)."""
    data: DataConfig = field(default_factory=DataConfig)
    """The prepared cache every method is trained and evaluated on."""
    agent: str = option("reinforce", choices=lambda: describe(names("trainer")))
    """RL agent trained per reward shape and α (REINFORCE family)."""
    rewards: tuple[str, ...] = option(("vanilla", "hardness"), choices=reward_names)
    """Reward shapes compared."""
    alphas: tuple[float, ...] = option((0.05, 0.2, 0.5, 1.0), minimum=0)
    """Cost weights α: each traces one point of an agent's curve (unused with --targets)."""
    targets: tuple[float, ...] = option((), minimum=0)
    """Budget-targeted agents instead of α: one per target cost (the knob), α adapted from 0
    during training until the mean cost meets it. Empty: train per α."""
    drops: tuple[float, ...] = option((), minimum=0)
    """Lexicographic agents (Switchable Decision) trained besides ``agent``, one per allowed
    quality drop (the knob: cross-entropy above full depth's), on the ``flops`` reward. Empty:
    none."""
    fixed_alphas: tuple[float, ...] = option((), minimum=0)
    """With --targets: REINFORCE-vanilla agents at these fixed α as well (the fixed-λ arm of
    the lexicographic comparison; rows ``<agent>-vanilla``). Without --targets --alphas is
    that arm."""
    conditioned: tuple[str, ...] = option((), choices=reward_names)
    """Cost-conditioned REINFORCE agents (one policy for every budget, α an input drawn per
    update; rows ``<agent>-<reward>-conditioned``, read at every α of its grid), one per reward
    listed and seed. Empty: none."""
    consistentee: tuple[float, ...] = option((), minimum=0)
    """ConsistentEE agents (its full schedule: heads retrained at the exits, the official
    per-layer policy nets on the hidden state, mean-of-K baseline with K = 8 or the largest
    power of two dividing an even --batch-size), one per target cost of its budget-targeted
    policy phases (the knob); each gets ``steps`` policy updates in all. Empty: none."""
    sb3: tuple[str, ...] = option((), choices=lambda: describe(names("sb3")))
    """stable-baselines3 algorithms trained besides ``agent``, one per reward, α and seed (rows
    ``<algorithm>-<reward>``; ``MultiDiscrete`` actions on ``SwitchableDecision-v0``). Empty:
    none."""
    sb3_steps: int = option(20_000, minimum=1)
    """Environment timesteps of each SB3 agent."""
    sb3_n_steps: int = option(64, minimum=1)
    """Rollout length per env of the on-policy SB3 agents (PPO, A2C): one update every
    ``sb3_n_steps × min(num_envs, 8)`` timesteps."""
    rules: tuple[str, ...] = option(("entropy", "patience", "maxprob", "qexit", "oracle"),
                                    choices=lambda: describe(rule_choices()))
    """Exit rules and trained baselines swept over their default knob grids (plug-in rules only
    when listed here)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of every trained method (the budget table reports mean ± std over them)."""
    steps: int = option(300, minimum=1)
    """REINFORCE updates per trained agent."""
    batch_size: int = option(64, minimum=1)
    """Episodes per update."""
    num_envs: int = option(64, minimum=1)
    """Vector-env slots (training and evaluation)."""
    lr: float | None = None
    """Learning rate of the agents (None: each agent's default, ``TrainConfig.lr``)."""
    observation: str = "features"
    """Observation of the RL agents."""
    train_split: str = option(POLICY_SPLIT, choices=SPLITS)
    """Split the agents and trained baselines learn on: by default rows the exit heads were not
    fitted on, so learned methods see the confidences test inputs will show."""
    eval_split: str = option("test", choices=SPLITS)
    """Split everything is reported on (and recorded): used once, never for choosing."""
    selection_split: str = option("validation", choices=SPLITS)
    """Split every knob (α, θ, k, q, ...) is chosen on for the budget table."""
    budgets: tuple[float, ...] = option(BUDGETS, minimum=0)
    """FLOPs budgets of the budget table (fractions of the full model)."""
    device: str = "auto"
    """Where the SB3 agents' networks train (``TrainConfig.device`` of every run; recorded as
    ``trained_on``); the REINFORCE-family policies train on the CPU."""

    def __post_init__(self) -> None:
        check_device(self.device)
        for rule in self.rules:  # a plug-in's rule is looked up among installed plug-ins too
            lookup(rule, "rule", "fitted", what="rule")
        if not self.seeds:
            raise ValueError("compare needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"compare seeds must be distinct, got {list(self.seeds)}")
        if self.consistentee:  # fail before any training, not at the first ConsistentEE agent
            from exitgym.agents.consistentee_policy import rollouts_per_sample

            rollouts_per_sample(self.batch_size)
        if self.env in SKIP_ENVS and self.consistentee:
            raise ValueError(f"--consistentee trains exit heads and exit policies; it has no "
                             f"skip decisions to make on {self.env} (use --env {CACHE_ENVS[0]})")
        if self.selection_split in (self.eval_split, self.train_split):
            raise ValueError(f"selection_split {self.selection_split!r} must differ from the "
                             f"train split ({self.train_split!r}) and the evaluation split "
                             f"({self.eval_split!r}): knobs chosen on the reported split give "
                             "an optimistic table")

    @property
    def all_rules(self) -> tuple[str, ...]:
        """``rules`` plus :data:`BASELINE_RULES` (in registry order, each once)."""
        wanted = set(self.rules) | set(BASELINE_RULES)
        return tuple(n for n in rule_choices() if n in wanted)

    @property
    def agent_knobs(self) -> tuple[float, ...]:
        """What each agent run is trained at: the target costs, else the α grid."""
        return self.targets or self.alphas

    def agent_config(self, reward: str, knob: float, seed: int) -> TrainConfig:
        """The training run of one agent knob (a target cost or an α, see ``targets``)."""
        if self.targets:
            return replace(self.train_config(reward, 0.0, seed), target_cost=knob)
        return self.train_config(reward, knob, seed)

    def conditioned_config(self, reward: str, seed: int) -> TrainConfig:
        """The training run of one cost-conditioned agent (evaluated at α = 0.2 by ``train``;
        ``compare`` reads it at every α of its grid)."""
        return replace(self.train_config(reward, 0.2, seed), cost_conditioned=True)

    def sb3_config(self, algorithm: str, reward: str, alpha: float, seed: int) -> TrainConfig:
        """The training run of one SB3 agent (``sb3_steps`` timesteps, rollouts of
        ``sb3_n_steps`` for the on-policy ones)."""
        on_policy = algorithm in ("ppo", "a2c", "maskable-ppo")
        return replace(self.train_config(reward, alpha, seed), agent=algorithm,
                       steps=self.sb3_steps, lr=None,
                       n_steps=self.sb3_n_steps if on_policy else None,
                       checkpoint_every=max(1, self.sb3_steps))

    def lexico_config(self, drop: float, seed: int) -> TrainConfig:
        """The training run of one lexicographic agent (allowed drop ``drop``)."""
        return replace(self.train_config("flops", None, seed), agent=LEXICOGRAPHIC,
                       allowed_drop=drop)

    def train_config(self, reward: str, alpha: float | None, seed: int) -> TrainConfig:
        return TrainConfig(env=self.env, agent=self.agent, data=self.data, reward=reward,
                           alpha=alpha, observation=self.observation, seed=seed, steps=self.steps,
                           batch_size=self.batch_size, num_envs=self.num_envs, lr=self.lr,
                           checkpoint_every=max(1, self.steps), train_split=self.train_split,
                           eval_split=self.eval_split, device=self.device)

    def rule_spec(self, observation: str) -> EnvSpec:
        """Env of the rules: evaluation split, the observation the rule reads, no policy cost."""
        base = replace(self.train_config("vanilla", 0.2, 0), env=CACHE_ENVS[0])
        return base.env_spec(self.eval_split).with_kwargs(observation=observation, alpha=None)
