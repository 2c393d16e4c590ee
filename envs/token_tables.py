"""The cached mode of ``exitgym/TokenExit-v0``: every per-layer quantity of every token, once.

With ``kv="full"`` every layer runs for every token whatever the policy does, and with teacher
forcing the next token is the full-depth one, so a token's states, heads and costs at each layer
do not depend on the decisions. :func:`build_token_tables` runs the *live* code
(:class:`~exitgym.envs.token_runner.TokenRunner`, one row, the same calls in the same order)
through every layer of every token and records what an exit at each layer would see and earn,
so cached and live episodes give identical observations and rewards (tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class TokenTables:
    """``[prompt, token, layer - 1]`` tables (``P`` prompts, ``T`` tokens, ``L`` layers)."""

    obs: np.ndarray
    """float32 ``[P, T, L, d]`` observation after each layer."""
    cost: np.ndarray
    """float64 ``[P, T, L]`` cost fraction of the token when exiting at each layer."""
    flops: np.ndarray
    """float64 ``[P, T, L]`` FLOPs charged when exiting at each layer."""
    computed: np.ndarray
    """float64 ``[P, T, L]`` FLOPs that really ran when exiting at each layer."""
    ce: np.ndarray
    """float64 ``[P, T, L]`` cross-entropy of the full-depth token at each head."""
    emitted: np.ndarray
    """int64 ``[P, T, L]`` each head's token."""
    reference: np.ndarray
    """int64 ``[P, T]`` the full-depth continuation."""
    full_flops: np.ndarray
    """float64 ``[P, T]`` full-depth FLOPs of each token."""
    memorized: np.ndarray
    """int64 ``[P, T]`` memorized layer of each token (``L`` when the reward needs none)."""


def build_token_tables(core: Any) -> TokenTables:
    """Run every prompt's full-depth, teacher-forced continuation through the live runner."""
    import torch

    from exitgym.envs.token_runner import TokenRunner

    world, settings = core.world, core.settings
    bb, L, T = world.backbone, core.num_layers, settings.max_new_tokens
    P = len(world.prompt_ids)
    d = len(core._low)
    out = {name: np.zeros((P, T, L)) for name in ("cost", "flops", "computed", "ce")}
    obs = np.zeros((P, T, L, d), dtype=np.float32)
    emitted = np.zeros((P, T, L), dtype=np.int64)
    reference = np.zeros((P, T), dtype=np.int64)
    full = np.zeros((P, T))
    memorized = np.full((P, T), L, dtype=np.int64)
    with torch.no_grad():
        for p, prompt in enumerate(world.prompt_ids):
            runner = TokenRunner(bb, 1, world.capacity(T), "full", True, core.head_every_layer,
                                 core.policy_flops, core.need_memorized)
            runner.begin([0], [prompt])
            for t in range(T):
                charged, logits = [], []
                for i in range(L):
                    if i:
                        runner.advance([0])
                    charged.append(float(runner.flops[0]))
                    logits.append(runner.logits[0].get(i))
                # What an exit at layer i pays and sees (heads charged on first use, as live).
                head = 0.0 if core.head_every_layer else bb.flops.head(1)
                for i in range(L):
                    z = logits[i] if logits[i] is not None else bb.logits(runner.hidden[[0], i])[0]
                    logits[i] = z
                    out["flops"][p, t, i] = charged[i] + head
                outcome = runner.exit([0])[0]
                reference[p, t], full[p, t] = outcome.reference, outcome.full_flops
                memorized[p, t] = outcome.memorized
                stacked = torch.stack(logits)
                emitted[p, t] = stacked.argmax(dim=-1).numpy()
                for i in range(L):
                    logp = torch.log_softmax(stacked[i: i + 1].double(), dim=-1)
                    out["ce"][p, t, i] = float(-logp[0, outcome.reference])
                upper = _upper_layers(bb, runner, L)
                out["computed"][p, t] = out["flops"][p, t] + upper
                out["cost"][p, t] = out["flops"][p, t] / outcome.full_flops
                hidden = runner.hidden[0].numpy()
                heads = stacked.numpy() if core.head_every_layer else None
                cost_seen = np.array(charged) / outcome.full_flops
                for i in range(L):
                    obs[p, t, i] = core.observe(hidden[: i + 1],
                                                None if heads is None else heads[: i + 1],
                                                cost_seen[: i + 1])
                if t + 1 < T:
                    runner.next_token([0], [outcome])
    return TokenTables(obs, out["cost"], out["flops"], out["computed"], out["ce"], emitted,
                       reference, full, memorized)


def _upper_layers(bb: Any, runner: Any, num_layers: int) -> np.ndarray:
    """FLOPs of the layers above each exit layer that ``kv="full"`` still runs (``[L]``)."""
    pos = int(runner.cache.lengths[0, 0]) - 1
    per_layer = float(bb.flops.layer(1, pos + 1))
    return np.array([(num_layers - 1 - i) * per_layer for i in range(num_layers)])
