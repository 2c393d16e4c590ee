"""Checkpoint state of a REINFORCE-family trainer: policy, Adam and every random generator.

Saved as safetensors (tensors) plus JSON (step counters, generator states), so a resumed run ends
bit-identical to an uninterrupted one and nothing is ever unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def trainer_state(agent: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, json) capturing the policy, Adam and every generator the trainer draws from."""
    tensors = {f"policy.{k}": v.detach().contiguous() for k, v in agent.policy.state_dict().items()}
    opt = agent.optimizer.state_dict()
    for idx, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{idx}.{key}"] = value.detach().contiguous().reshape(value.shape)
    meta = {"updates": agent.updates, "moving_average": float(agent.moving_average),
            "param_groups": opt["param_groups"], "trainer_rng": agent.rng.bit_generator.state,
            "policy_rng": agent.policy._rng.bit_generator.state,
            "lam": float(getattr(agent, "lam", 0.0)),
            "lambda_history": list(getattr(agent, "lambda_history", []))}
    return tensors, meta


def restore_trainer(agent: Any, path: Path) -> None:
    """Put a checkpoint written by :func:`trainer_writer` back into ``agent`` (no pickle)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path / "trainer.safetensors"))
    meta = json.loads((path / "trainer.json").read_text())
    agent.policy.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("policy.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    agent.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    agent.updates, agent.moving_average = int(meta["updates"]), float(meta["moving_average"])
    agent.rng.bit_generator.state = meta["trainer_rng"]
    agent.policy._rng.bit_generator.state = meta["policy_rng"]
    if hasattr(agent, "lam"):
        agent.lam, agent.lambda_history = meta["lam"], list(meta["lambda_history"])
        sync = getattr(agent, "_sync_env_lambda", None)
        if callable(sync):
            sync()


def trainer_writer(agent: Any) -> Callable[[Path], None]:
    """A ``write(tmp_dir)`` for :func:`~exitgym.experiments.runs.save_checkpoint`."""
    def write(tmp: Path) -> None:
        from safetensors.torch import save_file

        tensors, meta = trainer_state(agent)
        save_file(tensors, str(tmp / "trainer.safetensors"))
        (tmp / "trainer.json").write_text(json.dumps(meta))

    return write
