"""Checks that need a CUDA device (issue 24): skipped without one, run by scripts/gpu_check.sh.

Written without a GPU at hand (none was lent to this project's sessions): they have not run yet.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from exitgym.backbones.cache import load_cache
from exitgym.data.prepare import PrepareConfig, prepare
from exitgym.inference import ExitInference
from tests.test_infer import POLICY_FLOPS, MaxProbPolicy, env_decisions, setup  # noqa: F401
from tests.tiny_project import PREPARE_OPTIONS, make_tiny_project

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("batch_size", [1, 7])
def test_infer_on_cuda_takes_the_cached_envs_decisions(setup: dict[str, Any],  # noqa: F811
                                                       batch_size: int) -> None:
    """The layer-by-layer reference (the cache, computed on the CPU) and CUDA inference agree."""
    policy = MaxProbPolicy(0.8)
    layers, preds, costs = env_decisions(setup, policy)
    engine = ExitInference(policy, setup["bb"], setup["heads"], policy_flops=POLICY_FLOPS,
                           device="cuda")
    try:
        out = engine(setup["texts"], batch_size=batch_size)
    finally:
        setup["bb"].model.cpu()
        setup["heads"].cpu()
    # float32 kernels differ from the CPU's in the last bits: a threshold may flip on a tie
    assert np.mean(out.exit_layers == layers) >= 0.95
    same = out.exit_layers == layers
    np.testing.assert_array_equal(out.predictions[same], preds[same])
    np.testing.assert_allclose(out.cost[same], costs[same], rtol=1e-12)


def test_a_cache_prepared_on_cuda_reads_like_the_cpu_one(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Same directory and cache key on both devices; pooled states equal within float noise."""
    project = make_tiny_project(tmp_path_factory.mktemp("cuda") / "project")
    options = {**project, **PREPARE_OPTIONS, "heads": "frozen"}
    on_cpu = prepare(PrepareConfig(**options, device="cpu"), splits=("validation",),
                     progress=False, verbose=False)
    on_cuda = prepare(PrepareConfig(**options, device="cuda"), splits=("validation",),
                      progress=False, verbose=False, force=True)
    assert on_cuda.directory == on_cpu.directory
    meta = json.loads((on_cuda.directory / "prepare_config.json").read_text())
    assert meta["prepared_on"]["device"].startswith("cuda")
    assert meta["prepared_on"]["cuda"] == torch.version.cuda
    cache = load_cache(on_cuda.cache_paths["validation"])
    assert cache.meta["prepared_on"]["device"].startswith("cuda")
    assert cache.pooled.dtype == np.float32  # read anywhere: plain float32 arrays
