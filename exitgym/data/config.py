"""What a prepared cache is made of (:class:`DataConfig`), defined once for every config.

Training runs, comparisons, the benchmark, the demo and ``prepare`` itself all name the same
prepared cache: a task, a backbone, the heads mode and the tokenisation. They nest (or, for
:class:`~exitgym.data.prepare.PrepareConfig`, extend) this one dataclass, so the fields, their
defaults, their checks and the ``--task`` / ``--backbone`` / ``--heads`` / ``--max-samples`` /
``--max-length`` / ``--text-column`` / ``--label-column`` / ``--text-pair-column`` /
``--allow-suspect-labels`` flags generated from them (:mod:`exitgym.utils.configs`) are the
same everywhere.
Kept free of heavy imports: the command line reads it before any data is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exitgym.utils.configs import option

SPLITS = ("train", "policy", "validation", "test")
"""The splits every task is divided into (and that caches are built for). ``train`` fits the exit
heads (and fine-tunes the backbone); ``policy`` is a held-out part of the training data that the
heads never saw, on which learned exit policies train: heads are more confident and more accurate
on their own training rows (1.3 to 4.0 points on rt-polarity, docs/design.md §5), so a policy
trained there learns from optimistic confidences that no test input will show."""
POLICY_SPLIT = "policy"
"""The split learned exit policies train on by default (envs, ``train``, ``compare``)."""
POLICY_FRACTION = 0.2
"""Share of the training rows (per label) held out from head fitting as the ``policy`` split."""
HEADS_MODES = ("joint", "two-stage", "frozen")
"""How exit heads are trained (the recipes of :mod:`exitgym.data.recipes`): ``joint`` fine-tunes
backbone and every head with PABEE's weighted loss; ``two-stage`` is DeeBERT's (backbone with the
last head, then the other heads on the frozen result); ``frozen`` fits heads on the pretrained
backbone (a probe of what each layer already knows)."""
HEADS_ALIASES = {"finetune": "joint"}
"""Older names of recipes, still accepted (``finetune`` was the joint recipe's name)."""
DEFAULT_RECIPE = "two-stage"
"""The recipe every exit environment and the demo use unless told otherwise. Chosen on validation
(rt-polarity x MiniLM, one epoch, docs/design.md): two-stage's exits trace a better trade-off than
joint's (area under the static-truncation curve 0.805 vs 0.794, under the entropy rule's 0.830 vs
0.816) for 0.6 points less at the last exit (0.860 vs 0.866)."""
FINETUNED = ("joint", "two-stage")
"""The recipes that change backbone weights (and save them next to the heads)."""


@dataclass(frozen=True)
class DataConfig:
    """The prepared cache an environment reads: task x backbone x heads, and tokenisation."""

    task: str = "rt-polarity"
    """Task registry name or local CSV/JSONL/Parquet file (see ``exitgym.data.tasks.load_task``)."""
    backbone: str = "minilm-l6"
    """Backbone short name, local model directory or hub id (see ``load_backbone``)."""
    heads: str = option(DEFAULT_RECIPE, choices=HEADS_MODES)
    """Exit-head recipe: ``joint`` (backbone + heads, PABEE loss), ``two-stage`` (DeeBERT) or
    ``frozen`` (heads on the pretrained backbone: a probe)."""
    max_samples: int | None = option(None, minimum=1)
    """Keep only the first n rows of every split (deterministic subsample for quick runs)."""
    max_length: int = option(128, minimum=1)
    """Tokenizer truncation length (64 suffices for sentence snippets); longer inputs are cut."""
    skip_prob: float = option(0.0, minimum=0)
    """Fine-tuned recipes (``joint``): per-sample probability of skipping each attention / FFN
    block while fine-tuning, so the backbone tolerates the skips of the skip environments
    (their ``gym.make`` default is 0.15); 0: no skipping."""
    text_column: str = "text"
    """Text column of a local data file (bring your own data; registry tasks use their own)."""
    label_column: str = "label"
    """Label column of a local data file; string labels map to ids in sorted order."""
    text_pair_column: str | None = None
    """Second text column of a local data file, for sentence-pair tasks (None: single texts)."""
    allow_suspect_labels: bool = False
    """Keep labels of a local data file that look like mistakes as classes: rare classes and
    labels one edit or only case away from another (``exitgym.data.labels``); without it
    ``prepare`` refuses them before training heads, naming their rows."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", HEADS_ALIASES.get(self.heads, self.heads))
        if self.heads not in HEADS_MODES:
            raise ValueError(f"unknown heads mode {self.heads!r}; allowed: {list(HEADS_MODES)}")
        if not 0.0 <= self.skip_prob < 1.0:
            raise ValueError(f"skip_prob must be in [0, 1), got {self.skip_prob}")
        if self.skip_prob > 0 and self.heads not in FINETUNED:
            raise ValueError(f"skip_prob needs a fine-tuned recipe (heads in {list(FINETUNED)}); "
                             f"a frozen backbone cannot adapt to skips")

    def prepare_options(self) -> dict[str, Any]:
        """The prepare options beyond task / backbone / heads, as an ``EnvSpec`` stores them
        (``max_samples``, ``allow_suspect_labels`` and the columns only when set, so specs of
        default data keep their JSON form)."""
        options: dict[str, Any] = {"max_length": self.max_length}
        if self.max_samples is not None:
            options["max_samples"] = self.max_samples
        if self.skip_prob:
            options["skip_prob"] = self.skip_prob
        if self.allow_suspect_labels:  # so an env of this data prepares with it
            options["allow_suspect_labels"] = True
        return {**options, **self.column_options()}

    def column_options(self) -> dict[str, Any]:
        """The column names that differ from the defaults (what ``load_task`` is given).

        Why only those: prepared-directory keys and stored specs of data read with the default
        columns stay what they were before the columns became options.
        """
        return column_options(self)


COLUMN_DEFAULTS: dict[str, str | None] = {"text_column": "text", "label_column": "label",
                                          "text_pair_column": None}
"""The column options of :class:`DataConfig` (and of ``load_task`` and the env kwargs) with their
defaults."""


def column_options(obj: Any) -> dict[str, Any]:
    """The :data:`COLUMN_DEFAULTS` attributes of ``obj`` (a config or env settings) that differ
    from their defaults, as ``load_task`` keyword arguments."""
    return {name: getattr(obj, name) for name, default in COLUMN_DEFAULTS.items()
            if getattr(obj, name) != default}


TASK_OPTIONS: tuple[str, ...] = ("seed", "max_samples", *COLUMN_DEFAULTS)
"""The prepare options that choose which rows a task loads (``load_task``'s keyword arguments)."""


def task_options(options: Any) -> dict[str, Any]:
    """The :data:`TASK_OPTIONS` among prepare ``options`` (a mapping): what ``load_task`` takes
    to load the very rows a prepared cache was built from."""
    return {k: options[k] for k in TASK_OPTIONS if k in options}


def refuse_decoder(backbone: str) -> None:
    """A decoder LM cannot be prepared: say where decoders go instead of failing on its type."""
    from exitgym.backbones.decoder_registry import is_decoder

    if is_decoder(backbone):
        raise ValueError(
            f"backbone {backbone!r} is a decoder LM; prepare builds encoder exit heads and caches "
            "(what EarlyExit-v0 and the skip environments' runs read). A decoder trains with "
            f"--env exitgym/TokenExit-v0 --decoder {backbone}; SkipBlock-v0 and "
            "SwitchableDecision-v0 take it through gym.make(env_id, backbone=decoder)")
