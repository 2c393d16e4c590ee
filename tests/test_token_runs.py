"""``exitgym train --env exitgym/TokenExit-v0`` runs and ``exitgym.generate(run_dir, ...)``.

A tiny random Llama saved with a word-level tokenizer of the tiny CSV task's words (so the task's
texts are prompts and the distilled heads can be fitted; a small vocabulary keeps the LM head from
dominating the FLOPs, so exiting early pays), trained for a few REINFORCE updates on the cached
``kv="full"`` env; nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import exitgym
from exitgym.experiments.runs import RunError
from tests.tiny_project import make_tiny_project

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["good fun x1", "bad dull awful x3", "lovely great", "boring x7 dull"]
OBSERVATION = "depth+hidden+prev"


def word_tokenizer() -> Any:
    """A whitespace word-level tokenizer of the tiny task's words (``tests.tiny_project``)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.tiny_project import WORDS

    words = ["[PAD]", "[UNK]", *sorted({w for ws in WORDS.values() for w in ws}),
             *(f"x{i}" for i in range(90))]
    model = models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def save_tiny_decoder(path: Path, seed: int = 0) -> Any:
    """A 3-layer random Llama with :func:`word_tokenizer`, saved to ``path``; returns it."""
    from transformers import LlamaConfig

    from exitgym.backbones.decoder_registry import load_decoder

    tok = word_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, pad_token_id=0, bos_token_id=None,
                         eos_token_id=None, initializer_range=0.2)
    bb = load_decoder(config, tokenizer=tok, seed=seed)
    bb.model.save_pretrained(path)
    tok.save_pretrained(path)
    return bb


def token_train_config(task: str, decoder: str, **overrides: Any) -> Any:
    from exitgym.experiments.configs import TrainConfig
    from exitgym.utils.configs import from_dict

    values = {"env": "exitgym/TokenExit-v0", "task": task, "decoder": decoder, "steps": 12,
              "batch_size": 8, "num_envs": 8, "reward": "vanilla", "alpha": 2.0,
              "observation": OBSERVATION, "max_prompts": 8, "max_new_tokens": 4,
              "max_prompt_tokens": 8, "checkpoint_every": 6, "lr": 0.05}
    return from_dict(TrainConfig, {**values, **overrides})


def train_run(root: Path, **overrides: Any) -> Any:
    from exitgym.experiments.training import train

    project = make_tiny_project(root)
    save_tiny_decoder(root / "tinylm")
    cfg = token_train_config(project["task"], str(root / "tinylm"), **overrides)
    return train(cfg, root / "run", progress=False, plots=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return train_run(tmp_path_factory.mktemp("token-run"))


def test_the_run_records_the_decoder_env_and_fingerprints(trained) -> None:
    from exitgym.experiments.env_spec import EnvSpec
    from exitgym.experiments.token_runs import decoder_and_heads, heads_fingerprint

    run = trained.run.path
    spec = EnvSpec.from_json(json.loads((run / "env_spec.json").read_text()))
    assert spec == trained.spec
    assert (spec.env_id, spec.heads, spec.split) == ("exitgym/TokenExit-v0", "distilled",
                                                     "policy")
    assert {k: spec.kwargs[k] for k in ("kv", "teacher_forcing", "cached", "max_new_tokens",
                                        "observation")} == {
        "kv": "full", "teacher_forcing": True, "cached": True, "max_new_tokens": 4,
        "observation": OBSERVATION}
    assert spec.kwargs["policy_flops"] == trained.policy.policy_flops > 0
    bb, maps = decoder_and_heads(spec)
    recorded = json.loads((run / "config.json").read_text())
    prints = recorded["fingerprints"]["policy"]
    assert recorded["config"]["decoder_heads"] == "distilled"  # the decoder env's flags stored
    assert prints["backbone_fingerprint"] == bb.fingerprint()
    assert maps is not None and prints["heads_fingerprint"] == heads_fingerprint(maps)
    # the spec rebuilds the env it describes
    env = spec.make(2)
    try:
        settings = env.unwrapped.settings if hasattr(env, "unwrapped") else env.settings
        assert (settings.max_new_tokens, settings.kv, settings.observation) == (4, "full",
                                                                              OBSERVATION)
        assert env.world.backbone is bb
        assert heads_fingerprint(env.world.maps) == prints["heads_fingerprint"]
    finally:
        env.close()


def test_generate_from_the_run_equals_the_in_memory_policy(trained) -> None:
    from exitgym.experiments.token_runs import decoder_and_heads

    bb, maps = decoder_and_heads(trained.spec)
    from_run = exitgym.generate(str(trained.run.path), PROMPTS, max_new_tokens=5, batch_size=3,
                                reference=True)
    in_memory = exitgym.generate(trained.policy, PROMPTS, max_new_tokens=5, batch_size=3,
                                 backbone=bb, heads=maps, observation=OBSERVATION,
                                 reference=True)
    assert from_run.generated_ids == in_memory.generated_ids
    assert from_run.exit_layers == in_memory.exit_layers
    assert np.array_equal(from_run.cost, in_memory.cost)
    layers = [x for row in from_run.exit_layers for x in row]
    assert min(layers) < bb.num_layers  # the policy exits early: heads and view matter
    # ... and they do: the plain LM head, or another view, gives another result
    plain = exitgym.generate(trained.policy, PROMPTS, max_new_tokens=5, batch_size=3,
                             backbone=bb, observation=OBSERVATION)
    assert (plain.generated_ids, plain.exit_layers) != (from_run.generated_ids,
                                                        from_run.exit_layers)


def test_generate_refuses_another_decoder_or_arguments_the_run_fixes(trained, tmp_path) -> None:
    other = save_tiny_decoder(tmp_path / "other", seed=1)
    with pytest.raises(RunError, match="weights differ"):
        exitgym.generate(trained.run.path, PROMPTS, backbone=other)
    with pytest.raises(ValueError, match="reads observation 'depth\\+hidden\\+prev', not"):
        exitgym.generate(trained.run.path, PROMPTS, observation="hidden")
    with pytest.raises(ValueError, match="heads= is for policy objects"):
        exitgym.generate(trained.run.path, PROMPTS, heads="lm-head")


def test_a_tampered_decoder_on_disk_is_refused_by_generate_and_evaluate(tmp_path) -> None:
    from exitgym.cli import main
    from exitgym.envs.token_core import decoder_by_name

    result = train_run(tmp_path, steps=2)
    save_tiny_decoder(tmp_path / "tinylm", seed=7)  # other weights where the run's decoder was
    decoder_by_name.cache_clear()  # a new process would load the files afresh
    with pytest.raises(RunError, match="fingerprint .* its weights differ"):
        exitgym.generate(result.run.path, PROMPTS)
    assert main(["evaluate", str(result.run.path), "--split", "validation"]) != 0
    assert not (result.run.path / "eval-validation.json").exists()


def test_evaluate_recomputes_the_recorded_evaluation(trained, capsys) -> None:
    from exitgym.cli import main

    recorded = json.loads((trained.run.path / "eval-test.json").read_text())
    assert main(["evaluate", str(trained.run.path), "--split", "test", "--num-envs", "8"]) == 0
    again = json.loads((trained.run.path / "eval-test.json").read_text())
    for summary in (recorded, again):
        summary["meta"].pop("wall_s")
    assert again == recorded


def test_dense_is_refused_on_token_exit_and_decoder_flags_elsewhere() -> None:
    from exitgym.experiments.configs import TrainConfig
    from exitgym.utils.configs import from_dict

    with pytest.raises(ValueError, match="--dense is not available on exitgym/TokenExit-v0"):
        token_train_config("t.csv", "d", dense=True)
    with pytest.raises(ValueError, match="\\['--kv', '--max-new-tokens'\\] set the decoder env; "
                       "they need --env exitgym/TokenExit-v0"):
        from_dict(TrainConfig, {"max_new_tokens": 8, "kv": "copy"})
    with pytest.raises(ValueError, match="\\['--backbone'\\] set the encoder envs; "
                       "exitgym/TokenExit-v0 takes the decoder as --decoder"):
        from_dict(TrainConfig, {"env": "exitgym/TokenExit-v0", "backbone": "smollm2-135m"})
    encoder = TrainConfig()
    assert "decoder" not in encoder.flat() and "decoder" in token_train_config("t", "d").flat()


def test_an_sb3_run_on_token_exit_generates_like_its_trained_policy(tmp_path) -> None:
    from exitgym.experiments.token_runs import decoder_and_heads

    result = train_run(tmp_path, agent="ppo", steps=64, n_steps=32, num_envs=2, lr=0.003)
    assert result.spec.kwargs["policy_flops"] == result.policy.policy_flops > 0
    bb, maps = decoder_and_heads(result.spec)
    from_run = exitgym.generate(result.run.path, PROMPTS, max_new_tokens=4, batch_size=2)
    in_memory = exitgym.generate(result.policy, PROMPTS, max_new_tokens=4, batch_size=2,
                                 backbone=bb, heads=maps, observation=OBSERVATION)
    assert (from_run.generated_ids, from_run.exit_layers) == (in_memory.generated_ids,
                                                              in_memory.exit_layers)
    assert np.array_equal(from_run.cost, in_memory.cost)


def test_resume_is_bit_identical_and_refuses_another_decoder(tmp_path) -> None:
    import torch

    from exitgym.envs.token_core import decoder_by_name
    from exitgym.experiments.training import train

    project = make_tiny_project(tmp_path)
    save_tiny_decoder(tmp_path / "tinylm")
    cfg = token_train_config(project["task"], str(tmp_path / "tinylm"), steps=8,
                             checkpoint_every=4)

    def stop(update: int) -> None:
        if update == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False, plots=False, after_update=stop)
    save_tiny_decoder(tmp_path / "tinylm", seed=7)
    decoder_by_name.cache_clear()
    with pytest.raises(RunError, match="weights differ"):
        train(cfg, tmp_path / "run", resume=True, progress=False, plots=False)
    save_tiny_decoder(tmp_path / "tinylm", seed=0)  # the run's decoder again
    decoder_by_name.cache_clear()
    resumed = train(cfg, tmp_path / "run", resume=True, progress=False, plots=False)
    whole = train(cfg, tmp_path / "whole", progress=False, plots=False)
    a, b = resumed.policy.state_dict(), whole.policy.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
