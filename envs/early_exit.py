"""``exitgym/EarlyExit-v0``: walk one input up a transformer's layers, exiting when it pays.

Importing this module does not import torch: cached mode only indexes numpy arrays, and live mode
imports the backbone code when an environment is made with ``live=True``.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from exitgym.envs.exit_core import ExitEnvCore
from exitgym.envs.observations import ViewInputs
from exitgym.envs.rewards import cross_entropy
from exitgym.envs.sampling import BlockSampler, reset_sample_id
from exitgym.envs.settings import ExitSettings, check_render_mode

__all__ = ["EarlyExitEnv"]

CONTINUE, EXIT = 0, 1


class EarlyExitEnv(ExitEnvCore, gym.Env[np.ndarray, np.int64]):
    """Early exit as an episode: one step per transformer layer, exit or continue.

    ## Description

    An episode takes one input (a text of the task's split) up the layers of a pretrained encoder
    that has an exit head (a classifier) after every layer. After each layer the agent sees how the
    head is doing and decides to *exit* — answer with this layer's head and stop paying for depth —
    or *continue* to the next layer. This is the setting of ConsistentEE (RL early exit) and the
    decision the classic exit rules make (DeeBERT entropy, RightTool max-probability, PABEE
    patience). With a frozen backbone every per-layer quantity is precomputed in a per-layer cache,
    so a step is an array lookup; ``live=True`` runs the real backbone one layer per step instead
    (same observations and rewards).

    ## Action Space

    ``Discrete(2)``: ``0`` continue to the next layer, ``1`` exit with the current layer's head.

    ## Observation Space

    ``Box(float32)`` with finite bounds, chosen by ``observation=`` (see
    :mod:`exitgym.envs.observations`). The default ``features`` view, after layer ``l``:

    | Index | Name             | Min | Max                                          |
    |-------|------------------|-----|----------------------------------------------|
    | 0     | layer fraction   | 0   | 1 (``l/L``)                                  |
    | 1     | max probability  | 0   | 1                                            |
    | 2     | entropy / log C  | 0   | 1                                            |
    | 3     | top-2 margin     | 0   | 1                                            |
    | 4     | patience / L     | 0   | 1 (run of identical predictions ending at l) |
    | 5     | cost so far      | 0   | max(1, highest cost with ``policy_flops``)   |

    Other views: ``logits`` (C head logits), ``hidden`` (H, the pooled state), ``prev`` (H, the
    previous layer's pooled state, zeros at layer 1), and ``+`` combinations such as
    ``hidden+prev`` or ``features+logits`` (parts concatenated in order); their bounds are the
    range over the cache widened by 10 % (live values are clipped to them).

    ## Rewards

    With ``t`` the exit layer, ``c_t`` the cost fraction (FLOPs spent / FLOPs of the full model,
    policy FLOPs included) and ``m`` the memorized layer, ``reward=`` picks (see
    :mod:`exitgym.envs.rewards`): ``vanilla`` ``−CE_t(y) − α·c_t``, ``hardness``
    ``−CE_t(y) − α·(1 − m/L)·c_t``, ``accuracy`` ``1[correct] − α·c_t``, ``flops``
    ``−CE_t(y) − λ·c_t`` (set ``env.unwrapped.reward_shape.lam`` while training). Terminal by
    default (everything at the exit step, 0 before); ``dense=True`` pays ``−w·Δc`` on every step
    and the quality at the exit, with the same episode return.

    ## Starting State

    ``reset`` picks an input uniformly with the env's seeded generator (or
    ``options={"sample_id": i}``) and returns the observation after layer 1 (layer 1 always runs).

    ## Episode End

    Terminates when the agent exits, or after the last layer (continuing at layer ``L`` exits there:
    the last head answers). Never truncated; episodes last at most ``L`` steps.

    ``info`` on every step (and reset): ``layer`` (1-based), ``cost`` (so far), ``sample_id``. At
    the end also ``exit_layer``, ``prediction``, ``label``, ``correct``, ``flops`` (absolute),
    ``memorized_layer`` and ``oracle_layer``.

    ## Arguments

    ```python
    gym.make("exitgym/EarlyExit-v0", task="rt-polarity", backbone="minilm-l6", split="policy",
             heads="two-stage", text_column="text", label_column="label", text_pair_column=None,
             reward="vanilla", alpha=None, observation="features", dense=False, live=False,
             cache=None, prepare_options=None, policy_flops=0.0, render_mode=None,
             device="auto", dtype="float32", **reward_kwargs)
    ```

    The keyword arguments are the fields of :class:`~exitgym.envs.settings.ExitSettings` (each
    documented there); ``EarlyExitEnv(settings)`` takes such an object instead. A key that is not
    a field goes to the reward shape (``lam=`` for ``reward="flops"``); any other is refused with
    the allowed keys listed.

    - ``task``, ``backbone``, ``split``, ``heads``: which prepared cache to use; a missing cache is
      built on first use (``exitgym.data.prepare.get_cache``). In live mode ``backbone`` /
      ``heads`` may also be model objects.
    - ``text_column``, ``label_column``, ``text_pair_column``: columns of a local data file
      ``task`` (bring your own data; the same options as ``exitgym prepare``).
    - ``reward``: a registered reward name or a ``RewardShape``; ``alpha`` its cost weight
      (``None``: :data:`exitgym.envs.rewards.DEFAULT_ALPHA` = 0.2).
    - ``observation``: view spec; ``dense``: reward delivery; ``live``: run the backbone.
    - ``cache``: a ``LayerCache`` to use directly (tests, agents, synthetic caches).
    - ``prepare_options``: further ``prepare`` options of the named cache (``max_length``,
      ``max_samples``), so that JSON keyword arguments alone (``env.spec.kwargs``, a Minari
      dataset's env spec) rebuild any prepared cache.
    - ``policy_flops``: FLOPs of one policy evaluation, charged at every layer visited.
    - ``render_mode``: ``None`` or ``"ansi"`` (one line per call).
    - ``device``, ``dtype``: where and in which precision the live backbone runs
      (``env.unwrapped.device`` says where it does). A cached env runs no torch, so it refuses a
      CUDA device or a dtype other than float32 instead of ignoring them (``"auto"`` and
      ``"cpu"`` are accepted).

    ## Version History

    - v0: initial version. Since 2026-11-29 the default ``split`` is ``policy`` (training rows
      the exit heads were not fitted on) instead of ``train``; rewards and observations unchanged.
      Since 2026-12-04 ``prepare_options`` names caches prepared with non-default options
      (a new keyword; rewards and observations unchanged).

    ## Examples

    A synthetic cache (numpy only, nothing prepared or downloaded) stands in for a prepared one:

    >>> import gymnasium as gym
    >>> import exitgym
    >>> from exitgym.data.synthetic import synthetic_cache
    >>> cache = synthetic_cache(num_samples=8, num_layers=4, num_labels=2, hidden_size=8)
    >>> env = gym.make("exitgym/EarlyExit-v0", cache=cache, reward="hardness", alpha=0.5)
    >>> env.observation_space.shape, env.action_space
    ((6,), Discrete(2))
    >>> obs, info = env.reset(seed=0, options={"sample_id": 3})
    >>> info  # doctest: +ELLIPSIS
    {'layer': 1, 'cost': 0.2..., 'sample_id': 3}
    >>> obs, reward, terminated, truncated, info = env.step(0)  # continue to layer 2
    >>> terminated, info["layer"]
    (False, 2)
    >>> obs, reward, terminated, truncated, info = env.step(1)  # exit with layer 2's head
    >>> terminated, truncated, info["exit_layer"], info["label"] == info["prediction"]
    (True, False, 2, True)

    The same environment from a settings object, and the native vector env:

    >>> from exitgym.envs import ExitSettings
    >>> from exitgym.envs.early_exit import EarlyExitEnv
    >>> EarlyExitEnv(ExitSettings(cache=cache, observation="hidden+prev")).observation_space.shape
    (16,)
    >>> venv = gym.make_vec("exitgym/EarlyExit-v0", num_envs=3, cache=cache,
    ...                     vectorization_mode="vector_entry_point")
    >>> obs, info = venv.reset(seed=0)
    >>> obs.shape, info["layer"].tolist()
    ((3, 6), [1, 1, 1])
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, settings: ExitSettings | None = None, **kwargs: Any) -> None:
        """Make the environment from an :class:`ExitSettings` or its fields as keyword arguments.

        Raises:
            ValueError: A keyword is neither a settings field nor an argument of the reward.
        """
        settings = self.settings_class.resolve(settings, kwargs)
        self.render_mode = check_render_mode(settings.render_mode, self.metadata["render_modes"])
        self.observation_space = self._build(settings)
        self._last = self.num_layers - 1
        self.action_space = spaces.Discrete(2)
        self._sampler = BlockSampler(1, self.tables.num_samples)
        self._runner: Any = None
        if settings.live:
            from exitgym.envs.live import LiveRunner

            self._runner = LiveRunner(self.cache, settings.backbone, settings.heads, settings.task,
                                      prepare_options=settings.cache_options(),
                                      device=settings.device, dtype=settings.dtype)
        self.device = "cpu" if self._runner is None else str(self._runner.device)
        """Where this env's torch runs (``cuda:0``, ``cpu``); a cached env runs none: ``cpu``."""
        self._l = -1  # 0-based index of the current layer; -1 when no episode runs
        self._finished = False
        self._sid = -1
        self._charged = 0.0

    # ---- gymnasium API ------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        sid = reset_sample_id(self, self._sampler, options)
        t = self.tables
        self._sid, self._l, self._finished, self._charged = sid, 0, False, 0.0
        self._mem = int(t.memorized[sid])
        self._cost_row = t.cost[sid].tolist()
        if self._runner is None:
            self._obs_rows = t.obs[sid]
            self._q_row = self._quality[sid].tolist()
            self._pred_row = t.prediction[sid]
        else:
            self._live_start(sid)
        return self._obs_rows[0].copy(), {"layer": 1, "cost": self._cost_row[0], "sample_id": sid}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        if action.__class__ is not int or (action != CONTINUE and action != EXIT):
            action = self._check_action(action)
        layer = self._l
        if layer < 0:
            raise RuntimeError(
                "step() called after the episode terminated; call reset() to start a new one"
                if self._finished
                else "step() called before reset(); call reset() first"
            )
        if action == CONTINUE and layer < self._last:
            layer += 1
            self._l = layer
            if self._runner is not None:
                self._live_advance(layer)
            cost = self._cost_row[layer]
            reward = 0.0
            if self.dense:
                reward = -self._weight() * (cost - self._charged)
                self._charged = cost
            info = {"layer": layer + 1, "cost": cost, "sample_id": self._sid}
            return self._obs_rows[layer].copy(), reward, False, False, info
        return self._exit(layer)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        if self._sid < 0:
            return "EarlyExit: no episode yet (call reset())"
        layer = self._l if self._l >= 0 else self._exit_index
        state = "exited" if self._finished else "running"
        return (
            f"sample {self._sid} layer {layer + 1}/{self.num_layers} ({state}) "
            f"prediction={int(self._pred_row[layer])} label={int(self.tables.labels[self._sid])} "
            f"cost={self._cost_row[layer]:.3f}"
        )

    # ---- internals ----------------------------------------------------------------------------
    def _check_action(self, action: Any) -> int:
        if not self.action_space.contains(action):
            raise ValueError(
                f"invalid action {action!r}; allowed: 0 (continue) or 1 (exit), an int or a "
                "0-d integer array"
            )
        return int(action)

    def _weight(self) -> float:
        return float(self._shape.cost_weight(np.int64(self._mem), self.num_layers))

    def _exit(self, layer: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        t, sid = self.tables, self._sid
        cost = self._cost_row[layer]
        reward = self._q_row[layer] - self._weight() * (cost - self._charged)
        self._l, self._finished, self._exit_index = -1, True, layer
        prediction = int(self._pred_row[layer])
        label = int(t.labels[sid])
        info = {
            "layer": layer + 1,
            "cost": cost,
            "sample_id": sid,
            "exit_layer": layer + 1,
            "prediction": prediction,
            "label": label,
            "correct": prediction == label,
            "flops": float(t.flops[sid, layer]),
            "memorized_layer": self._mem,
            "oracle_layer": int(t.oracle[sid]),
        }
        return self._obs_rows[layer].copy(), float(reward), True, False, info

    def _live_start(self, sid: int) -> None:
        """Allocate this episode's rows and run layer 1 live."""
        t = self.tables
        self._live_pooled = np.zeros((self.num_layers, self.cache.hidden_size), dtype=np.float32)
        self._live_logits = np.zeros((self.num_layers, self.cache.num_labels), dtype=np.float32)
        self._obs_rows = np.zeros((self.num_layers, t.low.shape[0]), dtype=np.float32)
        self._q_row = [0.0] * self.num_layers
        self._pred_row = np.zeros(self.num_layers, dtype=np.int64)
        pooled, logits = self._runner.start(sid)
        self._live_store(0, pooled, logits)

    def _live_advance(self, layer: int) -> None:
        pooled, logits = self._runner.advance(layer)
        self._live_store(layer, pooled, logits)

    def _live_store(self, layer: int, pooled: np.ndarray, logits: np.ndarray) -> None:
        """Record layer ``layer``'s live outputs and derive its observation, quality, prediction."""
        sid, n = self._sid, layer + 1
        self._live_pooled[layer] = pooled
        self._live_logits[layer] = logits
        inputs = ViewInputs(
            pooled=self._live_pooled[None, :n],
            logits=self._live_logits[None, :n],
            cost=self.tables.cost[sid][None, :n],
            num_layers=self.num_layers,
        )
        row = self.view.compute(inputs)[0, -1]
        # Float noise may put a live value a hair outside the cache-derived bounds.
        self._obs_rows[layer] = np.clip(row, self.tables.low, self.tables.high)
        label = self.tables.labels[sid : sid + 1]
        ce = cross_entropy(logits[None, None, :], label)[0, 0]
        prediction = int(np.argmax(logits))
        self._pred_row[layer] = prediction
        quality = self._shape.quality(np.float64(ce), np.bool_(prediction == int(label[0])))
        self._q_row[layer] = float(quality)
