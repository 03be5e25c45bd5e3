#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang, AddressSanitizer and UndefinedBehaviorSanitizer
# in build/fuzz (loom's libraries included, instrumented), then runs each target for a bounded
# time from the committed seed corpus (fuzz/corpus/<target>). Fails on any crash, sanitizer
# report, oracle failure, leak or timeout; the input that caused it is written to
# build/fuzz/artifacts/<target>/ (replay: build/fuzz/fuzz_<target> <file>).
#
#   bash tools/fuzz.sh [seconds per target, default 60]
#
# New interesting inputs go to build/fuzz/corpus/<target> (not committed). Targets run side by
# side when the machine has two or more cores.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: clang++ not found; install clang and libclang-rt-14-dev" >&2
  exit 1
fi

start=$(date +%s)
cmake -S fuzz -B build/fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build build/fuzz --target fuzz_safetensors fuzz_checkpoint
built=$(date +%s)
echo "== fuzz: built in $((built - start)) s; running each target for ${seconds} s"

export LOOM_NUM_THREADS=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run() {
  local target=$1
  mkdir -p "build/fuzz/corpus/$target" "build/fuzz/artifacts/$target"
  "build/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 \
    -dict=fuzz/checkpoint.dict -print_final_stats=1 \
    -artifact_prefix="build/fuzz/artifacts/$target/" \
    "build/fuzz/corpus/$target" "fuzz/corpus/$target" >"build/fuzz/$target.log" 2>&1
}
pids=()
status=0
for target in safetensors checkpoint; do
  if [ "$(nproc)" -ge 2 ]; then
    run "$target" & pids+=($!)
  else
    run "$target" || status=1
  fi
done
for i in "${!pids[@]}"; do wait "${pids[$i]}" || status=1; done
for target in safetensors checkpoint; do
  echo "== fuzz_$target: $(grep -E '^stat::number_of_executed_units' "build/fuzz/$target.log" | awk '{print $2}') runs"
  grep -E "ERROR|ORACLE FAILED|Test unit written|SUMMARY" "build/fuzz/$target.log" || true
done
echo "== fuzz: done in $(( $(date +%s) - start )) s"
if [ "$status" -ne 0 ]; then
  echo "fuzz.sh: a target failed; see build/fuzz/<target>.log and build/fuzz/artifacts/" >&2
  exit 1
fi
