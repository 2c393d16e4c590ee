"""Baselines of the skip environments: fixed skip patterns, every other layer, random skipping.

A skip policy decides, for each of the layers ``2..L``, whether its attention and its feed-forward
block run. Whether a learned policy earns its keep is only known next to the policies that decide
the same thing without looking at the input (issue 26, Switchable Decision §5):

- ``skip-pattern`` (knob ``k``, blocks skipped): the set of ``k`` blocks chosen on the
  selection split, exhaustively when there are few patterns, else greedily (each step adds the
  block whose loss costs the least selection accuracy); ``k = 0`` runs everything;
- ``skip-every-other`` (knob: action code): attention (1), FFN (2) or both (3) of layers 2, 4, ...;
- ``skip-random`` (knob ``p``): every block independently with probability ``p`` (LayerDrop at
  inference), drawn per input from ``(seed, sample_id)`` so a replay repeats it.

Every one acts through the :class:`~exitgym.agents.base.Policy` protocol in both skip
environments (per layer in ``SkipBlock-v0``, one decision vector in ``SwitchableDecision-v0``), so
``compare`` evaluates and records them with the code that evaluates the learned policies; their
decision FLOPs are 0. The pattern search reads only the selection split (its world is handed in).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FixedSkips", "RandomSkips", "SKIP_BASELINES", "SkipTarget", "every_other",
           "pattern_outcome", "search_patterns"]

SWITCHABLE_ID = "exitgym/SwitchableDecision-v0"
SKIP_ATTENTION, SKIP_FFN = 1, 2
"""``SkipBlock-v0``'s action codes (``exitgym.envs.skip_block``, which imports torch: the registry
imports this module and must stay light; a test checks they agree). Code 3 skips both."""
RANDOM_RATES: tuple[float, ...] = (0.15, 0.3, 0.45, 0.6, 0.75)
"""Skip rates of ``skip-random`` (each block skipped with this probability): up to 0.75 so
random skipping reaches the lowest budget of the table (0.5); at p ≤ 0.45 its mean cost stayed
above 0.6 on rt-polarity × MiniLM, measured)."""
EXHAUSTIVE_LIMIT = 64
"""Search every pattern when there are at most this many (``2^(2(L−1))``); else greedily."""


@dataclass(frozen=True)
class SkipTarget:
    """The environment a skip baseline acts in, and the selection split's world it may read."""

    env_id: str
    """``exitgym/SkipBlock-v0`` (one block action per layer) or the Switchable Decision id."""
    num_layers: int
    """Backbone layers ``L`` (decisions cover layers ``2..L``)."""
    token_entry: bool
    """Switchable Decision's action ends with a token strategy (encoders); 0 keeps every token."""
    world: Any = None
    """Selection split's ``SkipWorld`` (what ``skip-pattern`` searches on; None: not needed)."""

    @property
    def one_shot(self) -> bool:
        return self.env_id == SWITCHABLE_ID

    @property
    def num_blocks(self) -> int:
        """Skippable blocks: attention then FFN of layers ``2..L``."""
        return 2 * (self.num_layers - 1)


def decision_row(skips: np.ndarray, token_entry: bool) -> np.ndarray:
    """The Switchable Decision action of a skip vector (``[att 2..L, ffn 2..L]`` + token 0)."""
    row = np.asarray(skips, dtype=np.int64)
    return np.concatenate([row, [0]]) if token_entry else row


class _SkipPolicy:
    """Shared ``act``: a skip vector per row, read per layer (SkipBlock) or whole (Switchable)."""

    required_observation: str | None = None
    """Skip envs have one observation; nothing to check."""
    policy_flops: float = 0.0
    """No network: decisions cost nothing."""

    def __init__(self, target: SkipTarget) -> None:
        self.target = target

    def reset(self, num_envs: int) -> None:  # noqa: D102  (stateless between episodes)
        return None

    def skips(self, batch: int, infos: dict[str, Any] | None) -> np.ndarray:
        """bool ``[B, 2(L−1)]`` skip vectors of the rows' episodes."""
        raise NotImplementedError

    def act(self, obs: np.ndarray, infos: dict[str, Any] | None = None,
            deterministic: bool = True) -> np.ndarray:
        """One action per row (greedy and sampled are the same: the decisions are fixed)."""
        obs = np.atleast_2d(obs)
        skips = self.skips(obs.shape[0], infos)
        if self.target.one_shot:
            return np.stack([decision_row(s, self.target.token_entry) for s in skips])
        last = self.target.num_layers - 1
        # SkipBlock observations end with (layer fraction, cost); the fraction after layer
        # index i is (i + 1) / L and the decision is for layer index i + 1 (entry i).
        k = np.clip(np.rint(obs[:, -2] * self.target.num_layers).astype(np.int64) - 1, 0,
                    last - 1)
        rows = np.arange(obs.shape[0])
        att, ffn = skips[rows, k], skips[rows, last + k]
        return att * SKIP_ATTENTION + ffn * SKIP_FFN


class FixedSkips(_SkipPolicy):
    """The same skip vector for every input (a static pattern)."""

    def __init__(self, skips: np.ndarray, target: SkipTarget) -> None:
        super().__init__(target)
        self.pattern = np.asarray(skips, dtype=bool)
        if self.pattern.shape != (target.num_blocks,):
            raise ValueError(f"a skip pattern has {target.num_blocks} entries (attention then "
                             f"FFN of layers 2..{target.num_layers}), got {self.pattern.shape}")

    def skips(self, batch: int, infos: dict[str, Any] | None) -> np.ndarray:
        return np.broadcast_to(self.pattern, (batch, self.pattern.size))


class RandomSkips(_SkipPolicy):
    """Every block skipped with probability ``rate``, drawn per input from ``(seed, sample)``."""

    def __init__(self, rate: float, seed: int, target: SkipTarget) -> None:
        super().__init__(target)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"skip rate must be in [0, 1], got {rate}")
        self.rate, self.seed = float(rate), int(seed)

    def skips(self, batch: int, infos: dict[str, Any] | None) -> np.ndarray:
        ids = None if infos is None else infos.get("sample_id")
        if ids is None:
            raise ValueError("RandomSkips draws each input's skips from its sample id; call it "
                             "through exitgym's evaluate (which passes infos['sample_id'])")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        return np.stack([np.random.default_rng([self.seed, int(i)]).random(
            self.target.num_blocks) < self.rate for i in ids])


def every_other(code: int, target: SkipTarget) -> FixedSkips:
    """Skip attention (1), FFN (2) or both (3) of layers 2, 4, 6, ... (even 1-based index)."""
    if code not in (1, 2, 3):
        raise ValueError(f"every-other code must be 1 (attention), 2 (FFN) or 3 (both), got "
                         f"{code}")
    last = target.num_layers - 1
    layers = np.arange(2, target.num_layers + 1) % 2 == 0  # layers 2..L
    skips = np.zeros(target.num_blocks, dtype=bool)
    skips[:last] = layers & bool(code & SKIP_ATTENTION)
    skips[last:] = layers & bool(code & SKIP_FFN)
    return FixedSkips(skips, target)


def _chunks(world: Any, batch: int) -> list[np.ndarray]:
    """Sample ids in batches of similar length (less padding: a batch runs at its longest)."""
    order = np.argsort(world.executor.bank.lengths, kind="stable")
    return [order[i:i + batch] for i in range(0, order.size, batch)]


def pattern_outcome(world: Any, skips: np.ndarray, batch: int = 128) -> tuple[float, float]:
    """``(accuracy, mean cost)`` of running every input of ``world`` with ``skips``."""
    n = world.num_samples
    row = decision_row(skips, world.token_strategies)
    correct, cost = np.zeros(n, dtype=bool), np.zeros(n)
    for ids in _chunks(world, batch):
        info = world.decide(ids, np.tile(row, (ids.size, 1)))
        correct[ids], cost[ids] = info["correct"], info["cost"]
    return float(correct.mean()), float(cost.mean())


def extensions_outcome(world: Any, current: np.ndarray, batch: int = 128
                       ) -> dict[int, tuple[float, float]]:
    """``{j: (accuracy, mean cost)}`` of ``current`` with block ``j`` skipped too, for every
    block ``j`` it runs: :func:`pattern_outcome` of each, with the layers below ``j``'s run once
    for all of them (each extension starts from the shared state below its own layer), about
    half the work of running every extension from the embeddings.
    """
    from exitgym.envs.rewards import make_reward

    ex, shape = world.executor, make_reward("accuracy")
    last = world.num_layers - 1
    current = np.asarray(current, dtype=bool)
    blocks = np.flatnonzero(~current)
    correct = {int(j): np.zeros(world.num_samples, dtype=bool) for j in blocks}
    cost = {int(j): np.zeros(world.num_samples) for j in blocks}

    def run(cohort: Any, skips: np.ndarray, start: int, stop: int = last) -> None:
        for i in range(start, stop + 1):  # layer index i: skip entries i - 1 and last + i - 1
            size = cohort.size
            ex.run_layer(cohort, np.full(size, skips[i - 1]), np.full(size, skips[last + i - 1]))

    for ids in _chunks(world, batch):
        cohort = ex.start(ids, np.arange(ids.size))
        below = {}
        for i in range(1, last + 1):
            below[i] = copy.copy(cohort)  # run_layer replaces a cohort's arrays, never edits them
            if i < last:
                run(cohort, current, i, i)
        for j in correct:
            skips = current.copy()
            skips[j] = True
            branch = copy.copy(below[j % last + 1])
            run(branch, skips, j % last + 1)
            _, info = world.finish(shape, branch, np.ones(ids.size, dtype=bool), last)
            correct[j][ids], cost[j][ids] = info["correct"], info["cost"]
    return {j: (float(correct[j].mean()), float(cost[j].mean())) for j in correct}


def search_patterns(world: Any, num_layers: int, progress: Any = None
                    ) -> list[tuple[int, np.ndarray]]:
    """The best pattern of each size ``k = 0..2(L−1)`` on ``world`` (the selection split).

    Best = highest selection accuracy, ties to the cheaper pattern, then the first found.
    Exhaustive when there are at most :data:`EXHAUSTIVE_LIMIT` patterns; else greedy (the pattern
    of size ``k + 1`` adds one block to the one of size ``k``): ``m(m + 1)/2`` evaluations for
    ``m`` blocks instead of ``2^m``, sharing the layers below each added block
    (:func:`extensions_outcome`).
    """
    m = 2 * (num_layers - 1)
    tick = progress.update if progress is not None else (lambda n=1: None)
    best: list[tuple[int, np.ndarray]] = [(0, np.zeros(m, dtype=bool))]
    if 2 ** m <= EXHAUSTIVE_LIMIT:
        for k in range(1, m + 1):
            options = []
            for blocks in itertools.combinations(range(m), k):
                skips = np.zeros(m, dtype=bool)
                skips[list(blocks)] = True
                acc, cost = pattern_outcome(world, skips)
                tick(1)
                options.append(((acc, -cost), skips))
            best.append((k, max(options, key=lambda o: o[0])[1]))
        return best
    current = np.zeros(m, dtype=bool)
    for k in range(1, m + 1):
        scores = extensions_outcome(world, current)
        tick(len(scores))
        j = max(scores, key=lambda b: (scores[b][0], -scores[b][1]))
        current = current.copy()
        current[j] = True
        best.append((k, current))
    return best


def search_evaluations(num_layers: int) -> int:
    """Pattern evaluations :func:`search_patterns` makes (for a progress bar)."""
    m = 2 * (num_layers - 1)
    if 2 ** m <= EXHAUSTIVE_LIMIT:
        return 2 ** m - 1
    return m * (m + 1) // 2


def _sweep_pattern(target: SkipTarget, seed: int, progress: Any = None
                   ) -> list[tuple[Any, float | None]]:
    if target.world is None:
        raise ValueError("skip-pattern searches on the selection split: pass its world")
    return [(FixedSkips(s, target), float(k))
            for k, s in search_patterns(target.world, target.num_layers, progress)]


def _sweep_every_other(target: SkipTarget, seed: int, progress: Any = None
                       ) -> list[tuple[Any, float | None]]:
    return [(every_other(code, target), float(code)) for code in (1, 2, 3)]


def _sweep_random(target: SkipTarget, seed: int, progress: Any = None
                  ) -> list[tuple[Any, float | None]]:
    return [(RandomSkips(p, seed, target), p) for p in RANDOM_RATES]


SKIP_BASELINES: tuple[tuple[str, str, Any, bool, str], ...] = (
    ("skip-pattern", "the best static set of k attention / FFN blocks to skip, chosen on the "
     "selection split (skip envs)", _sweep_pattern, False, "k"),
    ("skip-every-other", "skip attention (1), FFN (2) or both (3) of every other layer (skip "
     "envs)", _sweep_every_other, False, "code"),
    ("skip-random", "skip each block with probability p, per input (LayerDrop; skip envs)",
     _sweep_random, True, "p"),
)
"""``(name, description, sweep(target, seed, progress), seeded, knob)`` of the ``skip`` kind of
the registry (:mod:`exitgym.agents.registry`)."""
