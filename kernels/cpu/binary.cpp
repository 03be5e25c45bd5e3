// Binary elementwise kernels: arithmetic, pow, maximum/minimum, comparisons, the fused
// x + alpha * y, and where. Registered for every dtype where the op means something; the
// front-end rejects the rest (e.g. sub on bool) before looking a kernel up.
//
// The arithmetic is written as scalar functors over plain loops that g++ -O3 -mavx2
// vectorises (add/sub/mul/div/maximum/minimum and the comparisons); pow goes through
// std::pow except for the common constant exponents, which PyTorch special-cases too.
#include <cmath>
#include <type_traits>

#include "kernels/cpu/binary_loops.h"
#include "kernels/cpu/capability.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/elementwise_loops.h"
#include "kernels/cpu/streaming_avx512.h"

namespace loom::kernels::cpu {
namespace {

using ew::compute_t;

// Integer arithmetic wraps modulo 2^bits, as PyTorch's does; going through the unsigned
// type avoids signed-overflow UB.
template <class C>
using wrap_t = std::make_unsigned_t<std::conditional_t<std::is_same_v<C, bool>, uint8_t, C>>;

template <class C>
constexpr bool is_int_v = std::is_integral_v<C> && !std::is_same_v<C, bool>;

struct Add {
  static constexpr BinaryKind kind = BinaryKind::add;
  template <class C>
  static C f(C a, C b) {
    if constexpr (std::is_same_v<C, bool>) return a || b;
    else if constexpr (is_int_v<C>) return C(wrap_t<C>(a) + wrap_t<C>(b));
    else return a + b;
  }
};
struct Sub {
  static constexpr BinaryKind kind = BinaryKind::sub;
  template <class C>
  static C f(C a, C b) {
    if constexpr (is_int_v<C>) return C(wrap_t<C>(a) - wrap_t<C>(b));
    else return a - b;
  }
};
struct Mul {
  static constexpr BinaryKind kind = BinaryKind::mul;
  template <class C>
  static C f(C a, C b) {
    if constexpr (std::is_same_v<C, bool>) return a && b;
    else if constexpr (is_int_v<C>) return C(wrap_t<C>(a) * wrap_t<C>(b));
    else return a * b;
  }
};
struct Div {
  static constexpr BinaryKind kind = BinaryKind::div;
  template <class C>
  static C f(C a, C b) { return a / b; }
};
// Integer power by squaring. Negative exponents follow PyTorch: 1 for base 1, +-1 for base
// -1, else 0 (the truncation of the true result).
template <class C>
C int_pow(C base, C exp) {
  if constexpr (std::is_signed_v<C>) {
    if (exp < 0) {
      if (base == 1) return 1;
      if (base == -1) return (exp % 2 == 0) ? 1 : -1;
      return 0;
    }
  }
  wrap_t<C> result = 1, b = wrap_t<C>(base);
  for (auto e = wrap_t<C>(exp); e; e >>= 1) {
    if (e & 1) result = wrap_t<C>(result * b);
    b = wrap_t<C>(b * b);
  }
  return C(result);
}
struct Pow {
  template <class C>
  static C f(C a, C b) {
    if constexpr (is_int_v<C>) return int_pow(a, b);
    else return std::pow(a, b);  // exact for negative bases with integer exponents
  }
};
// NaN-propagating, as torch.maximum/minimum: the comparison is false for a NaN `a`, so test
// it explicitly; a NaN `b` falls through to b.
struct Maximum {
  template <class C>
  static C f(C a, C b) { return (a > b || a != a) ? a : b; }
};
struct Minimum {
  template <class C>
  static C f(C a, C b) { return (a < b || a != a) ? a : b; }
};
struct Eq { template <class C> static bool f(C a, C b) { return a == b; } };
struct Ne { template <class C> static bool f(C a, C b) { return a != b; } };
struct Lt { template <class C> static bool f(C a, C b) { return a < b; } };
struct Le { template <class C> static bool f(C a, C b) { return a <= b; } };
struct Gt { template <class C> static bool f(C a, C b) { return a > b; } };
struct Ge { template <class C> static bool f(C a, C b) { return a >= b; } };

template <class Op>
constexpr bool has_avx512_variant() {
  if constexpr (requires { Op::kind; }) return has_streaming_avx512_variant(Op::kind);
  return false;
}

// The block function for a scalar functor (kernels/cpu/binary_loops.h). f32 arithmetic runs
// its AVX-512 build where the CPU level allows (kernels/cpu/streaming_avx512.h).
template <class Op>
struct BinaryBlock {
  template <class C, class OC>
  void operator()(const C* const* in, const int64_t* step, OC* out, int64_t n) const {
    const C* a = in[0];
    const C* b = in[1];
    if constexpr (std::is_same_v<C, float> && std::is_same_v<OC, float> && has_avx512_variant<Op>()) {
      if (cpu_level() >= CpuLevel::avx512)
        return binary_f32_avx512(Op::kind, a, step[0] ? 1 : 0, b, step[1] ? 1 : 0, out, n);
    }
    binary_loops(a, step[0] != 0, b, step[1] != 0, out, n, [](C x, C y) { return Op::f(x, y); });
  }
};

// pow with a broadcast floating exponent: the exponents autograd and models use most are
// replaced by multiplications/square roots (2-4 orders of magnitude faster than std::pow).
struct PowBlock {
  template <class C>
  void operator()(const C* const* in, const int64_t* step, C* out, int64_t n) const {
    if constexpr (std::is_floating_point_v<C>) {
      if (step[0] && !step[1]) {
        const C* a = in[0];
        const C e = in[1][0];
        if (e == C(2)) {
          for (int64_t i = 0; i < n; ++i) out[i] = a[i] * a[i];
        } else if (e == C(3)) {
          for (int64_t i = 0; i < n; ++i) out[i] = a[i] * a[i] * a[i];
        } else if (e == C(0.5)) {
          for (int64_t i = 0; i < n; ++i) out[i] = std::sqrt(a[i]);
        } else if (e == C(-0.5)) {
          for (int64_t i = 0; i < n; ++i) out[i] = C(1) / std::sqrt(a[i]);
        } else if (e == C(1)) {
          for (int64_t i = 0; i < n; ++i) out[i] = a[i];
        } else if (e == C(-1)) {
          for (int64_t i = 0; i < n; ++i) out[i] = C(1) / a[i];
        } else if (e == C(-2)) {
          for (int64_t i = 0; i < n; ++i) out[i] = C(1) / (a[i] * a[i]);
        } else {
          for (int64_t i = 0; i < n; ++i) out[i] = std::pow(a[i], e);
        }
        return;
      }
    }
    BinaryBlock<Pow>{}(in, step, out, n);
  }
};

template <class T, class O, class Block>
void run_binary(int64_t ndim, const int64_t* sizes, StridedArg out, StridedArg a, StridedArg b,
                const Block& block) {
  const StridedArg in[2] = {a, b};
  ew::map_elements<2, T, O>(ndim, sizes, out, in, block);
}

template <class T>
void binary_kernel(BinaryKind op, int64_t ndim, const int64_t* sizes, StridedArg out,
                   StridedArg a, StridedArg b) {
  constexpr bool is_bool = std::is_same_v<T, bool>;
  constexpr bool is_float = std::is_floating_point_v<compute_t<T>>;
  switch (op) {
    case BinaryKind::add: return run_binary<T, T>(ndim, sizes, out, a, b, BinaryBlock<Add>{});
    case BinaryKind::mul: return run_binary<T, T>(ndim, sizes, out, a, b, BinaryBlock<Mul>{});
    case BinaryKind::maximum:
      return run_binary<T, T>(ndim, sizes, out, a, b, BinaryBlock<Maximum>{});
    case BinaryKind::minimum:
      return run_binary<T, T>(ndim, sizes, out, a, b, BinaryBlock<Minimum>{});
    case BinaryKind::eq: return run_binary<T, bool>(ndim, sizes, out, a, b, BinaryBlock<Eq>{});
    case BinaryKind::ne: return run_binary<T, bool>(ndim, sizes, out, a, b, BinaryBlock<Ne>{});
    case BinaryKind::lt: return run_binary<T, bool>(ndim, sizes, out, a, b, BinaryBlock<Lt>{});
    case BinaryKind::le: return run_binary<T, bool>(ndim, sizes, out, a, b, BinaryBlock<Le>{});
    case BinaryKind::gt: return run_binary<T, bool>(ndim, sizes, out, a, b, BinaryBlock<Gt>{});
    case BinaryKind::ge: return run_binary<T, bool>(ndim, sizes, out, a, b, BinaryBlock<Ge>{});
    case BinaryKind::sub:
      if constexpr (!is_bool) return run_binary<T, T>(ndim, sizes, out, a, b, BinaryBlock<Sub>{});
      break;
    case BinaryKind::pow:
      if constexpr (!is_bool) return run_binary<T, T>(ndim, sizes, out, a, b, PowBlock{});
      break;
    case BinaryKind::div:
      if constexpr (is_float) return run_binary<T, T>(ndim, sizes, out, a, b, BinaryBlock<Div>{});
      break;
  }
  // The front-end promotes integer division to floating and rejects bool sub/pow.
  LOOM_CHECK(false, "binary kernel: op ", int(op), " has no kernel for dtype ", dtype_of<T>());
}

template <class T>
void add_scaled_kernel(int64_t ndim, const int64_t* sizes, StridedArg out, StridedArg x,
                       StridedArg y, double alpha) {
  using C = compute_t<T>;
  const C s = from_double<C>(alpha);
  auto block = [s](const C* const* in, const int64_t* step, C* o, int64_t n) {
    const C* a = in[0];
    const C* b = in[1];
    if constexpr (std::is_same_v<C, bool>) {
      for (int64_t i = 0; i < n; ++i) o[i] = a[i * step[0]] || (s && b[i * step[1]]);
    } else if constexpr (is_int_v<C>) {
      for (int64_t i = 0; i < n; ++i)
        o[i] = C(wrap_t<C>(a[i * step[0]]) + wrap_t<C>(b[i * step[1]]) * wrap_t<C>(s));
    } else if (step[0] && step[1]) {
      for (int64_t i = 0; i < n; ++i) o[i] = a[i] + s * b[i];
    } else {
      for (int64_t i = 0; i < n; ++i) o[i] = a[i * step[0]] + s * b[i * step[1]];
    }
  };
  const StridedArg in[2] = {x, y};
  ew::map_elements<2, T, T>(ndim, sizes, out, in, block);
}

// where copies elements, so it works on the stored type directly (no f32 round trip for
// f16/bf16) and needs no block buffers.
template <class T>
void where_kernel(int64_t ndim, const int64_t* sizes, StridedArg out, StridedArg cond,
                  StridedArg a, StridedArg b) {
  const StridedArg args[4] = {out, cond, a, b};
  constexpr int64_t kT = int64_t(sizeof(T));
  const int64_t esize[4] = {kT, 1, kT, kT};
  ew::walk<4>(ndim, sizes, args, esize, [](char* const* p, const int64_t* st, int64_t n) {
    T* o = reinterpret_cast<T*>(p[0]);
    const bool* c = reinterpret_cast<const bool*>(p[1]);
    const T* x = reinterpret_cast<const T*>(p[2]);
    const T* y = reinterpret_cast<const T*>(p[3]);
    if (st[0] == kT && st[1] == 1 && st[2] == kT && st[3] == kT) {
      for (int64_t i = 0; i < n; ++i) o[i] = c[i] ? x[i] : y[i];
    } else if (st[0] == kT && st[1] == 1 && st[2] == 0 && st[3] == kT) {  // masked_fill
      const T v = x[0];
      for (int64_t i = 0; i < n; ++i) o[i] = c[i] ? v : y[i];
    } else {
      for (int64_t i = 0; i < n; ++i) {
        const bool ci = *reinterpret_cast<const bool*>(p[1] + i * st[1]);
        *reinterpret_cast<T*>(p[0] + i * st[0]) =
            *reinterpret_cast<const T*>((ci ? p[2] : p[3]) + i * (ci ? st[2] : st[3]));
      }
    }
  });
}

template <class Fn, class Make>
KernelTable<Fn> build_table(Make make) {
  KernelTable<Fn> t;
  ew::set_all_dtypes(t, make);
  return t;
}

}  // namespace

const KernelTable<BinaryFn>& binary_kernels() {
  static const KernelTable<BinaryFn> table = build_table<BinaryFn>(
      [](auto z) -> BinaryFn { return &binary_kernel<decltype(z)>; });
  return table;
}

const KernelTable<AddScaledFn>& add_scaled_kernels() {
  static const KernelTable<AddScaledFn> table = build_table<AddScaledFn>(
      [](auto z) -> AddScaledFn { return &add_scaled_kernel<decltype(z)>; });
  return table;
}

const KernelTable<WhereFn>& where_kernels() {
  static const KernelTable<WhereFn> table = build_table<WhereFn>(
      [](auto z) -> WhereFn { return &where_kernel<decltype(z)>; });
  return table;
}

}  // namespace loom::kernels::cpu
