"""torch thread settings, chosen in one place.

Imports torch only when called, so the layers that use it stay importable without torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run small-MLP training on one torch thread, restoring the previous setting afterwards.

    Why: exit policies are tiny MLPs on batches of ~64-256 rows, where thread hand-offs cost
    more than they save; measured on the busy 2-core box, 30 REINFORCE updates took 6.8 s on
    one thread and 14.1 s on two.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
