"""One registry of every exitgym method: trainers, SB3 algorithms, exit rules, fitted baselines.

``exitgym train --agent``, ``exitgym compare --rules``, ``evaluate`` and ``load_policy`` all look
methods up here, so adding a method is one :class:`Method` entry and every listing, help text and
error message ("unknown agent 'x'; allowed: [...]") follows. Kinds:

- ``trainer``: our REINFORCE-family trainers (:class:`~exitgym.agents.base.Trainer`: checkpoints,
  bit-identical resume);
- ``sb3``: stable-baselines3 algorithms (trained by :func:`~exitgym.agents.sb3.train_sb3`);
- ``schedule``: ConsistentEE's alternating heads / policy schedule (it retrains the heads, so it
  runs on caches rather than in ``exitgym train``);
- ``rule``: the classic exit rules (:mod:`exitgym.agents.rules`) and CALM's margin and state
  saturation (:mod:`exitgym.agents.generation_rules`; they read views every env has, so they
  run on ``EarlyExit-v0`` as well as ``TokenExit-v0``), nothing to train. The token oracle of
  generation is not an entry: it is built from the cached ``TokenTables`` of the env it is
  evaluated on, which neither ``make_rule(**knobs)`` nor a rule's ``sweep(train_cache,
  eval_cache, seed)`` (encoder ``LayerCache`` objects) can hand it;
- ``fitted``: baselines fitted on the training cache (PALBERT's Q-exit, BERxiT);
- ``skip``: baselines of the skip environments (:mod:`exitgym.agents.skip_baselines`: static
  patterns, every other layer, random skipping); their sweep takes a ``SkipTarget``.

Rules and fitted baselines carry a ``sweep`` tracing their accuracy-cost curve over their knob.
Torch-based implementations are imported only when an entry is used, so importing the registry
stays light.

Users add rules and trainers the way they add rewards: :func:`register_rule` and
:func:`register_agent` decorate a class in a module given to ``--import`` (or named by an entry
point of group ``exitgym.agents``). A plug-in is used only where it is named (``--rules
my-rule``, ``--agent my-agent``): listings that choose methods by default (``demo
--generation``'s rules) leave plug-ins out (:func:`names` with ``plugins=False``).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from exitgym.agents.generation_rules import MarginExit, PredictorExit, SaturationExit
from exitgym.agents.rules import (
    EntropyExit,
    ExitRule,
    MaxProbExit,
    OracleExit,
    PatienceExit,
    RandomExit,
    StaticExit,
)
from exitgym.agents.skip_baselines import SKIP_BASELINES
from exitgym.backbones.layer_cache import LayerCache
from exitgym.utils.plugins import GROUPS, failed_note, load_entry_points, require_type
from exitgym.utils.registry import check_name, qualified_name

KINDS: tuple[str, ...] = ("trainer", "sb3", "schedule", "rule", "fitted", "skip")
"""Every kind of method, in the order listings show them."""

Sweep = Callable[[LayerCache, LayerCache, int], list[tuple[Any, float | None]]]
"""``sweep(train_cache, eval_cache, seed)`` -> ``[(policy, knob value), ...]``."""


@dataclass(frozen=True)
class Method:
    """One method of the registry."""

    name: str
    """Registry key: the name ``--agent`` / ``--rules`` accept."""
    kind: str
    """One of :data:`KINDS`."""
    description: str
    """One line for ``--help`` and listings."""
    factory: Callable[..., Any]
    """What makes the method: trainer ``(env, **knobs) -> Trainer``; sb3 ``() -> algorithm
    class``; schedule ``(cache, make_env, config) -> ConsistentEE``; rule the rule class
    (``factory(**knobs)``); fitted ``(train_cache, seed) -> model`` with ``with_knob``."""
    policy_flops: Callable[..., float] | None = None
    """trainer: ``(observation_space, action_space, observation, **knobs) -> FLOPs`` of the
    policy it will train, known before any env exists so the env can charge them."""
    sweep: Sweep | None = None
    """rule / fitted: the policies (and knob values) of the method's accuracy-cost curve."""
    seeded: bool = True
    """Its decisions depend on the seed (``compare`` evaluates seedless methods once)."""
    needs_action_masks: bool = False
    """It only trains on envs exposing ``action_masks()`` (``exitgym train``'s envs do not)."""
    knob: str | None = None
    """Name of the knob its curve sweeps (``"theta"``, ``"q"``, ...; None: no knob): a rule's,
    a fitted baseline's, or what ``compare`` sweeps for a method of this exact name
    (lexicographic: the allowed drop; ConsistentEE: the target cost). Trained
    ``<agent>-<reward>`` methods sweep the reward's α (or the target cost). Plots label
    operating points with it."""
    plugin: str | None = None
    """The plug-in's class or factory (``module.QualName``) that registered it; None for
    built-ins. Plug-ins are used only where named (see :func:`names`)."""


class UnknownMethodError(KeyError, ValueError):
    """A name missing from the registry (a ``KeyError`` for lookups, a ``ValueError`` for flags).

    The message lists the allowed names.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _trainer(name: str, description: str, module: str, trainer: str, config: str) -> Method:
    """A trainer entry: ``module.trainer(env, module.config(**knobs))`` (imported on first use)."""

    def classes() -> tuple[Any, Any]:
        mod = importlib.import_module(module)
        return getattr(mod, trainer), getattr(mod, config)

    return _trainer_of(name, description, classes)


def _trainer_of(name: str, description: str, classes: Callable[[], tuple[Any, Any]]) -> Method:
    """A trainer entry of the ``(trainer class, config class)`` that ``classes()`` returns."""

    def build(env: Any, **knobs: Any) -> Any:
        cls, config_cls = classes()
        return cls(env, config_cls(**knobs))

    def policy_flops(observation_space: Any, action_space: Any, observation: str,
                     **knobs: Any) -> float:
        cls, config_cls = classes()
        return cls.policy_config(observation_space, action_space, config_cls(**knobs),
                                 observation).flops

    return Method(name, "trainer", description, build, policy_flops=policy_flops)


def _loader(module: str, name: str) -> Callable[[], Any]:
    """A function importing ``module.name`` when called (SB3 and torch load on first use)."""
    return lambda: getattr(importlib.import_module(module), name)


def _consistentee(cache: LayerCache, make_env: Callable[[LayerCache], Any],
                  config: Any | None = None) -> Any:
    from exitgym.agents.consistentee import ConsistentEE

    return ConsistentEE(cache, make_env, config)


def _rule(cls: type[ExitRule], description: str, seeded: bool = False,
          on_eval_cache: bool = False) -> Method:
    """A rule entry; ``on_eval_cache``: the rule reads the evaluated split's cache (oracle)."""

    def sweep(train_cache: LayerCache, eval_cache: LayerCache,
              seed: int) -> list[tuple[Any, float | None]]:
        args: tuple[Any, ...] = (eval_cache,) if on_eval_cache else ()
        base = cls(*args, seed=seed) if seeded else cls(*args)
        return [(r, getattr(r, r.knob) if r.knob else None)
                for r in base.sweep(train_cache.num_layers)]

    return Method(cls.name, "rule", description, cls, sweep=sweep, seeded=seeded, knob=cls.knob)


@functools.lru_cache(maxsize=16)
def _fit_lambda(train_cache: LayerCache, seed: int) -> Any:
    """PALBERT's Λ fitted once per (cache object, seed): Q-exit and sampling share it, so the
    two criteria are compared on the same network (16 entries: a compare sweeps every seed of
    Q-exit before the sampling criterion's)."""
    from exitgym.agents.palbert import Palbert, PalbertConfig

    return Palbert.fit(train_cache, PalbertConfig(seed=seed), seed=seed)


def _fit_qexit(train_cache: LayerCache, seed: int) -> Any:
    return _fit_lambda(train_cache, seed)


def _fit_palbert_sample(train_cache: LayerCache, seed: int) -> Any:
    return _fit_lambda(train_cache, seed).with_criterion("sample")


def _fit_berxit(train_cache: LayerCache, seed: int) -> Any:
    from exitgym.agents.berxit import Berxit, BerxitConfig

    return Berxit.fit(train_cache, BerxitConfig(seed=seed))


def _fitted(name: str, description: str, fit: Callable[[LayerCache, int], Any],
            knob: str | None) -> Method:
    """A fitted baseline: fit on the training cache, then sweep the default grid of its knob
    (named ``knob``), or, ``knob=None``, evaluate the fitted model as it is: one point per seed."""

    def sweep(train_cache: LayerCache, eval_cache: LayerCache,
              seed: int) -> list[tuple[Any, float | None]]:
        model = fit(train_cache, seed)
        if not knob:
            return [(model, None)]
        return [(model.with_knob(k), k) for k in model.default_grid(train_cache.num_layers)]

    return Method(name, "fitted", description, fit, sweep=sweep, knob=knob)


def _sb3(name: str, module: str, algorithm: str, masks: bool = False) -> Method:
    return Method(name, "sb3", f"stable-baselines3 {algorithm}", _loader(module, algorithm),
                  needs_action_masks=masks)


METHODS: dict[str, Method] = {m.name: m for m in (
    _trainer("reinforce", "REINFORCE, MLP policy, self-critical baseline",
             "exitgym.agents.reinforce", "Reinforce", "ReinforceConfig"),
    replace(_trainer("lexicographic", "REINFORCE with the lexicographic quality constraint "
                     "(Switchable Decision); use --reward flops",
                     "exitgym.agents.lexicographic", "Lexicographic", "LexicoConfig"),
            knob="allowed_drop"),
    _sb3("ppo", "stable_baselines3", "PPO"),
    _sb3("a2c", "stable_baselines3", "A2C"),
    _sb3("dqn", "stable_baselines3", "DQN"),
    _sb3("maskable-ppo", "sb3_contrib", "MaskablePPO", masks=True),
    Method("consistentee", "schedule", "ConsistentEE: heads and per-layer exit nets (REINFORCE, "
           "mean-of-K baseline) trained in turns on a cache", _consistentee, knob="target"),
    # compare --rules lists the rule and fitted kinds in this order.
    _rule(EntropyExit, "DeeBERT: exit when the normalised entropy < theta"),
    _rule(MaxProbExit, "RightTool: exit when the max probability > theta"),
    _rule(PatienceExit, "PABEE: exit after t unchanged predictions"),
    _rule(StaticExit, "exit at a fixed layer k"),
    _rule(RandomExit, "exit with probability p at every layer", seeded=True),
    _rule(MarginExit, "CALM softmax response: exit when top-1 minus top-2 probability > theta"),
    _rule(SaturationExit, "CALM state saturation: exit when cos(h_l, h_l-1) > theta (reads "
          "depth+hidden+prev, no head)"),
    _rule(PredictorExit, "learned exit predictor: exit when a per-layer logistic model of the "
          "state says P(head agrees with the full depth) >= theta (reads depth+hidden; needs "
          "predictor=)"),
    _fitted("qexit", "PALBERT lambda heads with the Q-exit criterion (knob q)", _fit_qexit,
            "q"),
    _fitted("palbert-sample", "PALBERT lambda heads with PonderNet's sampling criterion (exit "
            "with probability lambda_l; no knob)", _fit_palbert_sample, None),
    _fitted("berxit", "BERxiT learning-to-exit regressor (knob theta)", _fit_berxit,
            "theta"),
    _rule(OracleExit, "exit at the earliest correct layer (reads the labels: the bound)",
          on_eval_cache=True),
    *(Method(n, "skip", d, sweep, sweep=sweep, seeded=seeded, knob=knob)
      for n, d, sweep, seeded, knob in SKIP_BASELINES),
)}
"""Every method by name."""


def names(*kinds: str, plugins: bool = True) -> tuple[str, ...]:
    """Names of the methods of the given kinds (all kinds when none), in registry order.

    ``plugins=False`` leaves plug-ins out: what a listing that picks methods unasked uses, since
    an installed plug-in must not join a comparison nobody asked it into.
    """
    return tuple(n for n, m in METHODS.items()
                 if (not kinds or m.kind in kinds) and (plugins or m.plugin is None))


def train_agents() -> tuple[str, ...]:
    """What ``exitgym train --agent`` accepts: trainers and SB3 algorithms on plain envs."""
    return tuple(n for n in names("trainer", "sb3") if not METHODS[n].needs_action_masks)


def lookup(name: str, *kinds: str, what: str = "method",
           allowed: tuple[str, ...] | None = None) -> Method:
    """The method ``name`` among ``kinds`` (or ``allowed`` names).

    Raises:
        UnknownMethodError: ``"unknown <what> 'x'; allowed: [...]"``.
    """
    if allowed is None:
        if name not in names(*kinds):
            load_agent_plugins()
        allowed = names(*kinds)
    if name not in allowed:
        raise UnknownMethodError(f"unknown {what} {name!r}; allowed: {sorted(allowed)}"
                                 f"{failed_note(GROUPS['agents'], [name])}")
    return METHODS[name]


def train_agent(name: str) -> Method:
    """The entry of an ``exitgym train --agent`` name (a trainer or an SB3 algorithm)."""
    if name not in train_agents():
        load_agent_plugins()
    return lookup(name, what="agent", allowed=train_agents())


def load_agent_plugins() -> None:
    """Add the methods of installed plug-ins (entry-point group ``exitgym.agents``), each under
    its entry point's name: a :class:`Method`, an :class:`ExitRule` subclass
    (:func:`register_rule`) or a trainer class (:func:`register_agent` with its default
    config); an entry point naming a module registers what its decorators do."""

    def register(name: str, obj: Any) -> None:
        if isinstance(obj, type) and issubclass(obj, ExitRule):
            register_rule(name)(obj)
        elif isinstance(obj, type):
            register_agent(name)(obj)
        else:
            require_type("agent", name, obj, Method)
            _add_plugin(replace(obj, name=name), qualified_name(obj.factory))

    load_entry_points(GROUPS["agents"], register)


def _add_plugin(method: Method, origin: str) -> None:
    """Add a plug-in's ``method``; ``origin`` names what registered it.

    Raises:
        ValueError: the name is taken by a built-in or by another plug-in (the same plug-in
            registered again, e.g. by a module imported twice, is allowed).
    """
    check_name(method.kind, method.name)
    existing = METHODS.get(method.name)
    if existing is not None and existing.plugin != origin:
        taken = existing.plugin or f"the built-in {existing.kind}"
        raise ValueError(f"{method.kind} {method.name!r} is already registered as {taken}; "
                         f"register yours under another name")
    METHODS[method.name] = replace(method, plugin=origin)


def _summary(cls: type) -> str:
    """The first line of a class's docstring (a plug-in's description when it gives none)."""
    return (inspect.getdoc(cls) or cls.__name__).strip().splitlines()[0]


def register_rule(name: str, *, description: str | None = None) -> Callable[[type], type]:
    """Class decorator adding an :class:`ExitRule` subclass as the ``rule`` method ``name``.

    The rule is swept over its :meth:`~ExitRule.default_grid` and evaluated by the code that
    evaluates the built-in rules (``exitgym compare --rules name``, :func:`make_rule`); a rule
    whose constructor takes ``seed`` is seeded (run once per seed). Example::

        @register_rule("falling-maxprob")
        class FallingMaxProb(ExitRule):
            knob = "theta"
            ...

    Raises:
        ValueError: the name is empty or taken. TypeError: not an ``ExitRule`` subclass.
    """
    check_name("rule", name)

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, ExitRule)):
            raise TypeError(f"register_rule({name!r}) needs an ExitRule subclass, got {cls!r}")
        seeded = "seed" in inspect.signature(cls).parameters
        method = _rule(cls, description or _summary(cls), seeded=seeded)
        _add_plugin(replace(method, name=name), qualified_name(cls))
        cls.name = name  # after the checks: a refused class keeps its name
        return cls

    return decorator


def register_agent(name: str, *, config: type | None = None,
                   description: str | None = None) -> Callable[[type], type]:
    """Class decorator adding a trainer as the ``trainer`` method ``name`` (``exitgym train
    --agent name``, ``compare --agent name``).

    The class is built as ``cls(env, config(**knobs))`` with the knobs ``exitgym train`` passes
    (``seed``, ``batch_size``, ``baseline``, ``lr``, ...), and its static
    ``policy_config(observation_space, action_space, config, observation)`` gives the policy's
    FLOPs before any env exists: a :class:`~exitgym.agents.reinforce.Reinforce` subclass has
    both. Its ``policy`` must save as an ``MLPPolicy`` does, so runs load it back.

    Args:
        name: The registry key.
        config: Its config dataclass (default :class:`~exitgym.agents.reinforce.ReinforceConfig`).
        description: One line for ``--help`` (default: the class docstring's first line).
    """
    check_name("agent", name)

    def decorator(cls: type) -> type:
        if not isinstance(cls, type) or not callable(getattr(cls, "policy_config", None)):
            raise TypeError(f"register_agent({name!r}) needs a trainer class with a static "
                            f"policy_config (e.g. a Reinforce subclass), got {cls!r}")

        def classes() -> tuple[type, type]:
            if config is not None:
                return cls, config
            from exitgym.agents.reinforce import ReinforceConfig

            return cls, ReinforceConfig

        method = _trainer_of(name, description or _summary(cls), classes)
        _add_plugin(method, qualified_name(cls))
        return cls

    return decorator


def describe(names: tuple[str, ...]) -> dict[str, str]:
    """``name -> one-line description`` of the named methods (what ``--help`` lists)."""
    return {n: METHODS[n].description for n in names}


def make_rule(name: str, **kwargs: Any) -> ExitRule:
    """Build an exit rule by name (``make_rule("entropy", theta=0.2)``)."""
    return lookup(name, "rule", what="exit rule").factory(**kwargs)


__all__ = ["KINDS", "METHODS", "Method", "Sweep", "UnknownMethodError", "describe", "lookup",
           "make_rule", "names", "register_agent", "register_rule", "train_agent",
           "train_agents"]
