"""The ``gym.make`` keyword arguments of every exitgym environment, one frozen dataclass per family.

The fields of a settings class *are* the keyword arguments of ``gym.make`` (and of the single and
the native vector constructor) with their defaults, so each argument is written once: the
constructors take ``**kwargs`` and build their settings with :meth:`EnvSettings.from_kwargs`, or
take a settings object directly. A key that is not a field goes to the reward shape (``lam=`` of
``reward="flops"``); one the reward does not take either is refused before anything expensive is
built, with the allowed keys listed.

- :class:`ExitSettings`: ``exitgym/EarlyExit-v0``;
- :class:`SkipSettings`: what both skip environments take, with :class:`SkipBlockSettings`
  (``exitgym/SkipBlock-v0``: delivery and action-space switches) and :class:`SwitchableSettings`
  (``exitgym/SwitchableDecision-v0``: the paper's ``flops`` reward by default);
- :class:`TokenExitSettings`: ``exitgym/TokenExit-v0`` (decoder LMs, one step per layer of a token).

numpy only, like :mod:`exitgym.envs` itself: importing this module never imports torch.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from exitgym.data.config import DEFAULT_RECIPE, POLICY_SPLIT, column_options
from exitgym.envs.rewards import REWARDS, RewardShape, make_reward
from exitgym.utils.devices import check_device, check_dtype

if TYPE_CHECKING:
    from exitgym.backbones.layer_cache import LayerCache
    from exitgym.envs.skip_core import SkipWorld

__all__ = [
    "DEFAULT_POOLED_CLIP",
    "KV_MODES",
    "EnvSettings",
    "ExitSettings",
    "PromptFields",
    "SkipBlockSettings",
    "SkipSettings",
    "SwitchableSettings",
    "TokenExitSettings",
    "check_policy_flops",
    "check_render_mode",
]

_S = TypeVar("_S", bound="EnvSettings")

KV_MODES = ("copy", "recompute", "full")
"""How the layers above a token's exit get their keys and values (``TokenExitSettings.kv``;
:mod:`exitgym.envs.token_runner` says what each computes). Here, not in the runner, so configs
list them without importing torch."""

DEFAULT_POOLED_CLIP: float = 20.0
"""Pooled-state observations of the skip envs are clipped to ``[−20, 20]`` (finite Box bounds).
MiniLM-L6 on rt-polarity stays within ±16 even with random skips, so the clip rarely binds."""


def check_policy_flops(value: float) -> float:
    """``value`` as a float; the FLOPs of a policy evaluation must be finite and >= 0."""
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"policy_flops must be a finite number >= 0, got {value!r}")
    return value


def check_render_mode(value: str | None, modes: Sequence[str]) -> str | None:
    """``value`` if the environment renders in that mode (``None`` always works)."""
    if value is None or value in modes:
        return value
    allowed = f"allowed: None or {list(modes)}" if modes else "use None"
    raise ValueError(f"render_mode={value!r} is not supported; {allowed}")


_TYPE_CHECKS: dict[str, tuple[tuple[type, ...], str]] = {
    "bool": ((bool, np.bool_), "True or False"),
    "float": ((numbers.Real,), "a number"),
    "float | None": ((numbers.Real, type(None)), "a number or None"),
    "int | None": ((numbers.Integral, type(None)), "an integer or None"),
    "str | None": ((str, type(None)), "a string or None"),
}
"""Annotation of a settings field -> the types its value may have, and how to say so."""


# ``eq=False``: fields may hold numpy arrays and models, which have no plain equality.
@dataclass(frozen=True, kw_only=True, eq=False)
class EnvSettings:
    """What every exitgym environment takes: the data, the models, the reward and rendering."""

    env_id: ClassVar[str] = "exitgym"
    """The registered id these settings are for (named in error messages)."""

    task: str = "rt-polarity"
    """Task registry name or local data path; named data is prepared on first use."""
    backbone: Any = "minilm-l6"
    """Backbone short name, Hugging Face id or local directory, or a ``Backbone`` object."""
    split: str = POLICY_SPLIT
    """Data split the episodes draw their inputs from; by default ``policy``, the training rows
    the exit heads were not fitted on (what an agent should learn from)."""
    heads: Any = DEFAULT_RECIPE
    """Exit-head recipe of the prepared cache (``"joint"``, ``"two-stage"`` or ``"frozen"``, see
    :data:`~exitgym.data.config.HEADS_MODES`), or an ``ExitHeads`` object."""
    text_column: str = "text"
    """Text column of a local data file ``task`` (bring your own data)."""
    label_column: str = "label"
    """Label column of a local data file ``task``."""
    text_pair_column: str | None = None
    """Second text column of a local data file ``task`` (sentence pairs; None: single texts)."""
    reward: str | RewardShape = "vanilla"
    """A registered reward name (:data:`~exitgym.envs.rewards.REWARDS`) or a ``RewardShape``."""
    alpha: float | None = None
    """Cost weight of the reward; ``None``: the shape's default (0.2)."""
    policy_flops: float = 0.0
    """FLOPs of one policy evaluation, charged for every decision."""
    render_mode: str | None = None
    """``None`` or ``"ansi"`` (single environments; vector environments do not render)."""
    device: str = "auto"
    """Where the live backbone runs: ``"auto"`` (CUDA when torch sees it, else the CPU),
    ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (:func:`~exitgym.utils.devices.resolve_device`; CUDA
    where there is none is refused when the env is made). Model objects given as ``backbone`` /
    ``heads`` are moved there in place. Cached environments run no torch: see
    :class:`ExitSettings`."""
    dtype: str = "float32"
    """Floating dtype of the live backbone and heads: ``"float32"`` (the default, so an episode
    equals the float32 caches and the CPU's), ``"bfloat16"``, ``"float16"`` or ``"auto"``
    (bfloat16 on a CUDA device that has it, else float32). Observations stay float32."""
    reward_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Further arguments of the reward shape (``lam`` for ``flops``): every keyword argument that
    is not a field lands here."""

    def __post_init__(self) -> None:
        """Refuse values of the wrong type and reward arguments the named reward does not take
        (a typo of a field, mostly).

        A ``ValueError``, like every other bad argument: ``gym.make`` re-raises a ``TypeError``
        with the repr of every keyword argument (a whole cache) appended.
        """
        self._check_types()
        for check in (check_device, check_dtype):
            name = check.__name__.removeprefix("check_")
            try:
                check(getattr(self, name))
            except ValueError as err:
                raise ValueError(f"{self.env_id}: {err}") from None
        if not self.reward_kwargs:
            return
        own: list[str] = []
        also = " (a RewardShape instance is given its own arguments when it is made)"
        if not isinstance(self.reward, RewardShape):
            shape = REWARDS.get(self.reward)
            if shape is None:
                return  # make_reward lists the registered rewards
            params = inspect.signature(shape).parameters.values()
            if any(p.kind is p.VAR_KEYWORD for p in params):
                return
            own = sorted({p.name for p in params} - set(self.argument_names()))
            also = f", and {own} for reward {self.reward!r}" if own else ""
        unknown = sorted(set(self.reward_kwargs) - set(own))
        if unknown:
            raise ValueError(f"{self.env_id}: unknown keyword argument(s) {unknown}; allowed: "
                             f"{sorted(self.argument_names())}{also}")

    def _check_types(self) -> None:
        """Fields annotated ``bool``, ``float``, ``int | None``, ... must hold such values: a
        truthy string like ``dense="yes"`` is an error, not True."""
        for f in fields(self):
            check = _TYPE_CHECKS.get(str(f.type))
            value = getattr(self, f.name)
            if check is None:
                continue
            kinds, what = check
            numeric_bool = isinstance(value, (bool, np.bool_)) and bool not in kinds
            if numeric_bool or not isinstance(value, kinds):
                raise ValueError(f"{self.env_id}: {f.name} must be {what}, got {value!r} "
                                 f"({type(value).__name__})")

    @classmethod
    def argument_names(cls) -> tuple[str, ...]:
        """The keyword arguments that are fields (all but :attr:`reward_kwargs`), in order."""
        return tuple(f.name for f in fields(cls) if f.name != "reward_kwargs")

    @classmethod
    def from_kwargs(cls: type[_S], **kwargs: Any) -> _S:
        """Settings from ``gym.make`` keyword arguments; keys that are not fields go to the reward.

        Raises:
            ValueError: A key is neither a field nor an argument of the named reward shape.
        """
        names = set(cls.argument_names())
        known = {k: v for k, v in kwargs.items() if k in names}
        extra = {k: v for k, v in kwargs.items() if k not in names}
        return cls(**known, reward_kwargs=extra)

    @classmethod
    def resolve(cls: type[_S], settings: _S | None, kwargs: Mapping[str, Any]) -> _S:
        """What a constructor was given: a settings object, or keyword arguments (not both)."""
        if settings is None:
            return cls.from_kwargs(**kwargs)
        if not isinstance(settings, cls):
            raise ValueError(f"settings must be a {cls.__name__}, got {type(settings).__name__}")
        if kwargs:
            raise ValueError(f"pass settings or keyword arguments, not both (got {sorted(kwargs)})")
        return settings

    def column_options(self) -> dict[str, Any]:
        """The data column names that differ from the defaults (``load_task`` / prepare options)."""
        return column_options(self)

    def make_reward(self) -> RewardShape:
        """A fresh reward shape from :attr:`reward`, :attr:`alpha` and :attr:`reward_kwargs`."""
        return make_reward(self.reward, self.alpha, **self.reward_kwargs)


@dataclass(frozen=True, kw_only=True, eq=False)
class PromptFields:
    """The prompts and continuation length of the environments that generate with a decoder LM
    (``TokenExit-v0``, and the skip environments given a decoder backbone)."""

    prompts: Any = None
    """Decoder backbones: prompts instead of the task's split texts: texts, token-id lists, or a
    text file's path (one prompt per line)."""
    max_prompts: int | None = 64
    """Decoder backbones: use the first this many prompts (``None``: all)."""
    max_prompt_tokens: int = 32
    """Decoder backbones: prompts are cut to their first this many tokens."""
    max_new_tokens: int = 16
    """Decoder backbones: greedy tokens generated per episode."""


@dataclass(frozen=True, kw_only=True, eq=False)
class ExitSettings(EnvSettings):
    """Keyword arguments of ``exitgym/EarlyExit-v0``, documented on ``EarlyExitEnv``.

    ``task``, ``backbone``, ``split`` and ``heads`` name the prepared per-layer cache (built on
    first use); in live mode ``backbone`` / ``heads`` may also be model objects.
    """

    env_id: ClassVar[str] = "exitgym/EarlyExit-v0"

    observation: str = "features"
    """Observation view spec, e.g. ``"features"`` or ``"hidden+prev"``
    (:mod:`exitgym.envs.observations`)."""
    dense: bool = False
    """Pay ``−w·Δc`` on every step and the quality at the exit (same return as terminal)."""
    live: bool = False
    """Run the backbone one layer per step instead of reading the cache (single env only)."""
    cache: LayerCache | None = None
    """A ``LayerCache`` to use directly (tests, agents, synthetic caches), not the named one."""
    prepare_options: Mapping[str, Any] | None = None
    """Further options of the named cache's ``prepare`` (``max_length``, ``max_samples``) as
    ``exitgym prepare`` takes them; None: its defaults. JSON values only, so the env's spec
    (``env.spec.kwargs``, a Minari dataset's) rebuilds exactly this cache."""

    def __post_init__(self) -> None:
        """Also refuse a CUDA ``device`` or a non-float32 ``dtype`` in cached mode.

        Why refuse rather than ignore: a cached episode indexes float32 numpy arrays and runs no
        torch at all, so ``device="cuda"`` there would silently do nothing while the user
        believes the GPU is used. ``"auto"`` (the default) and ``"cpu"`` describe what happens
        and are accepted, so one config can name a device for every env.
        """
        super().__post_init__()
        if self.live:
            return
        if self.device not in ("auto", "cpu"):
            raise ValueError(f"{self.env_id}: device={self.device!r} applies to live=True only; "
                             "the cached env reads numpy arrays and runs no torch (allowed "
                             "without live: 'auto' or 'cpu')")
        if self.dtype != "float32":
            raise ValueError(f"{self.env_id}: dtype={self.dtype!r} applies to live=True only; "
                             "the cached env reads the float32 cache (allowed without live: "
                             "'float32')")

    def cache_options(self) -> dict[str, Any]:
        """Every option of the named cache beyond task / backbone / split / heads."""
        return {**self.column_options(), **dict(self.prepare_options or {})}


@dataclass(frozen=True, kw_only=True, eq=False)
class SkipSettings(PromptFields, EnvSettings):
    """What both skip environments take: a live world, named or injected, and the observation clip.

    Named (``backbone`` and ``heads`` strings): prepared on first use by ``exitgym.data.prepare``,
    by default the skip-tolerant fine-tuned heads. Injected: ``backbone`` a ``Backbone``,
    ``heads`` its ``ExitHeads``, ``inputs`` texts or token ids and ``labels``; or a prebuilt
    ``world`` shared with another environment. A decoder LM as ``backbone`` (the short name
    ``smollm2-135m``, a local decoder directory, a ``DecoderBackbone`` or a Llama / GPT-2
    config) generates a greedy continuation of ``max_new_tokens`` tokens per episode from the
    task's texts or ``prompts`` (:mod:`exitgym.envs.skip_decoder`).
    """

    env_id: ClassVar[str] = "exitgym/SkipBlock-v0 or exitgym/SwitchableDecision-v0"

    heads: Any = "joint"
    """Exit-head recipe: ``"joint"`` (by default trained with random block skipping, so skips
    hurt less), ``"two-stage"`` or ``"frozen"``; or an ``ExitHeads`` object."""
    prepare_options: Mapping[str, Any] | None = None
    """``exitgym.data.prepare`` options; ``None``: the skip-tolerant defaults for ``"joint"``
    (:data:`~exitgym.envs.skip_core.DEFAULT_PREPARE_OPTIONS`), none otherwise."""
    inputs: Sequence[str] | Mapping[str, Any] | None = None
    """Injected inputs: texts, or a dict with ``input_ids`` (and ``attention_mask``)."""
    labels: Sequence[int] | np.ndarray | None = None
    """Injected gold labels, one per input."""
    text_pairs: Sequence[str] | None = None
    """Second texts of injected text pairs."""
    max_length: int | None = None
    """Tokenizer truncation; ``None``: the prepared one (named) or 128 (injected texts)."""
    pooled_clip: float = DEFAULT_POOLED_CLIP
    """Bound of the pooled part of the observation (:data:`DEFAULT_POOLED_CLIP`)."""
    world: SkipWorld | None = None
    """A prebuilt :class:`~exitgym.envs.skip_core.SkipWorld` (``env.unwrapped.world`` of another
    env) to share one backbone and tokenized split; the fields that build a world are ignored."""


@dataclass(frozen=True, kw_only=True, eq=False)
class SkipBlockSettings(SkipSettings):
    """Keyword arguments of ``exitgym/SkipBlock-v0``, documented on ``SkipBlockEnv``."""

    env_id: ClassVar[str] = "exitgym/SkipBlock-v0"

    dense: bool = False
    """Pay ``−w·Δc`` on every step and the rest at the end (same return as terminal)."""
    allow_exit: bool = False
    """Add action 4: exit now with the current layer's head."""
    token_strategy: bool = False
    """Make the action a pair (block action, token strategy read on the first step)."""


@dataclass(frozen=True, kw_only=True, eq=False)
class SwitchableSettings(SkipSettings):
    """Keyword arguments of ``exitgym/SwitchableDecision-v0``, documented on its env class."""

    env_id: ClassVar[str] = "exitgym/SwitchableDecision-v0"

    reward: str | RewardShape = "flops"
    """Reward shape; the paper's ``−CE − λ·c`` by default (set ``reward_shape.lam`` to train)."""


@dataclass(frozen=True, kw_only=True, eq=False)
class TokenExitSettings(PromptFields, EnvSettings):
    """Keyword arguments of ``exitgym/TokenExit-v0``, documented on ``TokenExitEnv``."""

    env_id: ClassVar[str] = "exitgym/TokenExit-v0"

    backbone: Any = "smollm2-135m"
    """Decoder short name, Hugging Face id or local directory, or a ``DecoderBackbone``."""
    heads: Any = "lm-head"
    """Exit heads: ``"lm-head"``, the model's final norm and LM head at every layer;
    ``"distilled"``, a per-layer map fitted to the last layer in front of it; ``"trained"``, a
    per-layer low-rank adapter trained for the frozen decoder (both prepared once on the task's
    train texts); or a ``LayerMaps`` / ``LowRankMaps``."""
    predictor: Any = None
    """The exit predictor the ``predictor`` observation view reads (an ``ExitPredictor``);
    None: with ``heads="trained"``, the one fitted beside those heads."""
    kv: str = "copy"
    """Keys and values of the layers above an exit: ``copy``, ``recompute`` or ``full``."""
    teacher_forcing: bool = False
    """Feed the full-depth model's token instead of the emitted one."""
    cached: bool = False
    """Precompute every per-layer quantity (needs ``kv="full"`` and ``teacher_forcing``)."""
    table_batch: int = 1
    """Cached mode: prompts whose tables are built side by side (one LM-head call per layer for
    all of them). ``1`` reproduces the single live env bit for bit; larger is several times
    faster and equals it to the rounding of batched matrix products."""
    observation: str = "features"
    """Observation view spec (:mod:`exitgym.envs.observations`)."""
    hidden_clip: float = 1000.0
    """Bound of ``hidden`` / ``prev`` parts of the observation (decoder states are large)."""
