"""Exit rules of token-level early exit in generation (CALM), for ``exitgym/TokenExit-v0``.

The classic rules of :mod:`exitgym.agents.rules` (entropy, max-probability, patience) work on
TokenExit-v0 unchanged: a token's layer 1 reads as a new episode to their layer tracker, so their
state restarts with every token. This module adds CALM's two confidence measures and the bound:

| rule        | knob      | exits when                                                          |
|-------------|-----------|---------------------------------------------------------------------|
| margin      | ``theta`` | top-1 minus top-2 token probability > theta (CALM softmax response) |
| saturation  | ``theta`` | cosine of the token's states after layers l and l − 1 > theta       |
| predictor   | ``theta`` | a learned P(head's token == full-depth token) from the state >= theta|
| token-oracle| (none)    | the head agrees with the full-depth token (reads the cached tables) |

Saturation reads no head at all (observation ``depth+hidden+prev``: the layer fraction and two
states), so it is the one confidence rule that does not pay an LM head per layer (a quarter of a
token on SmolLM2-135M). The predictor rule reads no head either (``depth+hidden``): a logistic
model per layer fitted on the decoder's states (:mod:`exitgym.backbones.exit_predictor`, prepared
with the ``trained`` heads), ``2·H + 2`` FLOPs per decision, which the env charges as the policy's
FLOPs (:attr:`PredictorExit.policy_flops`); the head runs only at the exit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from exitgym.agents.rules import ExitRule, ThresholdExit


class MarginExit(ThresholdExit):
    """CALM's softmax response: exit when ``p1 − p2`` exceeds ``theta``."""

    name = "margin"
    statistic = "margin"
    knob_bounds = (0.0, 1.0)
    grid = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)

    def __init__(self, theta: float = 0.5) -> None:
        super().__init__(theta)


class SaturationExit(ExitRule):
    """CALM's hidden-state saturation: exit when ``cos(h_l, h_{l−1}) > theta`` (never at l = 1,
    whose ``prev`` part is zeros)."""

    name = "saturation"
    knob = "theta"
    knob_bounds = (-1.0, 1.0)
    required_observation = "depth+hidden+prev"
    grid = (0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)

    def __init__(self, theta: float = 0.95) -> None:
        super().__init__(theta)

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        return cls.grid

    def act(self, obs: np.ndarray, infos: dict[str, Any] | None = None,
            deterministic: bool = True) -> np.ndarray:
        obs, frac, new = self._track(obs, np.float64)
        h, prev = self._part(obs, "hidden"), self._part(obs, "prev")
        norms = np.linalg.norm(h, axis=-1) * np.linalg.norm(prev, axis=-1)
        cos = np.where(norms > 0, (h * prev).sum(axis=-1) / np.maximum(norms, 1e-30), -1.0)
        return self._actions(cos > self.theta, frac)


class PredictorExit(ExitRule):
    """Exit when a learned per-layer predictor says the head agrees with the full-depth token
    with probability ``>= theta``.

    Args:
        theta: the probability threshold.
        predictor: an :class:`~exitgym.backbones.exit_predictor.ExitPredictor` (e.g.
            ``exitgym.data.trained_heads.trained_predictor``); required to act.
    """

    name = "predictor"
    knob = "theta"
    knob_bounds = (0.0, 1.0)
    required_observation = "depth+hidden"
    grid = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9999)
    """Up to 0.9999: fitted on a few thousand states, the predictor is overconfident (on
    SmolLM2 its mean P(agree) runs ~0.1-0.25 above the observed agreement), so the thresholds a
    calibration can certify sit at the top."""

    def __init__(self, theta: float = 0.9, predictor: Any = None) -> None:
        self.predictor = predictor
        super().__init__(theta)

    @classmethod
    def default_grid(cls, num_layers: int) -> tuple[float, ...]:
        return cls.grid

    @property
    def policy_flops(self) -> float:
        """FLOPs of one decision (what the env should charge per layer visited)."""
        return 0.0 if self.predictor is None else float(self.predictor.flops())

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        """``[B]``: the predicted agreement of the current layer of each slot (call after
        ``_track``)."""
        if self.predictor is None:
            raise ValueError("the predictor rule needs predictor= (an ExitPredictor, e.g. "
                             "exitgym.data.trained_heads.trained_predictor(decoder, task))")
        import torch

        h = torch.from_numpy(np.asarray(self._part(obs, "hidden"), dtype=np.float64))
        layer = self.tracker.layer
        out = np.ones(len(layer))
        for i in np.unique(layer):
            rows = np.flatnonzero(layer == i)
            out[rows] = self.predictor.probability(int(i) - 1, h[rows]).numpy()
        return out

    def act(self, obs: np.ndarray, infos: dict[str, Any] | None = None,
            deterministic: bool = True) -> np.ndarray:
        obs, frac, new = self._track(obs, np.float64)
        return self._actions(self.probabilities(obs) >= self.theta, frac)


class TokenOracleExit(ExitRule):
    """Exit at the first layer whose head agrees with the full-depth token: the bound.

    It cheats by design: it reads a cached TokenExit-v0's tables with the prompt and token index
    each step's info carries (``sample_id``, ``token``).
    """

    name = "token-oracle"
    required_observation = "depth"

    def __init__(self, tables: Any) -> None:
        super().__init__()
        agree = tables.emitted == tables.reference[..., None]
        self.first = agree.argmax(axis=-1) + 1  # 1-based; the last layer always agrees

    def exit_mask(self, layer, new, logits, infos):  # noqa: D102
        if not infos or "sample_id" not in infos or "token" not in infos:
            raise ValueError("the token oracle needs infos with 'sample_id' and 'token'")
        sid = np.atleast_1d(np.asarray(infos["sample_id"], dtype=np.int64))
        token = np.atleast_1d(np.asarray(infos["token"], dtype=np.int64))
        return layer >= self.first[sid, token]
