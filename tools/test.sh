#!/usr/bin/env bash
# Builds loom and runs every test (the README's second command; CI runs exactly this):
# first the release build with warnings as errors, then the ASan + UBSan build.
# LOOM_PRESETS="ci" skips the sanitizer pass (it roughly triples the build time).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
for preset in ${LOOM_PRESETS:-ci asan}; do
  echo "== loom: build and test, preset '$preset'"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset"
  ctest --preset "$preset" -j "$(nproc)"
done
