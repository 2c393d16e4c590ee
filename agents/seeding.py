"""Independent random streams from one seed (``np.random.SeedSequence(seed).spawn``).

Why: a trainer draws samples, its policy samples actions and initialises weights, and the env is
reset with a seed. Seeding each of them with the same integer gives them the *same* stream: with
``default_rng(seed)`` for both, the trainer's first sample draws and the policy's first action
draws were correlated at 0.9999998 (issue 22), so which samples were drawn and which actions
were sampled on them were not independent. :class:`~numpy.random.SeedSequence` spawning gives
each consumer its own statistically independent stream, still fixed by the one seed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

SeedLike = int | np.random.SeedSequence
"""What a seeded object accepts: an integer seed or a spawned :class:`~numpy.random.SeedSequence`
child (so that a trainer can hand its policy a stream of its own)."""


def seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    """``seed`` as a :class:`~numpy.random.SeedSequence` (an integer becomes its root)."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"a seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence(int(seed))


def children(seed: SeedLike, n: int) -> list[np.random.SeedSequence]:
    """The first ``n`` children of ``seed``'s sequence, what ``spawn(n)`` gives a fresh one.

    Unlike :meth:`~numpy.random.SeedSequence.spawn` this does not advance the parent's counter,
    so the same sequence always yields the same children (a policy reseeded with the stream it
    was built from gets the same streams again)."""
    seq = seed_sequence(seed)
    return [np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, i),
                                   pool_size=seq.pool_size) for i in range(n)]


def int_seed(sequence: np.random.SeedSequence) -> int:
    """A 32-bit integer drawn from ``sequence`` (for APIs that take an int: torch, env resets).

    Deterministic: the same sequence always gives the same integer."""
    return int(sequence.generate_state(1, np.uint32)[0])


class TrainerStreams(NamedTuple):
    """The independent streams of one trainer seed (children of ``SeedSequence(seed)``)."""

    draws: np.random.Generator
    """Which samples each update runs (child 0)."""
    policy: np.random.SeedSequence
    """The policy's own seed: it spawns its initialisation and action-sampling streams (child 1)."""
    env_seed: int
    """Seed of the env's first reset (child 2)."""
    conditioning: np.random.Generator
    """The cost weight α drawn per update by cost-conditioned training (child 3; unused
    otherwise, spawned always so the other children do not depend on the mode)."""


def trainer_streams(seed: SeedLike) -> TrainerStreams:
    """The four independent streams of a REINFORCE-family trainer seeded with ``seed``."""
    draws, policy, env, conditioning = children(seed, 4)
    return TrainerStreams(np.random.default_rng(draws), policy, int_seed(env),
                          np.random.default_rng(conditioning))


def policy_streams(seed: SeedLike) -> tuple[int, np.random.Generator]:
    """``(torch initialisation seed, action-sampling generator)`` of a policy seeded ``seed``:
    two children of it, so the weights and the sampled actions do not share a stream."""
    init, sampling = children(seed, 2)
    return int_seed(init), np.random.default_rng(sampling)


__all__ = ["SeedLike", "TrainerStreams", "children", "int_seed", "policy_streams", "seed_sequence",
           "trainer_streams"]
