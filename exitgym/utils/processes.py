"""Which process wrote a run, and whether it is still alive.

A run records the process id, host name and (where the OS tells) start time of the process that
writes it (``run_state.json``), so a run left ``running`` by a process that is gone (SIGKILL, a
crashed node, a scheduler's hard kill) can be told apart from one that is still being written:
the first is stale and may be resumed, the second must not be touched. Only a process on this
host can be checked; the start time tells a recycled process id from the writer.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def this_process() -> dict[str, Any]:
    """``{"pid", "host", "started"}`` of the running interpreter (what a run records)."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "started": _start_ticks(pid)}


def process_alive(pid: Any, host: Any, started: Any = None) -> bool | None:
    """True / False when process ``pid`` of ``host`` is alive / gone; None when unknowable.

    Unknowable: no pid recorded (runs written before it was), or another host (its process
    table cannot be read from here). A process with that id but another start time than
    ``started`` is a recycled id: the writer is gone. Without a start time a recycled id reads
    as alive: the safe side, since a live run must never be resumed or replaced under its
    writer.
    """
    if not isinstance(pid, int) or pid <= 0 or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    now = _start_ticks(pid)
    return not (isinstance(started, int) and now is not None and now != started)


def _start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (Linux ``/proc``; None elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after the command name, from field 3
    return int(fields[19])  # field 22: starttime
