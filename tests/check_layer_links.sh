#!/usr/bin/env bash
# A library of a lower layer must not need a symbol that only a higher layer defines
# (docs/design.md "Layers"): kernels/ sits on core/ and links nothing of tensor/. Arguments:
# the lower library's archive, then the higher one's. Fails naming each such symbol.
set -euo pipefail
lower=$1
upper=$2
undefined=$(nm -C --undefined-only "$lower" | awk 'NF >= 2 && $1 == "U" { $1 = ""; sub(/^ /, ""); print }' | sort -u)
defined=$(nm -C --defined-only "$upper" | awk 'NF >= 3 && $2 ~ /^[TWVBDR]$/ { $1 = ""; $2 = ""; sub(/^  /, ""); print }' | sort -u)
both=$(comm -12 <(echo "$undefined") <(echo "$defined"))
if [ -n "$both" ]; then
  echo "check_layer_links: $(basename "$lower") needs symbols that $(basename "$upper") defines:"
  echo "$both" | head -20
  exit 1
fi
echo "check_layer_links: $(basename "$lower") needs nothing of $(basename "$upper")"
