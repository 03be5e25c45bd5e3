#!/usr/bin/env bash
# Runs bench_mlp_step (loom) and mlp_step_torch.py (PyTorch, with and without
# OMP_WAIT_POLICY=PASSIVE) back to back on 1 and 2 threads, and prints the step times side by
# side with loom/PyTorch ratios (below 1: loom is faster).
#
#   bench/compare_mlp_step.sh [build dir, default build/ci]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build/ci}"
bin="$build/bench/bench_mlp_step"
[[ -x "$bin" ]] || { echo "missing $bin: cmake --build $build --target bench_mlp_step" >&2; exit 1; }
py=/usr/bin/python3
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== loom: $bin"
"$bin" --benchmark_min_time=3 | tee "$tmp/loom.txt"
echo "== PyTorch (OMP_WAIT_POLICY unset)"
"$py" "$here/mlp_step_torch.py" | tee "$tmp/torch.txt"
echo "== PyTorch (OMP_WAIT_POLICY=PASSIVE)"
OMP_WAIT_POLICY=PASSIVE "$py" "$here/mlp_step_torch.py" | tee "$tmp/torch_passive.txt"

# Table rows: "threads gflops floor step ratio"; loom's follow the header line "threads".
rows() { awk '$1 == "threads" { on = 1; next } on && $1 ~ /^[0-9]+$/ { print $1, $4 }' "$1"; }
echo
printf '%-8s %12s %14s %14s %12s %12s\n' threads "loom ms" "torch ms" "torch PASSIVE" "loom/torch" "loom/PASSIVE"
join <(rows "$tmp/loom.txt") <(rows "$tmp/torch.txt") | join - <(rows "$tmp/torch_passive.txt") |
  awk '{ printf "%-8s %12.2f %14.2f %14.2f %12.3f %12.3f\n", $1, $2, $3, $4, $2 / $3, $2 / $4 }'
