"""The exit predictor behind ``TokenExit-v0``'s ``predictor`` observation view: which one an env
reads (:func:`exit_predictor`) and its probabilities over a token's layers (:func:`predicted`),
shared by the live env and the cached tables so their observations are equal."""

from __future__ import annotations

from typing import Any

import numpy as np

from exitgym.envs.settings import TokenExitSettings
from exitgym.envs.token_prompts import check_fits


def exit_predictor(settings: TokenExitSettings, bb: Any) -> Any:
    """The exit predictor of the ``predictor`` view: ``settings.predictor``, else the one fitted
    beside ``heads="trained"``.

    Raises:
        ValueError: neither is there, or the predictor is for another depth or width.
    """
    predictor = settings.predictor
    if predictor is None and settings.heads == "trained":
        from exitgym.data.trained_heads import trained_predictor

        predictor = trained_predictor(bb, settings.task, **settings.column_options())
    if predictor is None or not hasattr(predictor, "probability"):
        raise ValueError("the 'predictor' observation needs an exit predictor: heads='trained' "
                         "(its fitted predictor) or predictor=<ExitPredictor>, got "
                         f"{type(predictor).__name__}")
    return check_fits(predictor, bb, "exit predictor is")


def predicted(predictor: Any, hidden: np.ndarray, first: int = 0) -> np.ndarray:
    """``[n, l]`` float64 P(agree) of layers ``first..first + l - 1`` for states ``[n, l, H]``."""
    import torch

    states = torch.from_numpy(np.asarray(hidden, dtype=np.float64))
    return np.stack([predictor.probability(first + i, states[:, i]).numpy()
                     for i in range(states.shape[1])], axis=1)


__all__ = ["exit_predictor", "predicted"]
