#!/usr/bin/env bash
# Builds loom and runs every test (the README's second command; CI runs exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${LOOM_PRESET:-ci}
bash tools/install_deps.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset" -j "$(nproc)"
