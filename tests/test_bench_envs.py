"""``exitgym.bench.envs``: the env-throughput benchmark writes its JSON and markdown."""

from __future__ import annotations

import pytest


def test_benchmark_script_writes_json_and_markdown(tmp_path) -> None:
    """Tiny sizes: the keys, the CartPole reference ratio and the vector rate are checked."""
    import json

    from exitgym.bench import envs as module

    result = module.bench_envs(
        tmp_path, seconds=0.01, num_samples=50, hidden_size=8, vector_sizes=(1, 4), live=False
    )
    stored = json.loads((tmp_path / "bench_envs.json").read_text())
    assert stored["results"].keys() == result["results"].keys()
    assert set(result["results"]) == {
        "cartpole",
        "single_features",
        "single_hidden",
        "vector_1",
        "vector_4",
    }
    assert result["results"]["cartpole"]["ratio_to_cartpole"] == 1.0
    vector = result["results"]["vector_4"]
    assert vector["steps_per_s"] == pytest.approx(4 * vector["vector_steps_per_s"])
    table = (tmp_path / "bench_envs.md").read_text()
    assert "| CartPole-v1 (gym.make) |" in table and "EarlyExitVectorEnv N=4" in table
