// Unary elementwise kernels, their backward (grad * f'(x)), and clamp. The floating math is
// in kernels/cpu/unary_math.h; with AVX-512 the compute-bound f32 ops run its AVX-512
// compilation (kernels/cpu/unary_avx512.h, docs/design.md "CPU capabilities").
//
// Floating math runs through Eigen array maps over contiguous blocks, which gives vectorised
// exp, log, tanh, erf and sqrt on AVX2 (docs/design.md "Kernels": Eigen is the chosen library
// for transcendental math; we do not write SIMD polynomials by hand). Integer dtypes get the
// ops that make sense on them (neg, abs, relu, square, sign, logical_not) as plain loops;
// the floating-only ops are never registered for them (the front-end computes those in the
// default floating dtype).
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/elementwise_loops.h"
#include "kernels/cpu/unary_avx512.h"
#include "kernels/cpu/unary_math.h"

namespace loom::kernels::cpu {
namespace {

using ew::compute_t;
using ew::kBlock;

// Calls f(in, out, m) on pieces of at most kBlock elements in which every input is a
// contiguous array: a broadcast input (step 0) is expanded once into a small buffer, so the
// Eigen expressions below only ever see plain contiguous maps.
template <int K, class C, class OC, class F>
void on_contiguous(const C* const* in, const int64_t* step, OC* out, int64_t n, F&& f) {
  bool any_broadcast = false;
  for (int k = 0; k < K; ++k) any_broadcast = any_broadcast || step[k] == 0;
  if (!any_broadcast) {
    f(in, out, n);
    return;
  }
  alignas(64) C buf[K][kBlock];
  const C* p[K];
  for (int k = 0; k < K; ++k)
    if (step[k] == 0) {
      std::fill_n(buf[k], std::min(n, kBlock), in[k][0]);
      p[k] = buf[k];
    }
  for (int64_t s = 0; s < n; s += kBlock) {
    for (int k = 0; k < K; ++k)
      if (step[k] != 0) p[k] = in[k] + s;
    f(p, out + s, std::min(kBlock, n - s));
  }
}

template <class C>
void unary_integer(UnaryKind op, const C* x, C* y, int64_t n) {
  using U = std::make_unsigned_t<C>;  // wrap-around arithmetic without signed-overflow UB
  switch (op) {
    case UnaryKind::neg:
      for (int64_t i = 0; i < n; ++i) y[i] = C(U(0) - U(x[i]));
      return;
    case UnaryKind::abs:
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_signed_v<C>) y[i] = x[i] < 0 ? C(U(0) - U(x[i])) : x[i];
        else y[i] = x[i];
      }
      return;
    case UnaryKind::relu:
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_signed_v<C>) y[i] = x[i] < 0 ? C(0) : x[i];
        else y[i] = x[i];
      }
      return;
    case UnaryKind::square:
      for (int64_t i = 0; i < n; ++i) y[i] = C(U(x[i]) * U(x[i]));
      return;
    case UnaryKind::sign:
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_signed_v<C>) y[i] = C((x[i] > 0) - (x[i] < 0));
        else y[i] = C(x[i] > 0);
      }
      return;
    default: break;
  }
  LOOM_CHECK(false, "unary kernel: op ", int(op), " is not an integer op");
}

template <class T>
void unary_kernel(UnaryKind op, int64_t ndim, const int64_t* sizes, StridedArg out,
                  StridedArg x) {
  using C = compute_t<T>;
  if (op == UnaryKind::logical_not) {
    auto block = [](const C* const* in, const int64_t* step, bool* y, int64_t n) {
      for (int64_t i = 0; i < n; ++i) y[i] = in[0][i * step[0]] == C(0);
    };
    return ew::map_elements<1, T, bool>(ndim, sizes, out, &x, block);
  }
  if constexpr (std::is_same_v<T, bool>) {
    LOOM_CHECK(false, "unary kernel: bool tensors only support logical_not");
  } else {
    auto block = [op](const C* const* in, const int64_t* step, C* y, int64_t n) {
      on_contiguous<1>(in, step, y, n, [op](const C* const* p, C* o, int64_t m) {
        if constexpr (std::is_same_v<C, float>) {
          if (has_avx512_variant(op) && cpu_level() >= CpuLevel::avx512)
            return unary_f32_avx512(op, p[0], o, m);
        }
        if constexpr (std::is_floating_point_v<C>) unary_floating_blocks(op, p[0], o, m);
        else unary_integer(op, p[0], o, m);
      });
    };
    ew::map_elements<1, T, T>(ndim, sizes, out, &x, block);
  }
}

template <class T>
void unary_backward_kernel(UnaryKind op, int64_t ndim, const int64_t* sizes, StridedArg out,
                           StridedArg grad, StridedArg saved) {
  using C = compute_t<T>;
  auto block = [op](const C* const* in, const int64_t* step, C* y, int64_t n) {
    on_contiguous<2>(in, step, y, n, [op](const C* const* p, C* o, int64_t m) {
      if constexpr (std::is_same_v<C, float>) {
        if (has_avx512_backward_variant(op) && cpu_level() >= CpuLevel::avx512)
          return unary_backward_f32_avx512(op, p[0], p[1], o, m);
      }
      backward_floating_blocks(op, p[0], p[1], o, m);
    });
  };
  const StridedArg in[2] = {grad, saved};
  ew::map_elements<2, T, T>(ndim, sizes, out, in, block);
}

// A bound converted to C; integer bounds saturate at C's range (a u8 tensor clamped at -5
// must not see 251).
template <class C>
C bound_cast(double v) {
  if constexpr (std::is_floating_point_v<C>) {
    return C(v);
  } else {
    constexpr C lo = std::numeric_limits<C>::lowest(), hi = std::numeric_limits<C>::max();
    if (v <= double(lo)) return lo;
    if (v >= double(hi)) return hi;  // double(hi) rounds up for i64, so C(v) below is safe
    return C(v);
  }
}

template <class T>
void clamp_kernel(int64_t ndim, const int64_t* sizes, StridedArg out, StridedArg x, bool has_lo,
                  double lo, bool has_hi, double hi) {
  using C = compute_t<T>;
  const C l = bound_cast<C>(lo), h = bound_cast<C>(hi);
  // A NaN bound makes every result NaN, as in PyTorch.
  const bool nan_bound = (has_lo && std::isnan(lo)) || (has_hi && std::isnan(hi));
  auto block = [=](const C* const* in, const int64_t* step, C* y, int64_t n) {
    const C* v = in[0];
    const int64_t s = step[0];
    if constexpr (std::is_floating_point_v<C>) {
      if (nan_bound) {
        std::fill_n(y, n, std::numeric_limits<C>::quiet_NaN());
        return;
      }
    }
    // min(max(x, lo), hi): a NaN x fails both comparisons and stays NaN; lo > hi gives hi.
    if (has_lo && has_hi) {
      for (int64_t i = 0; i < n; ++i) {
        C a = v[i * s] < l ? l : v[i * s];
        y[i] = a > h ? h : a;
      }
    } else if (has_lo) {
      for (int64_t i = 0; i < n; ++i) y[i] = v[i * s] < l ? l : v[i * s];
    } else {
      for (int64_t i = 0; i < n; ++i) y[i] = v[i * s] > h ? h : v[i * s];
    }
  };
  ew::map_elements<1, T, T>(ndim, sizes, out, &x, block);
}

}  // namespace

const KernelTable<UnaryFn>& unary_kernels() {
  static const KernelTable<UnaryFn> table = [] {
    KernelTable<UnaryFn> t;
    ew::set_all_dtypes(t, [](auto z) -> UnaryFn { return &unary_kernel<decltype(z)>; });
    return t;
  }();
  return table;
}

const KernelTable<UnaryBackwardFn>& unary_backward_kernels() {
  static const KernelTable<UnaryBackwardFn> table = [] {
    KernelTable<UnaryBackwardFn> t;
    t.set(DeviceType::cpu, DType::f64, &unary_backward_kernel<double>);
    t.set(DeviceType::cpu, DType::f32, &unary_backward_kernel<float>);
    t.set(DeviceType::cpu, DType::f16, &unary_backward_kernel<Half>);
    t.set(DeviceType::cpu, DType::bf16, &unary_backward_kernel<BFloat16>);
    return t;
  }();
  return table;
}

const KernelTable<ClampFn>& clamp_kernels() {
  static const KernelTable<ClampFn> table = [] {
    KernelTable<ClampFn> t;
    t.set(DeviceType::cpu, DType::f64, &clamp_kernel<double>);
    t.set(DeviceType::cpu, DType::f32, &clamp_kernel<float>);
    t.set(DeviceType::cpu, DType::f16, &clamp_kernel<Half>);
    t.set(DeviceType::cpu, DType::bf16, &clamp_kernel<BFloat16>);
    t.set(DeviceType::cpu, DType::i64, &clamp_kernel<int64_t>);
    t.set(DeviceType::cpu, DType::i32, &clamp_kernel<int32_t>);
    t.set(DeviceType::cpu, DType::u8, &clamp_kernel<uint8_t>);
    return t;
  }();
  return table;
}

}  // namespace loom::kernels::cpu
