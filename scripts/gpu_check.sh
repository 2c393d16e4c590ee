#!/usr/bin/env bash
# The GPU checks of issue 24, on a machine with CUDA, torch and transformers (no network needed):
# the CUDA-marked tests, then the bench's gpu section. Meant to finish in under 8 minutes on one
# H100/H200-class GPU. Usage: scripts/gpu_check.sh [python] (default: python).
set -euo pipefail
PY="${1:-python}"
cd "$(dirname "$0")/.."
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: nothing to check'"
timeout 300 "$PY" -m pytest -q -m cuda tests/test_cuda.py
timeout 180 "$PY" -m exitgym.bench --only gpu --out gpu-bench
echo "gpu_check: tests passed; bench written to gpu-bench/bench.json and gpu-bench/bench.md"
