"""Which environment runs through which command and engine: the support matrix, as data.

Every cell is an (environment, backbone kind, engine, command) and either works or is refused
with a reason. This table is the one source of truth for both ``tests/test_matrix.py`` (and
``tests/ray/test_matrix_ray.py``), which run every cell on tiny models and assert that a working
cell works and a refused cell is refused with this message, and the docs' matrix page (the
``matrix ENGINE`` table block of ``docs/_ext/exitgym_docs.py``), so the page cannot go stale.

- backbone ``encoder``: a BERT-style model (``--backbone``; for ``TokenExit-v0``, ``--decoder``
  given an encoder); ``decoder``: a decoder LM (``--decoder`` for ``TokenExit-v0``, ``--backbone``
  for the others).
- engines: ``local`` (exitgym's REINFORCE), ``sb3`` (``--agent ppo``), ``rllib`` (``train
  --engine rllib``), ``tune`` (the trial runs of ``compare --engine tune``).
- commands: ``train``, ``evaluate`` (recomputes the recorded evaluation), ``replay --verify``,
  ``infer`` (``exitgym.infer``), ``generate`` (``exitgym.generate``), ``--resume`` (an
  interrupted run resumed equals an uninterrupted one).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BACKBONES", "COMMANDS", "ENGINES", "ENVS", "MATRIX", "Cell", "cell", "markdown_table",
           "reasons", "reasons_list"]

ENVS = ("exitgym/EarlyExit-v0", "exitgym/SkipBlock-v0", "exitgym/SwitchableDecision-v0",
        "exitgym/TokenExit-v0")
"""Every registered environment."""
BACKBONES = ("encoder", "decoder")
"""The kinds of backbone a cell runs on."""
ENGINES = ("local", "sb3", "rllib", "tune")
"""Where training runs."""
COMMANDS = ("train", "evaluate", "replay --verify", "infer", "generate", "--resume")
"""What a user does with a run."""

EARLY, SKIP, SWITCH, TOKEN = ENVS

DECODER_PREPARE = "is a decoder LM; prepare builds encoder exit heads and caches"
"""``prepare`` (hence ``train``) given a decoder for an encoder env (:mod:`exitgym.data`)."""
TOKEN_ENCODER = "unsupported decoder model_type"
"""``--env exitgym/TokenExit-v0 --decoder`` given an encoder."""
RLLIB_ENV = "--engine rllib trains on the cached envs ['exitgym/EarlyExit-v0']"
"""RLlib trains the cached env only (workers read a copied cache file)."""
RLLIB_RESUME = "--resume is not available with --engine rllib"
"""RLlib checkpoints are pickles, which exitgym never loads."""
TUNE_ENV = "--engine tune compares on exitgym/EarlyExit-v0 only"
"""``compare --engine tune`` sweeps the early-exit comparison only (``exitgym.cli.compare``)."""
TUNE_TOKEN = "argument --env: invalid choice: 'exitgym/TokenExit-v0'"
"""``compare`` takes the encoder envs; generation is compared by ``demo --generation``."""
INFER_TOKEN = "deploy it with exitgym.generate(run_dir, prompts)"
"""``exitgym.infer`` answers texts; a decoder's per-token exits are generated."""
GENERATE_OTHER = "exitgym.generate deploys runs of ['exitgym/TokenExit-v0']"
"""``exitgym.generate`` deploys decoder runs only."""
NO_RUN = "no such run: train refuses this combination"
"""A command on a run that ``train`` cannot make."""

WHY: dict[str, str] = {
    DECODER_PREPARE: "encoder envs train on prepared encoder caches; a decoder trains with "
                     "`--env exitgym/TokenExit-v0 --decoder`, and the skip envs take one through "
                     "`gym.make` (no `train` runs of them yet)",
    TOKEN_ENCODER: "TokenExit-v0 generates text: `--decoder` must be a decoder LM",
    RLLIB_ENV: "RLlib workers read a copied per-layer cache; live and decoder envs have none",
    TUNE_ENV: "Tune runs the trials of the exit comparison; `compare --env` on a skip env runs "
              "with the local engine",
    TUNE_TOKEN: "`compare` takes the encoder envs; generation is compared by "
                "`exitgym demo --generation`",
    RLLIB_RESUME: "RLlib checkpoints are pickles, which exitgym never loads",
    INFER_TOKEN: "`exitgym.infer` answers texts; a decoder's per-token exits are generated",
    GENERATE_OTHER: "`exitgym.generate` deploys decoder runs; encoder runs use `exitgym.infer`",
}
"""Each refusal reason explained for the docs (the reason itself is the message's text)."""


@dataclass(frozen=True)
class Cell:
    """One (env, backbone, engine, command): works, or is refused with ``reason``."""

    works: bool
    """The command runs (the tests assert its result)."""
    reason: str = ""
    """Refused: a fragment of the refusal message (the tests assert it is in the message)."""


def _train(env: str, backbone: str, engine: str) -> Cell:
    """Whether ``train`` (or the tune sweep) makes a run of this combination."""
    decoder_env = env == TOKEN
    if engine == "rllib" and env != EARLY:
        return Cell(False, RLLIB_ENV)
    if engine == "tune" and env == TOKEN:
        return Cell(False, TUNE_TOKEN)
    if engine == "tune" and env != EARLY:
        return Cell(False, TUNE_ENV)
    if decoder_env and backbone == "encoder":
        return Cell(False, TOKEN_ENCODER)
    if not decoder_env and backbone == "decoder":
        return Cell(False, DECODER_PREPARE)
    return Cell(True)


def _command(env: str, engine: str, command: str) -> Cell:
    """A command on a run ``train`` made."""
    if command == "infer" and env == TOKEN:
        return Cell(False, INFER_TOKEN)
    if command == "generate" and env != TOKEN:
        return Cell(False, GENERATE_OTHER)
    if command == "--resume" and engine == "rllib":
        return Cell(False, RLLIB_RESUME)
    return Cell(True)


def _build() -> dict[tuple[str, str, str, str], Cell]:
    matrix = {}
    for env in ENVS:
        for backbone in BACKBONES:
            for engine in ENGINES:
                trained = _train(env, backbone, engine)
                for command in COMMANDS:
                    if command == "train":
                        matrix[env, backbone, engine, command] = trained
                    elif not trained.works:
                        matrix[env, backbone, engine, command] = Cell(False, NO_RUN)
                    else:
                        matrix[env, backbone, engine, command] = _command(env, engine, command)
    return matrix


MATRIX: dict[tuple[str, str, str, str], Cell] = _build()
"""``(env, backbone, engine, command) -> Cell`` for every combination."""


def cell(env: str, backbone: str, engine: str, command: str) -> Cell:
    """The cell of one combination (``KeyError`` names the axes' allowed values)."""
    key = (env, backbone, engine, command)
    if key not in MATRIX:
        raise KeyError(f"no matrix cell {key}; envs {ENVS}, backbones {BACKBONES}, engines "
                       f"{ENGINES}, commands {COMMANDS}")
    return MATRIX[key]


def reasons() -> list[str]:
    """Every refusal reason a cell gives, in the docs' numbering order (train first)."""
    used = {value.reason for value in MATRIX.values() if not value.works}
    order = (DECODER_PREPARE, TOKEN_ENCODER, RLLIB_ENV, TUNE_ENV, TUNE_TOKEN, RLLIB_RESUME,
             INFER_TOKEN, GENERATE_OTHER, NO_RUN)
    return [reason for reason in order if reason in used]


def markdown_table(engine: str) -> list[str]:
    """The cells of one engine as a Markdown table: a row per environment and backbone, a
    column per command; ``yes``, ``no (n)`` with ``n`` the number of :func:`reasons_list`, or
    ``—`` where ``train`` makes no such run (:data:`NO_RUN`)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; allowed: {list(ENGINES)}")
    numbers = {reason: k for k, reason in enumerate(reasons(), start=1)}
    lines = ["| environment | backbone | " + " | ".join(f"`{c}`" for c in COMMANDS) + " |",
             "|---|---|" + "|".join(":---:" for _ in COMMANDS) + "|"]
    for env in ENVS:
        for backbone in BACKBONES:
            cells = [MATRIX[env, backbone, engine, c] for c in COMMANDS]
            text = ["yes" if v.works else "—" if v.reason == NO_RUN
                    else f"no ({numbers[v.reason]})" for v in cells]
            lines.append(f"| `{env.split('/')[-1]}` | {backbone} | " + " | ".join(text) + " |")
    return lines


def reasons_list() -> list[str]:
    """The refusal reasons, numbered as :func:`markdown_table` cites them (Markdown list)."""
    return [f"{k}. `{reason}`: {WHY[reason]}" for k, reason in enumerate(reasons(), start=1)
            if reason != NO_RUN]
