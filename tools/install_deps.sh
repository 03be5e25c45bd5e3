#!/usr/bin/env bash
# Installs the Debian packages loom builds on. Idempotent, and quiet when all is there.
set -euo pipefail
packages=(cmake ninja-build g++ ccache libopenblas-dev libeigen3-dev libgloo-dev libgtest-dev
          libgmock-dev libbenchmark-dev nlohmann-json3-dev libfmt-dev libcli11-dev libdnnl-dev
          clang libclang-rt-14-dev zlib1g-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install_deps: installing ${missing[*]}"
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
