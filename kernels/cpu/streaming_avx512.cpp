// The f32 streaming kernels of streaming_avx512.h compiled for AVX-512 (flags in
// CMakeLists.txt). Everything here but the two entry points has internal linkage (an
// anonymous namespace, and a lambda of it as pairwise_sum's argument), so that this object
// defines no shared symbol the linker could pick for baseline code (tests/check_isa_objects.sh).
#include "kernels/cpu/streaming_avx512.h"

#include "kernels/cpu/reduce.h"

namespace loom::kernels::cpu {
namespace {

template <class Op>
void loops(const float* a, int64_t step_a, const float* b, int64_t step_b, float* out,
           int64_t n, Op op) {
  if (step_a && step_b) {
    for (int64_t i = 0; i < n; ++i) out[i] = op(a[i], b[i]);
  } else if (step_a) {
    const float bv = b[0];
    for (int64_t i = 0; i < n; ++i) out[i] = op(a[i], bv);
  } else if (step_b) {
    const float av = a[0];
    for (int64_t i = 0; i < n; ++i) out[i] = op(av, b[i]);
  } else {
    const float v = op(a[0], b[0]);
    for (int64_t i = 0; i < n; ++i) out[i] = v;
  }
}

float sum(const float* x, int64_t n) {
  return pairwise_sum<float>(n, [x](int64_t i) { return x[i]; });
}

}  // namespace

void binary_f32_avx512(BinaryKind op, const float* a, int64_t step_a, const float* b,
                       int64_t step_b, float* out, int64_t n) {
  switch (op) {
    case BinaryKind::add: return loops(a, step_a, b, step_b, out, n, [](float x, float y) { return x + y; });
    case BinaryKind::sub: return loops(a, step_a, b, step_b, out, n, [](float x, float y) { return x - y; });
    case BinaryKind::mul: return loops(a, step_a, b, step_b, out, n, [](float x, float y) { return x * y; });
    case BinaryKind::div: return loops(a, step_a, b, step_b, out, n, [](float x, float y) { return x / y; });
    default: __builtin_trap();  // the caller checks has_streaming_avx512_variant
  }
}

float sum_f32_avx512(const float* x, int64_t n) { return sum(x, n); }

}  // namespace loom::kernels::cpu
