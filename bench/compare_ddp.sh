#!/usr/bin/env bash
# DDP step overhead and set-up cost, loom vs PyTorch, on the same machine in one run.
#
# Runs bench_ddp (loom, Fabric "ddp") and ddp_step_torch.py (PyTorch DDP, Gloo) alternately,
# `passes` times each, so drift on a shared machine hits both; both use 2 ranks x 1 thread,
# batch 128 per rank, the same models, and report ddp and nosync medians per step.
#
#   bench/compare_ddp.sh [build-dir (build/ci)] [passes (2)] [extra args for both, e.g. --rounds 12]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-build/ci}"
passes="${2:-2}"
shift $(( $# > 2 ? 2 : $# ))
loom_bin="$build/bench/bench_ddp"
[[ -x "$loom_bin" ]] || { echo "missing $loom_bin: cmake --build $build --target bench_ddp" >&2; exit 1; }
python=/usr/bin/python3
"$python" -c "import torch" 2>/dev/null || { echo "PyTorch missing: apt-get install -y python3-torch" >&2; exit 1; }
for ((i = 1; i <= passes; ++i)); do
  echo "== pass $i/$passes: loom"
  "$loom_bin" "$@"
  echo "== pass $i/$passes: pytorch"
  "$python" "$here/ddp_step_torch.py" "$@"
done
