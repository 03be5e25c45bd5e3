// The floating math of the unary kernels (kernels/cpu/unary.cpp) over contiguous blocks, in
// Eigen array expressions. Included by unary.cpp (the build's baseline ISA) and by
// unary_avx512.cpp (compiled for AVX-512, whose entry points are flattened so that no Eigen
// function compiled for AVX-512 is left out of line for the linker to share with the baseline
// code; CTest's kernels.avx512_objects_export_nothing_shared checks that). Everything here is
// in an anonymous namespace: each including file has its own copy.
#pragma once

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>
#include <cstdint>

#include "kernels/cpu/eigen_blocks.h"
#include "kernels/cpu/elementwise.h"
#include "core/error.h"

namespace loom::kernels::cpu {
namespace {

// gelu_tanh constants: sqrt(2 / pi) and the cubic coefficient of Hendrycks & Gimpel (2016).
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluCubic = 0.044715;
constexpr double kSqrtHalf = 0.70710678118654752440;       // 1 / sqrt(2)
constexpr double kInvSqrt2Pi = 0.39894228040143267794;     // 1 / sqrt(2 pi)

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
    case UnaryKind::relu:  // s = out; the gradient at 0 is 0, as PyTorch (out > 0, not >= 0)
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

// Ops whose Eigen packet and scalar paths differ (kernels/cpu/eigen_blocks.h).
constexpr bool is_transcendental(UnaryKind op) {
  return op == UnaryKind::exp || op == UnaryKind::log || op == UnaryKind::tanh ||
         op == UnaryKind::sigmoid || op == UnaryKind::gelu_tanh || op == UnaryKind::gelu_erf;
}

// unary_floating with every value on Eigen's packet path: the same bits wherever the block of
// a value starts, so at every thread count.
template <class C>
void unary_floating_blocks(UnaryKind op, const C* xp, C* yp, int64_t n) {
  if (!is_transcendental(op)) return unary_floating(op, xp, yp, n);
  const C* in[1] = {xp};
  on_packet_path<1>(in, yp, n, C(0), [op](const C* const* p, C* o, int64_t m) {
    unary_floating(op, p[0], o, m);
  });
}

template <class C>
void backward_floating_blocks(UnaryKind op, const C* gp, const C* sp, C* yp, int64_t n) {
  if (op != UnaryKind::gelu_tanh && op != UnaryKind::gelu_erf)
    return backward_floating(op, gp, sp, yp, n);
  const C* in[2] = {gp, sp};
  on_packet_path<2>(in, yp, n, C(0), [op](const C* const* p, C* o, int64_t m) {
    backward_floating(op, p[0], p[1], o, m);
  });
}

}  // namespace
}  // namespace loom::kernels::cpu
