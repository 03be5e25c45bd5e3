#!/usr/bin/env bash
# Builds loom and runs the main job (the README's first command).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
cmake --preset ci >/dev/null
cmake --build --preset ci --target train_mlp
exec ./build/ci/examples/train_mlp "$@"
