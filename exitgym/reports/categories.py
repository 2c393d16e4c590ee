"""Which family each compared method belongs to: rules, supervised exits, or RL.

Why: "learned methods lose to the rules" mixed trained exit predictors (BERxiT, PALBERT's Q-exit)
into "the rules" while comparing them with RL agents. Every table and plot groups methods into
three categories, and the headline finding compares the best RL method with the best *non-RL*
method (rules and supervised exits), both chosen on validation:

- ``rule``: no training, a threshold on a statistic (entropy, max-probability, patience, CALM's
  margin and saturation), static truncation, random exit, and the skip environments' fixed
  decisions (static skip patterns, every other layer, random skipping);
- ``supervised``: exit predictors fitted with a supervised or likelihood loss on the training
  split (BERxiT, PALBERT's Q-exit and sampling criterion);
- ``rl``: policies trained with reinforcement learning (REINFORCE with any reward, lexicographic,
  ConsistentEE, stable-baselines3, RLlib), whatever reading of them is evaluated;
- ``reference``: full depth and the oracle (never selected).
"""

from __future__ import annotations

from collections.abc import Iterable

CATEGORIES: tuple[str, ...] = ("rule", "supervised", "rl")
"""The compared categories, in the order tables list them."""
NON_RL: tuple[str, ...] = ("rule", "supervised")
"""What "best non-RL" chooses among."""
REFERENCES: tuple[str, ...] = ("full-depth", "oracle")
_KIND_CATEGORY = {"rule": "rule", "fitted": "supervised", "trainer": "rl", "sb3": "rl",
                  "schedule": "rl", "skip": "rule"}


def category(method: str) -> str:
    """The category of a row's method name (``<agent>-<reward>[-suffix]`` names are RL)."""
    from exitgym.agents.registry import METHODS

    if method in REFERENCES:
        return "reference"
    if method in METHODS:
        return _KIND_CATEGORY[METHODS[method].kind]
    head = method.split("-", 1)[0]
    if head in METHODS and METHODS[head].kind in ("rule", "fitted"):
        return _KIND_CATEGORY[METHODS[head].kind]
    return "rl"  # a trained ``<agent>-<reward>`` row (REINFORCE, SB3, RLlib, plug-in agents)


def categories(methods: Iterable[str]) -> dict[str, str]:
    """``method -> category`` of every name."""
    return {m: category(m) for m in methods}


__all__ = ["CATEGORIES", "NON_RL", "REFERENCES", "categories", "category"]
