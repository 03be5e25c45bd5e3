#!/usr/bin/env bash
# Builds loom and runs the main job (the README's first command): examples/train_gpt, a
# byte-level GPT trained on data/corpus/ in 2 CPU processes (ddp). Arguments go to train_gpt
# (e.g. `bash tools/main.sh --strategy fsdp`, `bash tools/main.sh --resume`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
cmake --preset ci >/dev/null
cmake --build --preset ci --target train_gpt
exec ./build/ci/examples/train_gpt "$@"
