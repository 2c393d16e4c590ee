"""A tiny exitgym project on disk for the reliability tests: a CSV task and a local model folder.

Everything ``prepare`` / ``train`` / ``infer`` need, built in a second or two without downloads: a
random-init 3-layer BERT (hidden 32) saved with the embedded MiniLM tokenizer, and a 90-row
two-label CSV task. Also the harness that runs ``prepare`` or ``train`` in a subprocess and
SIGKILLs it at the N-th file write (half-way through writing that file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

WORDS = {0: ["bad", "dull", "awful", "boring"], 1: ["good", "great", "fun", "lovely"]}
PREPARE_OPTIONS = {"max_length": 16, "batch_size": 16, "epochs": 3}
"""Fast prepare settings shared by every reliability test."""
TINY_DIMS: dict[str, int] = {"vocab_size": 120, "hidden_size": 32, "num_hidden_layers": 3,
                             "num_attention_heads": 4, "intermediate_size": 64,
                             "max_position_embeddings": 64}
"""Sizes of the tiny random-init BERT-style configs the tests build (override per test)."""


def tiny_bert_config(**overrides: Any) -> Any:
    """A tiny random-init ``BertConfig`` (:data:`TINY_DIMS` with ``overrides``)."""
    from transformers import BertConfig

    return BertConfig(**{**TINY_DIMS, **overrides})


def make_tiny_project(root: Path) -> dict[str, str]:
    """Write ``toy.csv`` and ``tiny/`` (model + tokenizer) under ``root``; return prepare names."""
    from transformers import AutoTokenizer, BertConfig

    from exitgym.backbones.registry import BACKBONE_ALIASES, load_backbone

    root.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(BACKBONE_ALIASES["minilm-l6"]()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    bb = load_backbone(config, tokenizer=tokenizer, seed=0)
    bb.model.save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(90):
        label = i % 2
        words = [*rng.choice(WORDS[label], size=2).tolist(), f"x{i}"]
        rows.append(f'"{" ".join(words)}",{"pos" if label else "neg"}')
    (root / "toy.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    return {"task": str(root / "toy.csv"), "backbone": str(root / "tiny")}


def train_config(project: dict[str, str], **overrides: Any) -> Any:
    """A REINFORCE run of a few updates with a checkpoint every 2 updates."""
    from exitgym.experiments.configs import TrainConfig
    from exitgym.utils.configs import from_dict

    values = {"task": project["task"], "backbone": project["backbone"], "steps": 6,
              "checkpoint_every": 2, "batch_size": 8, "num_envs": 8,
              "max_length": PREPARE_OPTIONS["max_length"], "reward": "vanilla", "alpha": 0.3}
    return from_dict(TrainConfig, {**values, **overrides})  # flat keys: DataConfig's too


HARNESS = r'''
import io, json, os, pathlib, signal, sys
import numpy as np

KILL_AT = int(os.environ["EXITGYM_KILL_AT"])      # 0: only count the writes
COUNTING = [False]
COUNT = [0]


def event():
    """True when this write is the one to die in."""
    if not COUNTING[0]:
        return False
    COUNT[0] += 1
    return COUNT[0] == KILL_AT


def die(path, data):
    """Write the first half of ``data`` to ``path`` and SIGKILL this process (mid-write)."""
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        os.fsync(handle.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if event():
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)
os.replace = replace

_write_bytes, _write_text = pathlib.Path.write_bytes, pathlib.Path.write_text
def write_bytes(self, data):
    if event():
        die(self, bytes(data))
    return _write_bytes(self, data)
def write_text(self, data, *args, **kwargs):
    if event():
        die(self, data.encode())
    return _write_text(self, data, *args, **kwargs)
pathlib.Path.write_bytes, pathlib.Path.write_text = write_bytes, write_text

_save = np.save
def save(file, arr, *args, **kwargs):
    if event():
        buf = io.BytesIO()
        _save(buf, arr, *args, **kwargs)
        die(file, buf.getvalue())
    return _save(file, arr, *args, **kwargs)
np.save = save

import safetensors.torch as st
_save_file = st.save_file
def save_file(tensors, filename, metadata=None):
    if event():
        die(filename, st.save(tensors, metadata=metadata))
    return _save_file(tensors, filename, metadata=metadata)
st.save_file = save_file

job, args = sys.argv[1], json.loads(sys.argv[2])
from exitgym.data.prepare import prepare
from exitgym.experiments.configs import TrainConfig
from exitgym.experiments.training import train
from exitgym.utils.configs import from_dict

counts = {}
COUNTING[0] = job in ("count", "prepare")
prepare(task=args["task"], backbone=args["backbone"], progress=False, verbose=False,
        **args["options"])
counts["prepare"], COUNT[0], COUNTING[0] = COUNT[0], 0, False
if job in ("count", "train"):
    cfg = from_dict(TrainConfig, args["train"])
    for split in (cfg.train_split, cfg.eval_split):  # the caches train reads, built uncounted
        cfg.env_spec(split).cache(progress=False)
    COUNTING[0] = True
    train(cfg, args["out"], progress=False)
    counts["train"] = COUNT[0]
print(json.dumps(counts))
'''


def run_harness(job: str, args: dict[str, Any], cache: Path, kill_at: int,
                script_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``job`` in a fresh interpreter, killed at write ``kill_at`` of its counted phase.

    Jobs: ``count`` (prepare and train, counting the writes of each; ``kill_at=0``), ``prepare``
    (the prepare phase is counted) and ``train`` (prepare uncounted, then train counted).
    """
    script = script_dir / "kill_harness.py"
    if not script.is_file():
        script.write_text(HARNESS)
    root = str(Path(__file__).resolve().parent.parent)
    # the script lives in script_dir, so without this `import exitgym` found whichever copy is
    # installed (another checkout's, in a git worktree) instead of the one under test
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "EXITGYM_CACHE": str(cache), "EXITGYM_KILL_AT": str(kill_at),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": path}
    return subprocess.run([sys.executable, str(script), job, json.dumps(args)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=root)


def dead_pid() -> int:
    """The id of a process of this host that has exited (and been reaped): what a run killed
    by SIGKILL or a scheduler leaves in its ``run_state.json``."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
