#!/usr/bin/env bash
# The objects compiled for one instruction set (kernels/cpu/*_avx512.cpp, *_avx2.cpp) must
# define no weak or otherwise shared symbol: the linker keeps one copy of each such symbol, and
# an AVX-512 copy of, say, an Eigen function picked for the baseline code would crash a CPU
# without AVX-512 (docs/design.md "CPU capabilities"). Arguments: the objects of loom_kernels.
set -euo pipefail
checked=0
status=0
for obj in "$@"; do
  case "$obj" in
    *_avx512.cpp.o | *_avx2.cpp.o) ;;
    *) continue ;;
  esac
  checked=$((checked + 1))
  # Defined symbols of type W/V (weak) or u (unique global), but the exception-personality
  # reference every C++ object with unwinding carries.
  shared=$(nm "$obj" | awk 'NF == 3 && $2 ~ /^[WVu]$/ && $3 !~ /^DW\.ref\./ { print $3 }')
  if [ -n "$shared" ]; then
    echo "check_isa_objects: $obj defines shared symbols:"
    echo "$shared" | c++filt | head -20
    status=1
  fi
done
if [ "$checked" -eq 0 ]; then
  echo "check_isa_objects: no *_avx512 / *_avx2 object among the arguments"
  exit 1
fi
[ "$status" -eq 0 ] && echo "check_isa_objects: $checked per-ISA objects define no shared symbol"
exit "$status"
