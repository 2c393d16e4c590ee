"""Agents of exitgym: REINFORCE, lexicographic constraint, ConsistentEE, SB3 glue, exit rules.

Every method is listed once, by name, in :mod:`exitgym.agents.registry` (:data:`METHODS`), acts
through the :class:`~exitgym.agents.base.Policy` protocol and is measured by the one
:func:`~exitgym.agents.base.evaluate`; the learning ones implement
:class:`~exitgym.agents.base.Trainer`. Everything but the protocols is loaded on first use, so
``import exitgym.agents`` stays light (torch-based modules load only when used).
"""

from __future__ import annotations

import importlib
from typing import Any

from exitgym.agents.base import Policy, Trainer, evaluate

_RULES = ("EntropyExit", "ExitRule", "MaxProbExit", "OracleExit", "PatienceExit", "RandomExit",
          "StaticExit", "ThresholdExit")
_LAZY = {
    "Reinforce": "reinforce", "ReinforceConfig": "reinforce", "MLPPolicy": "mlp_policy",
    "ConditionedPolicy": "conditioned", "CONDITIONED_ALPHAS": "conditioned",
    "PIDGains": "multiplier",
    "Lexicographic": "lexicographic", "LexicoConfig": "lexicographic",
    "ConsistentEE": "consistentee", "ConsistentEEConfig": "consistentee",
    "PerLayerExitPolicy": "consistentee_policy", "PerLayerReinforce": "consistentee_policy",
    "Palbert": "palbert", "PalbertConfig": "palbert", "Berxit": "berxit",
    "BerxitConfig": "berxit", "train_sb3": "sb3", "load_sb3": "sb3", "SB3Policy": "sb3",
    "METHODS": "registry", "Method": "registry", "lookup": "registry", "make_rule": "registry",
    "names": "registry", **dict.fromkeys(_RULES, "rules"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"exitgym.agents.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'exitgym.agents' has no attribute {name!r}")


__all__ = ["Policy", "Trainer", "evaluate", *sorted(_LAZY)]
