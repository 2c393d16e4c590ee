"""torch thread settings, chosen in one place.

Imports torch only when called, so the layers that use it stay importable without torch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

THREADS_ENV_VAR = "EXITGYM_THREADS"
"""Overrides :func:`training_threads` (a positive integer)."""


def training_threads() -> int:
    """Torch threads for backbone work (fine-tuning, per-layer caches): half the usable cores.

    Why half: these jobs share the machine with the tokenizer, the data pipeline and whatever else
    runs. Measured on the 2-core development box under load, two threads made one AdamW step of
    MiniLM go from 0.29 s to 3.2 s; one thread per two cores never oversubscribes. Set
    ``$EXITGYM_THREADS`` to choose another count (e.g. all cores on a dedicated machine).
    """
    value = os.environ.get(THREADS_ENV_VAR)
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(f"${THREADS_ENV_VAR} must be a positive integer, got {value!r}")
        return threads
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


@contextmanager
def torch_threads(threads: int | None = None) -> Iterator[int]:
    """Run a block on ``threads`` torch threads (default :func:`training_threads`), then restore."""
    import torch

    count = training_threads() if threads is None else threads
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(before)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run small-MLP training on one torch thread, restoring the previous setting afterwards.

    Why: exit policies are tiny MLPs on batches of ~64-256 rows, where thread hand-offs cost
    more than they save; measured on the busy 2-core box, 30 REINFORCE updates took 6.8 s on
    one thread and 14.1 s on two.
    """
    with torch_threads(1):
        yield
