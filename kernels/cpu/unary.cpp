// Unary elementwise kernels, their backward (grad * f'(x)), and clamp.
//
// Floating math runs through Eigen array maps over contiguous blocks, which gives vectorised
// exp, log, tanh, erf and sqrt on AVX2 (docs/design.md "Kernels": Eigen is the chosen library
// for transcendental math; we do not write SIMD polynomials by hand). Integer dtypes get the
// ops that make sense on them (neg, abs, relu, square, sign, logical_not) as plain loops;
// the floating-only ops are never registered for them (the front-end computes those in the
// default floating dtype).
#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/elementwise_loops.h"

namespace loom::kernels::cpu {
namespace {

using ew::compute_t;
using ew::kBlock;

// gelu_tanh constants: sqrt(2 / pi) and the cubic coefficient of Hendrycks & Gimpel (2016).
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluCubic = 0.044715;
constexpr double kSqrtHalf = 0.70710678118654752440;       // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;     // 1 / sqrt(2 pi)

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
using Array = Eigen::Array<C, Eigen::Dynamic, 1>;

// y = op(x) over n contiguous floating values.
template <class C>
void unary_floating(UnaryKind op, const C* xp, C* yp, int64_t n) {
  Eigen::Map<const Array<C>> x(xp, n);
  Eigen::Map<Array<C>> y(yp, n);
  switch (op) {
    case UnaryKind::neg:
      // A plain loop: Eigen's packet negation is 0 - x, which turns -(+0) into +0.
      for (int64_t i = 0; i < n; ++i) yp[i] = -xp[i];
      return;
    case UnaryKind::exp: y = x.exp(); return;
    case UnaryKind::log: y = x.log(); return;
    case UnaryKind::sqrt: y = x.sqrt(); return;
    // 1 / sqrt rather than Eigen's rsqrt, whose fast approximation is a few ulp off.
    case UnaryKind::rsqrt: y = x.sqrt().inverse(); return;
    case UnaryKind::abs: y = x.abs(); return;
    case UnaryKind::tanh: y = x.tanh(); return;
    case UnaryKind::sigmoid: y = (C(1) + (-x).exp()).inverse(); return;
    case UnaryKind::square: y = x.square(); return;
    case UnaryKind::relu:
      // NaN stays NaN (as torch.relu): NaN < 0 is false.
      for (int64_t i = 0; i < n; ++i) yp[i] = xp[i] < C(0) ? C(0) : xp[i];
      return;
    case UnaryKind::sign:
      // NaN and -0 give 0, as PyTorch's vectorised CPU kernel.
      for (int64_t i = 0; i < n; ++i) yp[i] = C(xp[i] > C(0)) - C(xp[i] < C(0));
      return;
    case UnaryKind::gelu_tanh:
      y = C(0.5) * x *
          (C(1) + (C(kSqrt2OverPi) * (x + C(kGeluCubic) * x.cube())).tanh());
      return;
    case UnaryKind::gelu_erf: y = C(0.5) * x * (C(1) + (x * C(kSqrtHalf)).erf()); return;
    case UnaryKind::logical_not: break;
  }
  LOOM_CHECK(false, "unary_floating: logical_not has its own kernel");
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
        if constexpr (std::is_floating_point_v<C>) unary_floating(op, p[0], o, m);
        else unary_integer(op, p[0], o, m);
      });
    };
    ew::map_elements<1, T, T>(ndim, sizes, out, &x, block);
  }
}

// y = g * op'(s) over n contiguous values; s is x or out as backward_input(op) says.
template <class C>
void backward_floating(UnaryKind op, const C* gp, const C* sp, C* yp, int64_t n) {
  Eigen::Map<const Array<C>> g(gp, n), s(sp, n);
  Eigen::Map<Array<C>> y(yp, n);
  switch (op) {
    case UnaryKind::neg:
      for (int64_t i = 0; i < n; ++i) yp[i] = -gp[i];  // not Eigen's 0 - g (see unary_floating)
      return;
    case UnaryKind::exp: y = g * s; return;                            // d e^x = e^x
    case UnaryKind::log: y = g / s; return;                            // d log x = 1/x
    case UnaryKind::sqrt: y = g / (C(2) * s); return;                  // 1 / (2 sqrt x)
    case UnaryKind::rsqrt: y = C(-0.5) * g * s.cube(); return;         // -x^(-3/2) / 2
    case UnaryKind::tanh: y = g * (C(1) - s.square()); return;         // 1 - tanh^2
    case UnaryKind::sigmoid: y = g * s * (C(1) - s); return;           // s (1 - s)
    case UnaryKind::square: y = C(2) * g * s; return;
    case UnaryKind::sign: y.setZero(); return;
    case UnaryKind::abs:
      for (int64_t i = 0; i < n; ++i)
        yp[i] = gp[i] * (C(sp[i] > C(0)) - C(sp[i] < C(0)));
      return;
    case UnaryKind::relu:  // the gradient at 0 is 0, as PyTorch (x > 0, not x >= 0)
      for (int64_t i = 0; i < n; ++i) yp[i] = sp[i] > C(0) ? gp[i] : C(0);
      return;
    case UnaryKind::gelu_tanh:
      // gelu(x) = x/2 (1 + t), t = tanh(u), u = k (x + c x^3):
      // gelu'(x) = (1 + t)/2 + x/2 (1 - t^2) k (1 + 3 c x^2). t goes through y first so the
      // expression needs no heap temporary.
      y = (C(kSqrt2OverPi) * (s + C(kGeluCubic) * s.cube())).tanh();
      y = g * (C(0.5) * (C(1) + y) + C(0.5) * s * (C(1) - y.square()) * C(kSqrt2OverPi) *
                                         (C(1) + C(3 * kGeluCubic) * s.square()));
      return;
    case UnaryKind::gelu_erf:
      // gelu(x) = x Phi(x): gelu'(x) = Phi(x) + x phi(x), phi the standard normal density.
      y = g * (C(0.5) * (C(1) + (s * C(kSqrtHalf)).erf()) +
               s * (C(-0.5) * s.square()).exp() * C(kInvSqrt2Pi));
      return;
    case UnaryKind::logical_not: break;
  }
  LOOM_CHECK(false, "unary_backward: logical_not is not differentiable");
}

template <class T>
void unary_backward_kernel(UnaryKind op, int64_t ndim, const int64_t* sizes, StridedArg out,
                           StridedArg grad, StridedArg saved) {
  using C = compute_t<T>;
  auto block = [op](const C* const* in, const int64_t* step, C* y, int64_t n) {
    on_contiguous<2>(in, step, y, n, [op](const C* const* p, C* o, int64_t m) {
      backward_floating(op, p[0], p[1], o, m);
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
