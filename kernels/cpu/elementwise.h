// Elementwise CPU kernels: unary math and its backward, binary arithmetic and comparisons,
// the fused x + alpha * y, where (which masked_fill also uses), and clamp.
//
// Every kernel walks operands of one logical shape (the broadcast output's) given as raw
// pointers with strides in elements; a broadcast input has stride 0 on its broadcast dims, so
// nothing is ever materialised. Deliberately not here: broadcasting rules, dtype promotion,
// input conversion and allocation -- the front-end (tensor/native_elementwise.cpp) hands
// every kernel inputs already in the dtype the table was looked up with, so that a kernel
// is instantiated once per dtype rather than once per dtype pair.
//
// Fast paths, all inside the shared walk of kernels/cpu/elementwise_loops.h:
//  - contiguous operands of one shape, and a 0-dim (all strides 0) operand against
//    contiguous ones, collapse to a single run that is split across threads;
//  - a row broadcast, (M, N) op (N), becomes M runs of N contiguous elements against the
//    same N-element row, split across threads by rows;
//  - anything else is walked by for_each_strided, with a direct call on every run whose
//    operands are contiguous or broadcast, and gather/scatter through a small block buffer
//    otherwise.
// f16/bf16 are converted to f32 in blocks of kBlock elements (never whole tensors).
#pragma once

#include <cstdint>

#include "kernels/dispatch.h"
#include "core/dtype.h"

namespace loom::kernels::cpu {

// Mirrors loom::native::BinaryOp / UnaryOp (kernels never include tensor/native.h); the
// front-end checks that the orders agree with static_asserts.
enum class BinaryKind { add, sub, mul, div, pow, maximum, minimum, eq, ne, lt, le, gt, ge };
enum class UnaryKind {
  neg, exp, log, sqrt, rsqrt, abs, tanh, sigmoid, relu, gelu_tanh, gelu_erf, square, sign,
  logical_not
};

constexpr bool is_comparison(BinaryKind op) { return op >= BinaryKind::eq; }
// Ops that only make sense in floating point: integer inputs are computed in the default
// floating dtype by the front-end.
constexpr bool is_floating_only(UnaryKind op) {
  switch (op) {
    case UnaryKind::exp: case UnaryKind::log: case UnaryKind::sqrt: case UnaryKind::rsqrt:
    case UnaryKind::tanh: case UnaryKind::sigmoid: case UnaryKind::gelu_tanh:
    case UnaryKind::gelu_erf:
      return true;
    default:
      return false;
  }
}
// Which saved tensor unary_backward reads: x (the input) or out (the forward result). relu
// reads its output, as PyTorch's does: out > 0 exactly where x > 0 (-0 and NaN included), and
// autograd then keeps only the output alive, so a pre-activation is freed once relu has read it.
enum class BackwardInput { none, x, out };
constexpr BackwardInput backward_input(UnaryKind op) {
  switch (op) {
    case UnaryKind::exp: case UnaryKind::sqrt: case UnaryKind::rsqrt: case UnaryKind::tanh:
    case UnaryKind::sigmoid: case UnaryKind::relu:
      return BackwardInput::out;
    case UnaryKind::neg: case UnaryKind::sign: case UnaryKind::logical_not:
      return BackwardInput::none;
    default:
      return BackwardInput::x;
  }
}

// One operand: its first element and its strides (in elements, one per dim of the shape the
// kernel is called with; 0 on broadcast dims).
struct StridedArg {
  void* data;
  const int64_t* strides;
};

// out = op(a, b); a, b have the table's dtype T; out has T, or bool for comparisons. out may
// be a itself (in-place ops), never a partial overlap of it.
using BinaryFn = void (*)(BinaryKind op, int64_t ndim, const int64_t* sizes, StridedArg out,
                          StridedArg a, StridedArg b);
// out = op(x); out has x's dtype, or bool for logical_not. Floating-only ops are registered
// for floating dtypes only.
using UnaryFn = void (*)(UnaryKind op, int64_t ndim, const int64_t* sizes, StridedArg out,
                         StridedArg x);
// out = grad * op'(saved), saved being x or out as backward_input(op) says (ignored for
// `none`); floating dtypes only, all three operands in the table's dtype.
using UnaryBackwardFn = void (*)(UnaryKind op, int64_t ndim, const int64_t* sizes, StridedArg out,
                                 StridedArg grad, StridedArg saved);
// out = x + alpha * y, all in the table's dtype (alpha converted to it).
using AddScaledFn = void (*)(int64_t ndim, const int64_t* sizes, StridedArg out, StridedArg x,
                             StridedArg y, double alpha);
// out = cond ? a : b; cond is bool, a/b/out have the table's dtype (masked_fill passes its
// value as a 0-dim a).
using WhereFn = void (*)(int64_t ndim, const int64_t* sizes, StridedArg out, StridedArg cond,
                         StridedArg a, StridedArg b);
// out = min(max(x, lo), hi) with either bound optional; NaN stays NaN; lo > hi gives hi (as
// PyTorch). Bounds outside an integer dtype's range saturate instead of wrapping.
using ClampFn = void (*)(int64_t ndim, const int64_t* sizes, StridedArg out, StridedArg x,
                         bool has_lo, double lo, bool has_hi, double hi);

// Tables keyed by the dtype of the (converted) inputs.
const KernelTable<BinaryFn>& binary_kernels();
const KernelTable<UnaryFn>& unary_kernels();
const KernelTable<UnaryBackwardFn>& unary_backward_kernels();
const KernelTable<AddScaledFn>& add_scaled_kernels();
const KernelTable<WhereFn>& where_kernels();
const KernelTable<ClampFn>& clamp_kernels();

}  // namespace loom::kernels::cpu
