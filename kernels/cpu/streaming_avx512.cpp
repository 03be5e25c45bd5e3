// The f32 streaming kernels of streaming_avx512.h compiled for AVX-512 (flags in
// CMakeLists.txt). Everything here but the two entry points has internal linkage (an
// anonymous namespace, and local lambdas as the templates' arguments), so that this object
// defines no shared symbol the linker could pick for baseline code (tests/check_isa_objects.sh).
#include "kernels/cpu/streaming_avx512.h"

#include "kernels/cpu/binary_loops.h"
#include "kernels/cpu/reduce.h"

namespace loom::kernels::cpu {
namespace {

float sum(const float* x, int64_t n) {
  return pairwise_sum<float>(n, [x](int64_t i) { return x[i]; });
}

}  // namespace

void binary_f32_avx512(BinaryKind op, const float* a, int64_t step_a, const float* b,
                       int64_t step_b, float* out, int64_t n) {
  const bool sa = step_a != 0, sb = step_b != 0;
  switch (op) {
    case BinaryKind::add: return binary_loops(a, sa, b, sb, out, n, [](float x, float y) { return x + y; });
    case BinaryKind::sub: return binary_loops(a, sa, b, sb, out, n, [](float x, float y) { return x - y; });
    case BinaryKind::mul: return binary_loops(a, sa, b, sb, out, n, [](float x, float y) { return x * y; });
    case BinaryKind::div: return binary_loops(a, sa, b, sb, out, n, [](float x, float y) { return x / y; });
    default: __builtin_trap();  // the caller checks has_streaming_avx512_variant
  }
}

float sum_f32_avx512(const float* x, int64_t n) { return sum(x, n); }

}  // namespace loom::kernels::cpu
