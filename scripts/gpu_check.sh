#!/usr/bin/env bash
# The GPU checks of issue 24 on a machine with CUDA and no network: the CUDA-marked tests, then
# the bench's gpu section. Meant to finish in under 8 minutes on one H100/H200-class GPU.
#
# Usage: scripts/gpu_check.sh [python] [out-dir]
#   python   an interpreter with exitgym's dependencies (default: python). Without network,
#            install them first from a wheelhouse: pip install --no-index --find-links WHEELS -e .
#   out-dir  where the bench writes bench.json / bench.md (default: gpu-bench)
# The embedded MiniLM-L6 and SmolLM2-135M and the rt-polarity data come with the repository or
# the exitgym cache; HF_HUB_OFFLINE=1 makes any attempt to download fail at once.
set -euo pipefail
PY="${1:-python}"
OUT="${2:-gpu-bench}"
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: nothing to check'; \
print('device:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', \
torch.version.cuda)"
status=0
timeout 180 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py || status=$?
timeout 270 "$PY" -m exitgym.bench --only gpu --out "$OUT" || status=$?
echo "gpu_check: exit status $status; bench in $OUT/bench.json and $OUT/bench.md"
# A measurement that failed is recorded as {"error": ...} in bench.json: list them.
"$PY" - "$OUT/bench.json" <<'PY' || status=$?
import json, sys
gpu = json.load(open(sys.argv[1]))["gpu"]
failed = {k: v["error"] for k, v in gpu.items() if isinstance(v, dict) and "error" in v}
print("gpu section:", "skipped: " + gpu["skipped"] if "skipped" in gpu else
      ("errors: %s" % failed if failed else "every measurement ran"))
sys.exit(1 if failed or "skipped" in gpu else 0)
PY
exit "$status"
