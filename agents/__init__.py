"""Agents of exitgym: REINFORCE, lexicographic constraint, ConsistentEE, SB3 glue, exit rules.

Every method implements :class:`~exitgym.agents.base.Policy` and is measured by the one
:func:`~exitgym.agents.base.evaluate`. Torch-based modules (REINFORCE, PALBERT, BERxiT, SB3) are
imported lazily so that ``import exitgym.agents`` stays light.
"""

from __future__ import annotations

from typing import Any

from exitgym.agents.base import Policy, evaluate
from exitgym.agents.rules import (
    RULES,
    EntropyExit,
    ExitRule,
    MaxProbExit,
    OracleExit,
    PatienceExit,
    RandomExit,
    StaticExit,
    make_rule,
)

_LAZY = {
    "Reinforce": "reinforce", "ReinforceConfig": "reinforce", "MLPPolicy": "mlp_policy",
    "Lexicographic": "lexicographic", "LexicoConfig": "lexicographic",
    "ConsistentEE": "consistentee", "ConsistentEEConfig": "consistentee",
    "Palbert": "palbert", "PalbertConfig": "palbert", "Berxit": "berxit",
    "BerxitConfig": "berxit", "train_sb3": "sb3", "load_sb3": "sb3", "SB3Policy": "sb3",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"exitgym.agents.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'exitgym.agents' has no attribute {name!r}")


__all__ = [
    "RULES", "EntropyExit", "ExitRule", "MaxProbExit", "OracleExit", "PatienceExit", "Policy",
    "RandomExit", "StaticExit", "evaluate", "make_rule", *sorted(_LAZY),
]
