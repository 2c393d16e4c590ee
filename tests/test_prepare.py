"""prepare / get_cache end to end on a tiny random backbone and a small CSV task."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

import exitgym.backbones.cache as cache_mod
from exitgym.backbones.cache import CacheError, build_cache, load_cache
from exitgym.backbones.heads import ExitHeads
from exitgym.backbones.registry import load_backbone
from exitgym.cli.prepare import register
from exitgym.data.config import SPLITS
from exitgym.data.prepare import (
    PrepareConfig,
    clear_cache_memo,
    get_cache,
    load_heads,
    load_prepared_backbone,
    prepare,
)
from exitgym.data.tasks import load_task
from tests.tiny_project import make_tiny_project


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny BERT saved as a local model directory and a 90-row CSV task."""
    root = tmp_path_factory.mktemp("prep")
    names = make_tiny_project(root)
    return names


def _opts(setup: dict[str, str], **kw) -> dict:
    return {**setup, "max_length": 16, "batch_size": 16, **kw}


def test_prepare_writes_heads_tables_and_reuses_them(setup, monkeypatch, capsys) -> None:
    prepared = prepare(progress=False, **_opts(setup))
    out = capsys.readouterr().out
    assert "| layer | acc train | acc policy | acc validation | acc test | FLOPs fraction |" in out
    assert set(prepared.cache_paths) == set(SPLITS)
    for name in ("heads.json", "heads.safetensors", "prepare_config.json", "history.json",
                 "accuracy_train_policy_validation_test.json",
                 "accuracy_train_policy_validation_test.md"):
        assert (prepared.directory / name).is_file(), name
    saved = json.loads((prepared.directory / "prepare_config.json").read_text())
    assert saved["config"]["heads"] == "two-stage" and saved["config"]["max_length"] == 16
    cache = load_cache(prepared.cache_paths["test"])
    rows = prepared.table["test"]
    assert [r["layer"] for r in rows] == [1, 2, 3]
    np.testing.assert_allclose([r["accuracy"] for r in rows], cache.correct.mean(0))
    np.testing.assert_allclose([r["cum_flops_fraction"] for r in rows], cache.cost().mean(0))
    # exiting at the last layer also paid for the L - 1 earlier heads
    full = cache.full_flops
    assert rows[-1]["cum_flops_fraction"] == pytest.approx(
        float(np.mean((full + 2 * cache.flops_head) / full)))

    def boom(*args, **kwargs):
        raise AssertionError("a valid prepared task must not be recomputed")

    monkeypatch.setattr(cache_mod, "compute_pooled", boom)
    stamps = {p.name: p.stat().st_mtime_ns for p in prepared.directory.iterdir()}
    again = prepare(progress=False, verbose=False, **_opts(setup))
    assert again.cache_paths == prepared.cache_paths and again.table == prepared.table
    # reuse writes nothing: identical accuracy tables are not rewritten (a rewrite changed the
    # prepared directory under concurrent readers)
    assert {p.name: p.stat().st_mtime_ns for p in prepared.directory.iterdir()} == stamps


def test_get_cache_equals_fresh_computation(setup) -> None:
    clear_cache_memo()
    cache = get_cache(split="validation", progress=False, **_opts(setup))
    assert get_cache(split="validation", progress=False, **_opts(setup)) is cache  # memoized
    bb = load_prepared_backbone(**_opts(setup))
    heads = load_heads(**_opts(setup))
    task = load_task(setup["task"])
    fresh = build_cache(bb, heads, list(task.dataset["validation"]["text"]),
                        np.asarray(list(task.dataset["validation"]["label"])),
                        max_length=16, batch_size=16, progress=False)
    for name in ("pooled", "logits", "labels", "lengths", "flops_embed", "flops_layer"):
        assert np.array_equal(getattr(cache, name), getattr(fresh, name)), name
    np.testing.assert_array_equal(cache.memorized, fresh.memorized)
    np.testing.assert_array_equal(cache.oracle, fresh.oracle)
    assert cache.meta["heads_fingerprint"] == heads.fingerprint()
    assert cache.label_names == ("neg", "pos") and cache.texts[0] == task.dataset[
        "validation"]["text"][0]


def test_fingerprint_change_and_corruption_trigger_rebuilds(setup) -> None:
    prepared = prepare(progress=False, verbose=False, splits=("test",), **_opts(setup))
    path = prepared.cache_paths["test"]
    original = load_cache(path)
    logits = np.array(original.logits)

    meta = json.loads((path / "meta.json").read_text())
    meta["heads_fingerprint"] = "0" * 64  # as if built from other heads
    (path / "meta.json").write_text(json.dumps(meta))
    clear_cache_memo()
    rebuilt = get_cache(split="test", progress=False, **_opts(setup))
    assert rebuilt.meta["heads_fingerprint"] == original.meta["heads_fingerprint"]
    np.testing.assert_array_equal(rebuilt.logits, logits)

    data = (path / "pooled.npy").read_bytes()
    (path / "pooled.npy").write_bytes(data[:-100])  # truncated
    with pytest.raises(CacheError):
        load_cache(path)
    clear_cache_memo()
    np.testing.assert_array_equal(get_cache(split="test", progress=False, **_opts(setup)).logits,
                                  logits)

    # New heads weights -> new heads fingerprint -> a different cache, never the old one.
    heads = ExitHeads.load(prepared.directory)
    with torch.no_grad():
        heads.heads[0][1].weight.mul_(-1.0)
    heads.save(prepared.directory)
    clear_cache_memo()
    changed = get_cache(split="test", progress=False, **_opts(setup))
    assert changed.meta["heads_fingerprint"] == heads.fingerprint() != original.meta[
        "heads_fingerprint"]
    assert not np.array_equal(changed.logits[:, 0], logits[:, 0])
    np.testing.assert_array_equal(changed.logits[:, 1:], logits[:, 1:])


def test_joint_recipe_saves_a_loadable_backbone(setup) -> None:
    opts = _opts(setup, heads="joint", epochs=1, finetune_samples=24, skip_prob=0.3,
                 train_batch_size=8, lr=1e-3)
    prepared = prepare(progress=False, verbose=False, splits=("validation",), **opts)
    assert prepared.backbone_weights is not None
    bb = load_prepared_backbone(**opts)
    base = load_backbone(setup["backbone"])
    cache = load_cache(prepared.cache_paths["validation"])
    assert cache.meta["backbone_fingerprint"] == bb.fingerprint() != base.fingerprint()
    history = json.loads((prepared.directory / "history.json").read_text())
    steps = history["finetune"]["history"]
    assert len(steps) == 3 and all(np.isfinite(h["loss"]) for h in steps)


def test_config_errors_and_cli(setup) -> None:
    with pytest.raises(ValueError, match=r"skip_prob needs a fine-tuned recipe \(heads in "
                                         r"\['joint', 'two-stage'\]\)"):
        PrepareConfig(heads="frozen", skip_prob=0.1)
    assert PrepareConfig(heads="finetune").heads == "joint"  # the recipe's former name
    with pytest.raises(ValueError, match="unknown heads mode"):
        PrepareConfig(heads="lora")
    with pytest.raises(TypeError, match="unknown prepare options"):
        prepare(taks="rt-polarity")
    with pytest.raises(ValueError, match="unknown split"):
        get_cache(split="dev")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prepare", "--task", setup["task"], "--backbone", setup["backbone"],
                              "--max-length", "16", "--batch-size", "16", "--splits", "test"])
    assert args.max_length == 16 and args.heads == "two-stage" and args.max_samples is None
    assert args.splits == ["test"] and args.func(args) == 0


@pytest.mark.parametrize("heads", ["two-stage", "frozen"])
def test_an_existing_cache_is_found_without_loading_the_backbone(setup, heads, monkeypatch,
                                                                 tmp_path) -> None:
    """The backbone's fingerprint comes from its files when a cache exists (every make and
    train used to load it, ~5 s for MiniLM), and equals the loaded model's; changed weight
    files are noticed (the backbone is then loaded again)."""
    import shutil

    import exitgym.backbones.registry as registry

    model = tmp_path / "model"
    shutil.copytree(setup["backbone"], model)
    opts = _opts({**setup, "backbone": str(model)}, heads=heads)
    prepare(progress=False, verbose=False, splits=("train", "test"), **opts)
    loaded = load_prepared_backbone(**opts).fingerprint()
    clear_cache_memo()  # a new process

    def no_loading(*args, **kwargs):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setattr(registry, "load_backbone", no_loading)
    for split in ("train", "test"):
        assert get_cache(split=split, progress=False, **opts).meta[
            "backbone_fingerprint"] == loaded
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    clear_cache_memo()
    with pytest.raises(AssertionError, match="the backbone was loaded"):
        get_cache(split="test", progress=False, **opts)
