"""Which process wrote a run, and whether it is still alive.

A run records the process id and host name that started it (``run_state.json``), so a run left
``running`` by a process that is gone (SIGKILL, a crashed node, a scheduler's hard kill) can be
told apart from one that is still being written: the first is stale and may be resumed, the
second must not be touched. Only a process on this host can be checked.
"""

from __future__ import annotations

import os
import socket
from typing import Any


def this_process() -> dict[str, Any]:
    """``{"pid": ..., "host": ...}`` of the running interpreter (what a run records)."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def process_alive(pid: Any, host: Any) -> bool | None:
    """True / False when process ``pid`` of ``host`` is alive / gone; None when unknowable.

    Unknowable: no pid recorded (runs written before it was), or another host (its process
    table cannot be read from here). A recycled pid reads as alive: the safe side, since a live
    run must never be resumed or replaced under its writer.
    """
    if not isinstance(pid, int) or pid <= 0 or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
