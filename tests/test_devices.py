"""Device plumbing on a machine without CUDA: resolution, refusals, and that ``device="cpu"``
changes nothing but what is recorded (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig

from exitgym.backbones.heads import ExitHeads, HeadsConfig
from exitgym.backbones.registry import BACKBONE_ALIASES, load_backbone
from exitgym.data.prepare import PrepareConfig, prepare, prepared_dir
from exitgym.data.tasks import load_task
from exitgym.experiments.training import train
from exitgym.inference import infer
from exitgym.utils.devices import device_record, resolve_device, resolve_dtype
from tests.test_infer import POLICY_FLOPS, WORDS, MaxProbPolicy
from tests.tiny_project import PREPARE_OPTIONS, make_tiny_project, train_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _cuda(monkeypatch: pytest.MonkeyPatch, available: bool, count: int = 1) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if available else 0)


def test_auto_is_cpu_without_cuda_and_cuda0_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda(monkeypatch, False)
    assert resolve_device() == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    _cuda(monkeypatch, True, count=2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"only 2 CUDA device\(s\).*cuda:0..cuda:1"):
        resolve_device("cuda:2")


def test_cuda_is_refused_clearly_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda(monkeypatch, False)
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(ValueError) as err:
            resolve_device(spec)
        message = str(err.value)
        assert f"device {spec!r} asked for" in message
        assert "use device 'cpu' or 'auto'" in message and "cuda:N" in message
    with pytest.raises(ValueError, match="unknown device 'gpu'; allowed: auto, cpu, cuda"):
        resolve_device("gpu")


def test_dtypes_and_the_record() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8", cpu)
    record = device_record(cpu)
    assert record["device"] == "cpu" and record["torch"] == torch.__version__
    assert set(record) == {"device", "name", "torch", "cuda"}


def test_configs_refuse_junk_devices() -> None:
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        PrepareConfig(device="gpu0")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        train_config({"task": "t.csv", "backbone": "b"}, device="tpu")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_tiny_project(tmp_path_factory.mktemp("devices") / "project")


def test_a_cpu_prepared_cache_has_the_default_key_and_records_where(
        project: dict[str, str]) -> None:
    options = {**project, **PREPARE_OPTIONS, "heads": "frozen"}
    default, on_cpu = PrepareConfig(**options), PrepareConfig(**options, device="cpu")
    assert default.key() == on_cpu.key()
    task = load_task(project["task"])
    assert prepared_dir(default, task) == prepared_dir(on_cpu, task)
    first = prepare(on_cpu, splits=("validation",), progress=False, verbose=False)
    again = prepare(default, splits=("validation",), progress=False, verbose=False)
    assert again.cache_paths == first.cache_paths and again.timings["heads"] < 5
    meta = json.loads((first.directory / "prepare_config.json").read_text())
    assert meta["prepared_on"]["device"] == "cpu"
    assert meta["prepared_on"]["torch"] == torch.__version__
    cache_meta = json.loads((first.cache_paths["validation"] / "meta.json").read_text())
    assert json.dumps(cache_meta).count('"prepared_on"') == 1
    assert "'device': 'cpu'" in str(cache_meta)


def test_a_run_records_the_device_it_trained_and_was_prepared_on(
        project: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(train_config(project, device="cpu"), out, progress=False, plots=False)
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["device"] == "cpu"
    assert config["trained_on"]["device"] == "cpu"
    assert {v["device"] for v in config["prepared_on"].values()} == {"cpu"}
    assert set(config["prepared_on"]) >= {"policy", "test"}


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(str(BACKBONE_ALIASES["minilm-l6"]()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    heads = ExitHeads(HeadsConfig(num_layers=4, hidden_size=32, num_labels=3)).eval()
    with torch.no_grad():
        for p in heads.parameters():
            p.mul_(8.0)
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 25)))) for _ in range(30)]
    return {"bb": load_backbone(config, tokenizer=tokenizer, pooling="mean", seed=0),
            "heads": heads, "texts": texts}


@pytest.mark.parametrize("batch_size", [1, 8])
def test_infer_on_the_cpu_equals_the_default(models: dict[str, Any], batch_size: int) -> None:
    kwargs = {"backbone": models["bb"], "heads": models["heads"], "batch_size": batch_size,
              "policy_flops": POLICY_FLOPS}
    default = infer(MaxProbPolicy(0.8), models["texts"], **kwargs)
    on_cpu = infer(MaxProbPolicy(0.8), models["texts"], device="cpu", **kwargs)
    assert len(set(default.exit_layers.tolist())) >= 2  # decisions vary: a real comparison
    np.testing.assert_array_equal(on_cpu.exit_layers, default.exit_layers)
    np.testing.assert_array_equal(on_cpu.predictions, default.predictions)
    np.testing.assert_array_equal(on_cpu.cost, default.cost)
    assert models["bb"].device == torch.device("cpu")
    if not torch.cuda.is_available():  # this machine: CUDA is refused before anything runs
        with pytest.raises(ValueError, match="device 'cuda' asked for"):
            infer(MaxProbPolicy(0.8), models["texts"], device="cuda", **kwargs)


def test_the_bench_gpu_section_says_it_was_skipped_without_cuda(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from exitgym.bench import SECTIONS, selected
    from exitgym.bench.gpu import gpu_markdown

    _cuda(monkeypatch, False)
    assert list(SECTIONS)[-1] == "gpu" and selected(("gpu",)) == ("machine", "gpu")
    entry = SECTIONS["gpu"](None, {})  # type: ignore[arg-type]
    assert entry == {"skipped": "no CUDA device"}
    text = "\n".join(gpu_markdown({"gpu": entry}))
    assert "## GPU" in text and "Skipped: no CUDA device" in text
