#!/usr/bin/env bash
# The GPU figures of the docs in one command, on one CUDA GPU (a few minutes): focal loss forward +
# backward against BCE-with-logits, torchvision's formula (eager and torch.compile) and a clone of
# the logits, and map_at_k against torch.topk (benchmarks/bench_gpu.py). Writes
# docs/generated/bench_gpu.json with its provenance and renders docs/generated/bench_gpu.md,
# which docs/benchmarks.md includes. Extra arguments go to docs/scripts/build_figures.py.
#
#     bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
if ! "$python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    echo "benchmarks/gpu.sh: needs torch with a CUDA GPU; $python finds none" >&2
    exit 1
fi
exec "$python" docs/scripts/build_figures.py --only bench_gpu "$@"
