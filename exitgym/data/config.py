"""What a prepared cache is made of (:class:`DataConfig`), defined once for every config.

Training runs, comparisons, the benchmark, the demo and ``prepare`` itself all name the same
prepared cache: a task, a backbone, the heads mode and the tokenisation. They nest (or, for
:class:`~exitgym.data.prepare.PrepareConfig`, extend) this one dataclass, so the fields, their
defaults, their checks and the ``--task`` / ``--backbone`` / ``--heads`` / ``--max-samples`` /
``--max-length`` flags generated from them (:mod:`exitgym.utils.configs`) are the same everywhere.
Kept free of heavy imports: the command line reads it before any data is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exitgym.utils.configs import option

SPLITS = ("train", "validation", "test")
"""The splits every task is divided into (and that caches are built for)."""
HEADS_MODES = ("frozen", "finetune")
"""How exit heads are trained: on a frozen backbone, or jointly with it."""


@dataclass(frozen=True)
class DataConfig:
    """The prepared cache an environment reads: task x backbone x heads, and tokenisation."""

    task: str = "rt-polarity"
    """Task registry name or local CSV/JSONL/Parquet file (see ``exitgym.data.tasks.load_task``)."""
    backbone: str = "minilm-l6"
    """Backbone short name, local model directory or hub id (see ``load_backbone``)."""
    heads: str = option("frozen", choices=HEADS_MODES)
    """``frozen``: heads on a frozen backbone; ``finetune``: backbone and heads trained jointly."""
    max_samples: int | None = option(None, minimum=1)
    """Keep only the first n rows of every split (deterministic subsample for quick runs)."""
    max_length: int = option(128, minimum=1)
    """Tokenizer truncation length (64 suffices for sentence snippets)."""

    def __post_init__(self) -> None:
        if self.heads not in HEADS_MODES:
            raise ValueError(f"unknown heads mode {self.heads!r}; allowed: {list(HEADS_MODES)}")

    def prepare_options(self) -> dict[str, Any]:
        """The prepare options beyond task / backbone / heads, as an ``EnvSpec`` stores them
        (``max_samples`` only when set, so specs of full splits keep their JSON form)."""
        options: dict[str, Any] = {"max_length": self.max_length}
        if self.max_samples is not None:
            options["max_samples"] = self.max_samples
        return options
