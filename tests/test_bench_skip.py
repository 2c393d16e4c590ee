"""``exitgym.bench.skip``: the skip benchmark's outputs and the fixed skip patterns' accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exitgym.envs.skip_core import SkipWorld
from tests.test_skip_live import tiny_world


@pytest.fixture(scope="module")
def world() -> SkipWorld:
    return tiny_world()


def test_benchmark_writes_json_and_markdown_and_pattern_accuracy(world, tmp_path) -> None:
    import json

    from exitgym.bench.skip import pattern_accuracy, pattern_actions, run_benchmark

    result = run_benchmark(world=world, batch_sizes=(2,), rounds=1, out=tmp_path)
    saved = json.loads((tmp_path / "bench_skip.json").read_text())
    assert saved["rows"][0]["batch"] == 2 and saved == json.loads(json.dumps(result))
    assert saved["rows"][0]["skip_block_median_sps"] > 0
    assert "| 2 |" in (tmp_path / "bench_skip.md").read_text()
    # Layer indices are 0-based: "odd" skips the attention of layers 3, 5, ... (1-based).
    np.testing.assert_array_equal(pattern_actions({"attention": "odd", "ffn": [-1], "token": 6},
                                                  1, 4)[0], [0, 1, 0, 0, 0, 1, 6])
    rows = pattern_accuracy(world, {"full": {}, "all attention": {"attention": "all"}}, batch=4)
    ex = world.executor
    with torch.inference_mode():
        correct = [int(ex.heads.head(3, ex.backbone.forward_pooled(ex.bank.batch(
            np.array([s])))[-1]).argmax()) == world.labels[s] for s in range(world.num_samples)]
    assert rows[0]["accuracy"] == pytest.approx(np.mean(correct))
    assert rows[0]["mean_cost"] == pytest.approx(1.0)
    assert rows[1]["mean_cost"] < 1.0
