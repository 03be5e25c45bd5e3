#!/usr/bin/env bash
# Builds loom and runs every test (the README's second command; CI runs exactly this):
#   1. a program of a user's own (examples/use_loom) builds loom with add_subdirectory and plain
#      default options, on a machine that may have nvcc, links and trains;
#   2. the release build with warnings as errors, and every test;
#   3. the ASan + UBSan build, and every test;
#   4. the checkpoint fuzzers, each for a bounded time (tools/fuzz.sh).
# LOOM_PRESETS="ci" skips the sanitizer pass (it roughly triples the build time);
# LOOM_SKIP_CONSUMER=1 and LOOM_FUZZ_SECONDS=0 skip steps 1 and 4.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh

if [ "${LOOM_SKIP_CONSUMER:-0}" != 1 ]; then
  echo "== loom: a user's project with add_subdirectory(loom) and default options"
  cmake -S examples/use_loom -B build/use_loom >/dev/null
  cmake --build build/use_loom -j "$(nproc)"
  ./build/use_loom/use_loom
fi

for preset in ${LOOM_PRESETS:-ci asan}; do
  echo "== loom: build and test, preset '$preset'"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  ctest --preset "$preset" -j "$(nproc)"
done

# The checkpoint fuzzers under ASan + UBSan (tools/fuzz.sh), each for a bounded time.
if [ "${LOOM_FUZZ_SECONDS:-30}" != 0 ]; then
  echo "== loom: fuzz, ${LOOM_FUZZ_SECONDS:-30} s per target"
  bash tools/fuzz.sh "${LOOM_FUZZ_SECONDS:-30}"
fi
