#!/usr/bin/env bash
# Builds loom and runs every test (the README's second command; CI runs exactly this):
#   1. a program of a user's own (examples/use_loom) builds loom with add_subdirectory and plain
#      default options, on a machine that may have nvcc, links and trains;
#   2. the release build with warnings as errors, and every test;
#   3. the ASan + UBSan build, and every test;
#   4. the same program against an installed loom: `cmake --install` of the first preset's build
#      (no second build of loom) into build/install-prefix, then find_package(loom), 2 ranks
#      under the installed loomrun;
#   5. the checkpoint fuzzers, each for a bounded time (tools/fuzz.sh).
# LOOM_PRESETS="ci" skips the sanitizer pass (it roughly triples the build time);
# LOOM_SKIP_CONSUMER=1 skips steps 1 and 4, LOOM_FUZZ_SECONDS=0 step 5.
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

if [ "${LOOM_SKIP_CONSUMER:-0}" != 1 ]; then
  presets=(${LOOM_PRESETS:-ci asan})
  prefix="$PWD/build/install-prefix"
  echo "== loom: a user's project with find_package(loom) against cmake --install of build/${presets[0]}"
  rm -rf "$prefix" build/use_loom_installed
  cmake --install "build/${presets[0]}" --prefix "$prefix" >/dev/null
  cmake -S examples/use_loom -B build/use_loom_installed -DUSE_LOOM_INSTALLED=ON \
        -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
  cmake --build build/use_loom_installed -j "$(nproc)"
  timeout 120 "$prefix/bin/loomrun" --nproc-per-node 2 ./build/use_loom_installed/use_loom 2
fi

# The checkpoint fuzzers under ASan + UBSan (tools/fuzz.sh), each for a bounded time.
if [ "${LOOM_FUZZ_SECONDS:-30}" != 0 ]; then
  echo "== loom: fuzz, ${LOOM_FUZZ_SECONDS:-30} s per target"
  bash tools/fuzz.sh "${LOOM_FUZZ_SECONDS:-30}"
fi
