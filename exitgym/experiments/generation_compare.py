"""The generation comparison (``exitgym demo --generation``): token-level early exit on a decoder
LM under the comparison protocol of the encoder ``compare`` (docs/design.md §5).

Every method decides, at every layer of every generated token, whether the token exits; quality
is each prompt's **agreement** with the full-depth continuation (CALM's consistency, no labels),
cost the FLOPs charged over the full-depth FLOPs of the same tokens. The environment is
``exitgym/TokenExit-v0`` in its cached mode (``kv="full"``, teacher forcing): one decoder pass
per split serves every method, view and reward (:mod:`exitgym.envs.token_tables`).

Protocol, shared with :mod:`exitgym.experiments.compare` through
:mod:`exitgym.reports.budget` and :mod:`exitgym.reports.comparison`:

- REINFORCE (``hardness`` and ``vanilla`` rewards, budget-targeted, one agent per target cost and
  seed: method ``reinforce-<reward>-budget``, knob the target) trains on the **policy** split's
  prompts (training rows the distilled heads never saw); the agent of the highest target is also
  read at calibrated exit thresholds ``τ`` (``reinforce-<reward>-calibrated``, knob ``τ``,
  :mod:`exitgym.agents.calibrated`), so a trained policy offers a curve of operating points and
  validation picks one per budget, as it picks a rule's θ;
- every method at every knob and seed is evaluated greedily by the one evaluation
  (:func:`~exitgym.agents.rollout.evaluate`) on **validation** (knob selection) and **test**
  (reported); static truncation and random exit always; the token oracle as a reference row;
- the budget table picks each method's point per budget on validation and reports it on test
  with a paired bootstrap 95 % CI of its difference to static truncation.

Views and what they are charged: the confidence rules (entropy, max-probability, patience, CALM's
softmax margin) read the ``features`` view, which runs the LM head at every layer and pays for it
(on SmolLM2-135M one head costs a quarter of a token); static truncation, random exit and the
oracle read ``depth`` (one head, at the exit); CALM's state saturation and the learned agents read
``depth+hidden+prev`` (no head before the exit).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exitgym.agents.calibrated import CALIBRATION_TAUS
from exitgym.reports.budget import BUDGETS, Evaluation, budget_table, smallest_detectable
from exitgym.reports.categories import categories
from exitgym.reports.comparison import FULL_DEPTH, ORACLE, make_row, write_report
from exitgym.utils.configs import option

SPLITS = ("policy", "validation", "test")
"""Where the agents learn (``policy``: training rows held out from the distilled heads' fit),
where knobs are chosen, what is reported."""
DEPTH_RULES: tuple[str, ...] = ("static", "random")
"""Registry rules that read no statistic at all (the layer count, a coin): they get the ``depth``
view, which runs one head, at the exit."""


def rule_views() -> dict[str, str]:
    """Each exit rule of the comparison and the observation it reads: every built-in ``rule`` of
    the method registry (:mod:`exitgym.agents.registry`) but the encoder oracle, which reads a
    ``LayerCache`` (the token oracle is the comparison's reference row instead). Installed
    plug-in rules are left out: nobody asked for them here.

    Views (see the module docstring): :data:`DEPTH_RULES` ``depth``; a rule whose required view
    reads no head (saturation's ``depth+hidden+prev``) that view; the confidence rules
    ``features`` (the statistics, paid a head per layer).
    """
    from exitgym.agents.registry import make_rule, names
    from exitgym.envs.token_core import STATELESS_VIEWS

    views = {}
    for name in names("rule", plugins=False):
        if name in (ORACLE, "predictor"):  # the predictor rule needs a fitted predictor
            continue
        need = make_rule(name).required_observation
        headless = all(part in STATELESS_VIEWS for part in need.split("+"))
        views[name] = "depth" if name in DEPTH_RULES else need if headless else "features"
    return views


@dataclass(frozen=True)
class GenerationCompareConfig:
    """What ``exitgym demo --generation`` trains and evaluates."""

    backbone: Any = "smollm2-135m"
    """Decoder short name or local directory (or a loaded ``DecoderBackbone``)."""
    task: str = "rt-polarity"
    """Task whose split texts are the prompts."""
    prompts: tuple[int, ...] = option((48, 48, 96), minimum=1)
    """Prompts of the policy, validation and test splits (the first ones of each split)."""
    max_prompt_tokens: int = option(24, minimum=1)
    """Prompts are cut to this many tokens."""
    max_new_tokens: int = option(8, minimum=1)
    """Tokens generated per prompt (each one an exit decision)."""
    rewards: tuple[str, ...] = ("hardness", "vanilla")
    """Reward shapes of the REINFORCE agents."""
    targets: tuple[float, ...] = option((0.4, 0.7), minimum=0)
    """Target costs of the budget-targeted agents (one agent per target, reward and seed)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds of the agents and of random exit (the budget table averages over them)."""
    steps: int = option(60, minimum=1)
    """REINFORCE updates per agent. With 48 / 48 / 96 prompts of 8 tokens the whole demo took
    347 s on the 2-core machine (decoder passes 186 s, agents with their calibrated readings
    127 s, rules 27 s; measured)."""
    batch_size: int = option(16, minimum=1)
    """Episodes (prompts) per update (also the evaluation's vector-env width)."""
    lr: float = 3e-3
    """Learning rate of the agents."""
    observation: str = "depth+hidden+prev"
    """Observation of the agents. Head-free, like saturation: with ``features`` they pay a head
    per layer (a quarter of a token), went past every budget in 30 updates and took 6 of the
    demo's 10 minutes (measured)."""
    calibrate: tuple[float, ...] = option(CALIBRATION_TAUS, minimum=0)
    """Thresholds ``τ`` on ``P(exit)`` at which the agent of the highest target is also read
    (:mod:`exitgym.agents.calibrated`; method ``reinforce-<reward>-calibrated``, knob ``τ``,
    chosen on validation per budget like a rule's θ). Empty: no calibrated rows."""
    budgets: tuple[float, ...] = option((*BUDGETS, 0.9), minimum=0)
    """FLOPs budgets of the budget table (up to 0.9: agreement with the full model rises
    steeply over the last layers, so the high budgets are where methods differ most)."""
    table_batch: int = option(16, minimum=1)
    """Prompts run side by side when the cached tables are built (speed only)."""
    heads: Any = "distilled"
    """Exit heads: ``lm-head`` (the model's head at every layer), ``distilled`` (per-layer maps
    fitted to the last layer on the task's train texts, :mod:`exitgym.data.decoder_heads`),
    ``trained`` (low-rank adapters trained for the frozen decoder,
    :mod:`exitgym.data.trained_heads`) or ``LayerMaps`` / ``LowRankMaps``."""
    prompt_ids: tuple[Any, ...] | None = None
    """Token-id prompts per split instead of the task's texts (tests, tokenizer-less decoders)."""

    def __post_init__(self) -> None:
        if len(self.prompts) != len(SPLITS):
            raise ValueError(f"prompts needs one count per split {list(SPLITS)}, got "
                             f"{list(self.prompts)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {list(self.seeds)}")

    def env(self, split: str, num_envs: int, backbone: Any, **kwargs: Any) -> Any:
        """The cached vector TokenExit-v0 of ``split``'s prompts."""
        from exitgym.envs.token_exit_vector import TokenExitVectorEnv

        k = SPLITS.index(split)
        settings = {"backbone": backbone, "task": self.task, "split": split,
                    "prompts": None if self.prompt_ids is None else list(self.prompt_ids[k]),
                    "max_prompts": self.prompts[k],
                    "max_prompt_tokens": self.max_prompt_tokens,
                    "max_new_tokens": self.max_new_tokens, "kv": "full",
                    "teacher_forcing": True, "cached": True, "table_batch": self.table_batch,
                    "heads": self.heads,
                    "reward": "vanilla", **kwargs}
        return TokenExitVectorEnv(num_envs, **settings)


def token_exit_layers(actions: Any, num_layers: int) -> list[int]:
    """The 0-based exit layer of every token of one episode, from its actions (a token exits
    on action 1 or at its last layer)."""
    exits, layer = [], 0
    for action in actions:
        if int(action) == 1 or layer == num_layers - 1:
            exits.append(layer)
            layer = 0
        else:
            layer += 1
    return exits


@dataclass(frozen=True)
class Scored:
    """One evaluation scored per prompt."""

    agreement: np.ndarray
    """float64 ``[N]``: each prompt's share of tokens equal to the full-depth ones (sample-id
    order)."""
    cost: float
    """Mean cost over prompts."""
    exit_layer: float
    """Mean 1-based exit layer over tokens."""


def score(result: Any, tables: Any) -> Scored:
    """Per-prompt agreement of an :class:`~exitgym.agents.records.EvalResult` on a cached env
    (its records hold the actions; the tables say what each exit emitted)."""
    L = tables.emitted.shape[-1]
    records = sorted(result.records, key=lambda r: r.sample_id)
    agree, layers = [], []
    for r in records:
        exits = token_exit_layers(r.actions, L)
        tokens = np.arange(len(exits))
        agree.append(float(np.mean(tables.emitted[r.sample_id, tokens, exits]
                                   == tables.reference[r.sample_id, tokens])))
        layers += exits
    return Scored(np.array(agree), float(result.cost), float(np.mean(layers)) + 1.0)


class _Study:
    """The comparison's envs, evaluations and rows (one per :func:`generation_compare`)."""

    def __init__(self, config: GenerationCompareConfig, backbone: Any) -> None:
        self.config, self.backbone = config, backbone
        self.rows: list[dict[str, Any]] = []
        self.selection_rows: list[dict[str, Any]] = []
        self.evaluations: list[Evaluation] = []
        self._envs: dict[tuple[Any, ...], Any] = {}

    def env(self, split: str, observation: str, policy_flops: float = 0.0) -> Any:
        key = (split, observation, policy_flops)
        if key not in self._envs:
            self._envs[key] = self.config.env(split, self.config.batch_size, self.backbone,
                                              observation=observation,
                                              policy_flops=policy_flops)
        return self._envs[key]

    def add(self, method: str, knob: float | None, seed: int, policy: Any, observation: str,
            policy_flops: float = 0.0) -> None:
        """Evaluate ``policy`` on validation and test; keep the rows and the evaluation."""
        from exitgym.agents.rollout import evaluate

        out = {}
        for split in ("validation", "test"):
            env = self.env(split, observation, policy_flops)
            out[split] = score(evaluate(policy, env, seed=seed), env.tables)
        val, test = out["validation"], out["test"]
        self.selection_rows.append(make_row(method, knob, seed, float(val.agreement.mean()),
                                            val.cost, val.exit_layer))
        self.rows.append(make_row(method, knob, seed, float(test.agreement.mean()), test.cost,
                                  test.exit_layer))
        if method != ORACLE:
            self.evaluations.append(Evaluation(method, knob, seed, val.cost,
                                               float(val.agreement.mean()), test.cost,
                                               test.agreement))


def _rules(study: _Study, progress: Any) -> None:
    """Every rule over its knob grid (seeded rules per seed), then the oracle."""
    from exitgym.agents.generation_rules import TokenOracleExit
    from exitgym.agents.registry import lookup, make_rule

    config, L = study.config, study.backbone.num_layers
    for name, view in rule_views().items():
        seeded = lookup(name, "rule").seeded
        for seed in config.seeds if seeded else config.seeds[:1]:
            base = make_rule(name, **({"seed": seed} if seeded else {}))
            progress(f"rule {name} seed {seed}")
            for rule in base.sweep(L):
                knob = getattr(rule, rule.knob) if rule.knob else None
                study.add(name, knob, seed, rule.reading(view) if view != rule.required_observation
                          else rule, view)
    from exitgym.agents.rollout import evaluate

    seed = config.seeds[0]
    for split, rows in (("validation", study.selection_rows), ("test", study.rows)):
        env = study.env(split, "depth")
        result = score(evaluate(TokenOracleExit(env.tables), env, seed=seed), env.tables)
        rows.append(make_row(ORACLE, None, seed, float(result.agreement.mean()), result.cost,
                             result.exit_layer))


def _agents(study: _Study, progress: Any) -> dict[str, float]:
    """Train every REINFORCE agent on the policy prompts and evaluate it (the highest target's
    agent also at each calibrated threshold); policy FLOPs charged."""
    from exitgym.agents.calibrated import CalibratedExit
    from exitgym.agents.registry import lookup

    config = study.config
    method = lookup("reinforce", "trainer")
    assert method.policy_flops is not None
    flops_of: dict[str, float] = {}
    for reward in config.rewards:
        for target in config.targets:
            for seed in config.seeds:
                progress(f"REINFORCE {reward} target {target:g} seed {seed}")
                knobs = {"baseline": "self-critical", "batch_size": config.batch_size,
                         "lr": config.lr, "seed": seed, "target_cost": target}
                probe = study.env(SPLITS[0], config.observation)
                pf = float(method.policy_flops(probe.single_observation_space,
                                               probe.single_action_space,
                                               config.observation, **knobs))
                env = config.env(SPLITS[0], config.batch_size, study.backbone,
                                 observation=config.observation, policy_flops=pf,
                                 reward=reward)
                agent = method.factory(env, **knobs)
                for _ in range(config.steps):
                    agent.update()
                env.close()
                study.add(f"reinforce-{reward}-budget", target, seed, agent.policy,
                          config.observation, pf)
                flops_of[f"reinforce-{reward}-budget"] = pf
                if target == max(config.targets):
                    for tau in config.calibrate:
                        study.add(f"reinforce-{reward}-calibrated", tau, seed,
                                  CalibratedExit(agent.policy, tau), config.observation, pf)
                    flops_of[f"reinforce-{reward}-calibrated"] = pf
    return flops_of


def generation_compare(config: GenerationCompareConfig, out: str | Path,
                       progress: bool = True, sections: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the comparison into ``out`` (``summary.json``, ``pareto.png``, ``report.md``); return
    the summary (with ``timings`` in seconds per phase).

    Everything runs on one torch thread: on the shared 2-core machine two threads made the
    decoder passes several times slower (their hand-offs wait on the other workers).
    """
    from exitgym.utils.threads import one_torch_thread

    with one_torch_thread():
        return _generation_compare(config, out, progress, sections)


def _generation_compare(config: GenerationCompareConfig, out: str | Path, progress: bool,
                        sections: tuple[str, ...]) -> dict[str, Any]:
    from exitgym.backbones.decoder_registry import load_decoder
    from exitgym.utils.atomic import jsonable

    def say(message: str) -> None:
        if progress:
            print(f"  {message}", flush=True)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    tic = time.perf_counter()
    bb = (load_decoder(config.backbone) if isinstance(config.backbone, str)
          else config.backbone)
    timings["load"] = time.perf_counter() - tic
    distill: dict[str, Any] = {}
    if config.heads == "distilled":  # prepared once (reused later), its agreement reported
        from exitgym.data.decoder_heads import prepare_distilled

        tic = time.perf_counter()
        say("distilled heads (prepared once, then reused)")
        _, meta = prepare_distilled(bb, config.task, progress=False)
        distill = {"distilled_heads": {k: meta[k] for k in (
            "agreement_validation", "positions", "head_flops_extra", "fit_s")}}
        timings["distill"] = time.perf_counter() - tic
    elif config.heads == "trained":
        from exitgym.data.trained_heads import prepare_trained

        tic = time.perf_counter()
        say("trained heads (prepared once, then reused)")
        *_, meta = prepare_trained(bb, config.task, progress=False)
        distill = {"trained_heads": {k: meta[k] for k in (
            "agreement_validation", "kl_train", "positions", "head_flops_extra", "train_s")}}
        timings["train_heads"] = time.perf_counter() - tic
    study = _Study(config, bb)
    tic = time.perf_counter()
    per_layer = {}
    for split in SPLITS:
        say(f"decoder pass over the {split} prompts")
        tables = study.env(split, "depth").tables
        per_layer[split] = [float(a) for a in
                            (tables.emitted == tables.reference[..., None]).mean(axis=(0, 1))]
    timings["tables"] = time.perf_counter() - tic
    tic = time.perf_counter()
    policy_flops = _agents(study, say)
    timings["agents"] = time.perf_counter() - tic
    tic = time.perf_counter()
    _rules(study, say)
    timings["rules"] = time.perf_counter() - tic
    L, seed0 = bb.num_layers, config.seeds[0]
    study.rows.append(make_row(FULL_DEPTH, None, seed0, 1.0, 1.0, float(L)))
    table = budget_table(study.evaluations, config.seeds, config.budgets,
                         categories=categories({e.method for e in study.evaluations}))
    test = study.env("test", "depth")
    meta = {"task": config.task, "backbone": str(getattr(bb, "name", config.backbone)),
            "split": "test", "samples": int(test.num_samples), "layers": L,
            "tokens_per_prompt": config.max_new_tokens, "seeds": list(config.seeds),
            "updates_per_agent": config.steps, "quality": "agreement with full depth"}
    heads = config.heads if isinstance(config.heads, str) else "LayerMaps"
    extra = {"heads": heads, "per_layer_accuracy": per_layer,
             "selection_split": "validation", "seeds": list(config.seeds),
             "budget_table": table, "smallest_detectable": smallest_detectable(table),
             "selection_rows": study.selection_rows, "policy_flops": policy_flops,
             "rule_views": rule_views(),
             "config": jsonable({k: v for k, v in config.__dict__.items()
                                 if k not in ("backbone", "prompt_ids", "heads")}),
             "timings": timings, **distill}
    title = (f"exitgym demo --generation: {config.backbone} on {config.task} prompts, "
             f"agreement with full depth vs cost on test")
    return write_report(out, study.rows, title, meta, sections, extra)


__all__ = ["DEPTH_RULES", "GenerationCompareConfig", "Scored", "generation_compare", "rule_views",
           "score", "token_exit_layers"]
