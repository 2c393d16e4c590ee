"""What the single and the vector ``exitgym/TokenExit-v0`` share: prompts, spaces, observations,
per-token rewards and the episode record.

numpy at module level; the decoder (torch) is loaded when a world is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from gymnasium import spaces

from exitgym.envs.observations import (
    CombinedView,
    SoftmaxStats,
    ViewInputs,
    make_observation,
)
from exitgym.envs.rewards import HardnessReward, RewardShape
from exitgym.envs.settings import TokenExitSettings, check_policy_flops
from exitgym.envs.token_predictor import exit_predictor
from exitgym.envs.token_predictor import predicted as predict_layers
from exitgym.envs.token_prompts import check_fits, load_prompts, maps_on
from exitgym.envs.token_prompts import decoder_by_name as decoder_by_name

HEADS = ("lm-head", "distilled", "trained")
"""Exit heads TokenExit-v0 knows by name: the model's final norm + LM head at every layer,
per-layer maps distilled to the last layer in front of it (``exitgym.data.decoder_heads``), or
per-layer low-rank adapters trained for the frozen decoder on its own continuations
(``exitgym.data.trained_heads``), both prepared once on the task's train texts; a
``LayerMaps`` / ``LowRankMaps`` object is accepted too."""
LOGIT_BOUND = 1.0e4
"""Bound of the ``logits`` part of the observation (finite, wide enough never to bind)."""
STATELESS_VIEWS = ("hidden", "prev", "depth", "predictor")
"""Views that read no head: with only these, heads run (and are charged) only at exits."""


def exit_maps(settings: TokenExitSettings, bb: Any) -> Any:
    """The per-layer maps ``settings.heads`` names (None for the plain LM head).

    Raises:
        ValueError: maps of another depth or width than the decoder's, or not maps at all.
    """
    heads = settings.heads
    if heads == "lm-head":
        return None
    if heads == "distilled":
        from exitgym.data.decoder_heads import distilled_heads

        return distilled_heads(bb, settings.task, **settings.column_options())
    if heads == "trained":
        from exitgym.data.trained_heads import trained_heads

        return trained_heads(bb, settings.task, **settings.column_options())
    if not hasattr(heads, "apply") or not hasattr(heads, "flops"):
        raise ValueError(f"heads must be one of {list(HEADS)} or a LayerMaps, got "
                         f"{type(heads).__name__}")
    return check_fits(heads, bb, "LayerMaps are")


@dataclass(frozen=True, eq=False)
class TokenWorld:
    """The decoder and the tokenized prompts episodes draw from."""

    backbone: Any
    """The :class:`~exitgym.backbones.decoder.DecoderBackbone`."""
    prompt_ids: list[list[int]]
    """Token ids of each prompt (cut to ``max_prompt_tokens``)."""
    prompt_texts: list[str | None]
    """Each prompt's text (None for prompts given as ids)."""
    maps: Any = None
    """Distilled heads (``LayerMaps``) in front of the LM head; None: the LM head alone."""

    @classmethod
    def build(cls, settings: TokenExitSettings) -> TokenWorld:
        if isinstance(settings.heads, str) and settings.heads not in HEADS:
            raise ValueError(f"heads={settings.heads!r} is not supported by TokenExit-v0; "
                             f"allowed: {list(HEADS)} or a LayerMaps")
        bb, ids, texts = load_prompts(settings, settings.backbone)
        return cls(bb, ids, texts, maps_on(exit_maps(settings, bb), bb))

    @property
    def num_samples(self) -> int:
        return len(self.prompt_ids)

    def capacity(self, max_new_tokens: int) -> int:
        return max(len(p) for p in self.prompt_ids) + max_new_tokens

    def decode(self, ids: list[int]) -> str | None:
        tok = self.backbone.tokenizer
        return None if tok is None else tok.decode(ids)


@dataclass
class TokenEpisode:
    """The record of one episode, read into the final ``info``."""

    sample_id: int
    generated: list[int] = field(default_factory=list)
    reference: list[int] = field(default_factory=list)
    exit_layers: list[int] = field(default_factory=list)
    flops: float = 0.0
    flops_computed: float = 0.0
    full_flops: float = 0.0

    def info(self, world: TokenWorld) -> dict[str, Any]:
        agree = np.asarray(self.generated) == np.asarray(self.reference)
        return {
            "prompt": world.prompt_texts[self.sample_id],
            "prompt_ids": list(world.prompt_ids[self.sample_id]),
            "generated_ids": list(self.generated),
            "generated_text": world.decode(self.generated),
            "reference_ids": list(self.reference),
            "exit_layers": list(self.exit_layers),
            "agreement": float(agree.mean()),
            "flops": self.flops, "flops_computed": self.flops_computed,
            "full_flops": self.full_flops, "episode_cost": self.flops / self.full_flops,
            # What the shared evaluation records (agents.records.EpisodeRecord): the episode's
            # cost, its last token, and "correct" = the whole continuation agrees.
            "cost": self.flops / self.full_flops, "prediction": self.generated[-1],
            "label": self.reference[-1], "correct": bool(agree.all()),
        }


class TokenCore:
    """Spaces, observation and reward arithmetic from :class:`TokenExitSettings`."""

    settings_class = TokenExitSettings
    observing: bool = True
    """Compute observations (``exitgym.generate`` without a policy turns it off)."""

    def _build(self, settings: TokenExitSettings) -> spaces.Box:
        self.settings = settings
        self.policy_flops = check_policy_flops(settings.policy_flops)
        if settings.cached and (settings.kv != "full" or not settings.teacher_forcing):
            raise ValueError("cached=True needs kv='full' and teacher_forcing=True (only then is "
                             "every per-layer quantity independent of the decisions)")
        tb = settings.table_batch
        if isinstance(tb, bool) or not isinstance(tb, int) or tb < 1:
            raise ValueError(f"table_batch must be an integer >= 1, got {tb!r}")
        self.world = TokenWorld.build(settings)
        bb = self.world.backbone
        self.num_layers, self.vocab_size = bb.num_layers, bb.vocab_size
        self.num_samples = self.world.num_samples
        self.view: CombinedView = make_observation(settings.observation)
        self.predictor = (exit_predictor(settings, bb) if any(p.name == "predictor" for p in
                                                              self.view.parts) else None)
        if self.predictor is not None:  # its decisions are the policy's: charged per layer
            self.policy_flops += self.predictor.flops()
        self.head_every_layer = any(p.name not in STATELESS_VIEWS for p in self.view.parts)
        self.reward_shape: RewardShape = settings.make_reward()
        self.need_memorized = isinstance(self.reward_shape, HardnessReward)
        return self._space(bb)

    def _space(self, bb: Any) -> spaces.Box:
        f, L = bb.flops, self.num_layers
        longest = self.world.capacity(self.settings.max_new_tokens)
        maps = self.world.maps
        head = f.head(1) + (0.0 if maps is None else maps.flops(0))
        worst = (f.embeddings(1) + L * (f.layer(self.settings.max_new_tokens + 1, longest)
                 + head + f.kv_only(1) + self.policy_flops))
        self.cost_bound = max(1.0, float(worst / f.token(1)))
        lows, highs = [], []
        for part in self.view.parts:
            dim = part.dim(bb.hidden_size, self.vocab_size)
            bound = {"hidden": self.settings.hidden_clip, "prev": self.settings.hidden_clip,
                     "logits": LOGIT_BOUND}.get(part.name)
            if part.name in ("features", "depth", "predictor"):  # cost: the last column
                table = np.zeros((1, 1, dim), dtype=np.float32)
                table[..., -1] = self.cost_bound
                low, high = part.bounds(table)
            elif bound is not None:
                low, high = np.full(dim, -bound, np.float32), np.full(dim, bound, np.float32)
            else:
                raise ValueError(f"observation view {part.name!r} is not supported by "
                                 "TokenExit-v0; use features, depth, logits, hidden, prev, "
                                 "predictor")
            lows.append(low)
            highs.append(high)
        self._low, self._high = np.concatenate(lows), np.concatenate(highs)
        return spaces.Box(self._low, self._high, dtype=np.float32)

    def observe(self, hidden: np.ndarray, logits: np.ndarray | None, cost: np.ndarray,
                stats: SoftmaxStats | None = None, predicted: np.ndarray | None = None
                ) -> np.ndarray:
        """The observation after the last of ``l`` layers of a token (``hidden [l, H]``,
        ``logits [l, V]`` or None without heads, ``cost [l]``, the heads' ``stats`` when
        known, the exit predictor's ``predicted [l]`` when the view reads it)."""
        return self.observe_all(hidden, logits, cost, stats, predicted)[-1]

    def observe_all(self, hidden: np.ndarray, logits: np.ndarray | None, cost: np.ndarray,
                    stats: SoftmaxStats | None = None, predicted: np.ndarray | None = None
                    ) -> np.ndarray:
        """``[l, d]``: the observation after each of ``l`` layers (row ``i`` equals
        :meth:`observe` of the first ``i + 1``: every view reads layers up to its own only)."""
        if logits is None:
            logits = np.zeros((hidden.shape[0], 1), dtype=np.float32)
        if stats is not None:
            stats = SoftmaxStats(*(np.asarray(getattr(stats, f.name))[None]
                                   for f in fields(SoftmaxStats)))
        inputs = ViewInputs(pooled=hidden[None], logits=logits[None], cost=cost[None],
                            num_layers=self.num_layers, stats=stats,
                            predicted=None if predicted is None else predicted[None])
        rows = self.view.compute(inputs)[0]
        return np.clip(rows, self._low, self._high).astype(np.float32)

    def token_reward(self, ce: float, agree: bool, cost: float, memorized: int) -> float:
        """One token's reward: the registered shape with the full-depth token as the label."""
        return float(self.reward_shape.terminal(np.float64(ce), np.bool_(agree), np.float64(cost),
                                                np.int64(memorized), self.num_layers))

    # ---- episodes of a batch of rows (the single env is row 0) --------------------------------
    def _init_rows(self, num_rows: int, reference: bool = True) -> None:
        """Per-row episode state and the live runner (or the cached tables); ``reference=False``
        skips the full-depth reference (deployment: no agreement, no rewards)."""
        s = self.settings
        self.tables: Any = None
        self._runner: Any = None
        self._reads_stats = any(p.name == "features" for p in self.view.parts)
        if s.cached:
            from exitgym.envs.token_tables import build_token_tables

            self.tables = build_token_tables(self)
        else:
            from exitgym.envs.token_runner import TokenRunner

            self._runner = TokenRunner(
                self.world.backbone, num_rows, self.world.capacity(s.max_new_tokens), s.kv,
                s.teacher_forcing, self.head_every_layer, self.policy_flops, self.need_memorized,
                reference, maps=self.world.maps, stats=self._reads_stats)
        self._episodes: list[TokenEpisode | None] = [None] * num_rows
        self._token = np.zeros(num_rows, dtype=np.int64)
        self._layer = np.zeros(num_rows, dtype=np.int64)
        self._costs: list[list[float]] = [[] for _ in range(num_rows)]
        self._stats: list[list[SoftmaxStats]] = [[] for _ in range(num_rows)]
        self._pred: list[list[float]] = [[] for _ in range(num_rows)]
        self._reads_logits = any(p.name not in (*STATELESS_VIEWS, "features")
                                 for p in self.view.parts)  # ``logits`` or a plug-in's view
        self._last_obs = np.zeros((num_rows, len(self._low)), dtype=np.float32)
        self._waiting: list[tuple[int, Any]] = []  # rows exited with defer=True, not restarted

    def _begin(self, rows: list[int], sample_ids: list[int]) -> list[dict[str, Any]]:
        """Start episodes in ``rows``; the observations land in ``_last_obs``."""
        for row, sid in zip(rows, sample_ids, strict=True):
            self._episodes[row] = TokenEpisode(int(sid))
        self._token[rows], self._layer[rows] = 0, 0
        if self._runner is not None:
            self._runner.begin(rows, [self.world.prompt_ids[s] for s in sample_ids])
        return [self._observe(row) for row in rows]

    def _advance(self, rows: list[int]) -> list[dict[str, Any]]:
        self._layer[rows] += 1
        if self._runner is not None and rows:
            self._runner.advance(rows)
        return [self._observe(row) for row in rows]

    def _observe(self, row: int) -> dict[str, Any]:
        li, t, ep = int(self._layer[row]), int(self._token[row]), self._episodes[row]
        assert ep is not None
        if not self.observing:  # nobody reads the observation (generation without a policy)
            return {"layer": li + 1, "token": t, "cost": float("nan"), "sample_id": ep.sample_id}
        if self.tables is not None:
            tb = self.tables
            obs = tb.obs[ep.sample_id, t, li]
            cost = float(tb.flops[ep.sample_id, t, li] / tb.full_flops[ep.sample_id, t])
        else:
            runner = self._runner
            if li == 0:
                self._costs[row] = []
            pos = int(runner.cache.lengths[0, row]) - 1
            self._costs[row].append(float(runner.flops[row]
                                          / self.world.backbone.flops.token(pos + 1)))
            hidden = runner.hidden[row, : li + 1].float().cpu().numpy()
            logits, stats = None, None
            if self._reads_logits:
                logits = np.stack([_host(runner.logits[row][i]) for i in range(li + 1)])
            if self._reads_stats:  # each head's statistics once, not once per later layer
                if li == 0:
                    self._stats[row] = []
                done = self._stats[row]
                done += [runner.stats[row][i] for i in range(len(done), li + 1)]
                stats = SoftmaxStats(*(np.array([getattr(s, f.name) for s in done])
                                       for f in fields(SoftmaxStats)))
            pred = None
            if self.predictor is not None:  # each layer's probability once, like the stats
                if li == 0:
                    self._pred[row] = []
                done_p = self._pred[row]
                done_p += list(predict_layers(self.predictor, hidden[None, len(done_p):],
                                              len(done_p))[0])
                pred = np.asarray(done_p)
            obs, cost = self.observe(hidden, logits, np.asarray(self._costs[row]), stats,
                                     pred), self._costs[row][-1]
        self._last_obs[row] = obs
        return {"layer": li + 1, "token": t, "cost": cost, "sample_id": ep.sample_id}

    def _exit(self, rows: list[int], defer: bool = False
              ) -> tuple[list[float], list[bool], list[dict[str, Any]]]:
        """Exit the current tokens of ``rows``: rewards, terminations and infos (the next
        token's observation, or the exit's for finished episodes, lands in ``_last_obs``).

        ``defer=True`` (live mode): the rows whose episodes go on wait; :meth:`_resume` fills
        their upper layers and starts their next tokens, all at once (a synchronous token step).
        """
        outcomes = (self._runner.exit(rows, fill=not defer) if self._runner is not None
                    else None)
        rewards, done, infos, going, going_out = [], [], [], [], []
        for k, row in enumerate(rows):
            ep, li, t = self._episodes[row], int(self._layer[row]), int(self._token[row])
            assert ep is not None
            if outcomes is None:
                tb, p = self.tables, ep.sample_id
                emitted, ref, ce = int(tb.emitted[p, t, li]), int(tb.reference[p, t]), \
                    float(tb.ce[p, t, li])
                flops, computed, full = (float(tb.flops[p, t, li]), float(tb.computed[p, t, li]),
                                         float(tb.full_flops[p, t]))
                mem = int(tb.memorized[p, t])
            else:
                o = outcomes[k]
                emitted, ref, ce, mem = o.emitted, o.reference, o.ce, o.memorized
                flops, computed, full = o.flops, o.flops_computed, o.full_flops
            cost = flops / full
            rewards.append(self.token_reward(ce, emitted == ref, cost, mem))
            ep.generated.append(emitted)
            ep.reference.append(ref)
            ep.exit_layers.append(li + 1)
            ep.flops += flops
            ep.flops_computed += computed
            ep.full_flops += full
            info = {"layer": li + 1, "token": t, "cost": cost, "sample_id": ep.sample_id,
                    "exit_layer": li + 1, "token_id": emitted, "reference_id": ref,
                    "agree": emitted == ref, "token_cost": cost}
            finished = t + 1 >= self.settings.max_new_tokens
            if finished:
                info.update(ep.info(self.world))
            else:
                going.append(row)
                if outcomes is not None:
                    going_out.append(outcomes[k])
            done.append(finished)
            infos.append(info)
        if going and defer:
            self._waiting += list(zip(going, going_out, strict=True))
        elif going:
            for row, step_info in zip(going, self._next(going, going_out), strict=True):
                infos[rows.index(row)].update({k: step_info[k] for k in ("layer", "token",
                                                                          "cost")})
        return rewards, done, infos

    def _next(self, rows: list[int], outcomes: list[Any]) -> list[dict[str, Any]]:
        """Start the next tokens of ``rows`` (after their exits' ``outcomes``)."""
        self._token[rows] += 1
        self._layer[rows] = 0
        if self._runner is not None:
            self._runner.next_token(rows, outcomes)
        return [self._observe(row) for row in rows]

    def _resume(self) -> list[int]:
        """Fill the upper layers of the rows waiting since ``_exit(defer=True)`` and start their
        next tokens together (one layer call); returns those rows."""
        rows = [row for row, _ in self._waiting]
        if rows:
            if self._runner is not None:
                self._runner.fill_pending()
            self._next(rows, [o for _, o in self._waiting])
        self._waiting = []
        return rows


def _host(values: Any) -> np.ndarray:
    """A torch tensor (any device, any float dtype) as a float32 numpy array."""
    return values.float().cpu().numpy()
