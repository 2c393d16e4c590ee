"""What every benchmark writes: the machine it ran on, and its result as JSON plus markdown.

One machine description and one writer for the suite (``bench.json``) and the stand-alone
benchmarks (``bench_envs.json``, ``bench_skip.json``), so every number is stored with the load and
versions it was measured under, and no reader ever sees half a file.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from exitgym.utils.atomic import atomic_write_text


def machine_info(torch_threads: int | None = None) -> dict[str, Any]:
    """Date, platform, CPUs, the 1-minute load average now and the versions that set the speed.

    The load average is read at the start of a benchmark: on a shared machine other work slows
    every number, and a reader needs to know how busy the machine was.
    """
    import gymnasium
    import numpy

    versions = {"python": platform.python_version(), "numpy": numpy.__version__,
                "gymnasium": gymnasium.__version__}
    if torch_threads is not None:
        import torch
        import transformers

        versions.update(torch=torch.__version__, transformers=transformers.__version__)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2), "torch_threads": torch_threads,
        "versions": versions,
    }


def write_result(out: str | os.PathLike[str], stem: str, result: dict[str, Any],
                 markdown: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``out`` atomically; returns both paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(folder / f"{stem}.json",
                                  json.dumps(result, indent=2, default=str) + "\n")
    return json_path, atomic_write_text(folder / f"{stem}.md", markdown)
