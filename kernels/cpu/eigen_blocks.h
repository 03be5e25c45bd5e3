// Eigen array expressions with every value on Eigen's packet path. On a map whose address is
// not aligned to its packet, Eigen computes the head (up to the alignment) and the tail (past
// the last whole packet) in its scalar path, whose exp, log, tanh and erf are the C library's functions rather
// than its polynomials: an element's bits then depend on where its block starts, that is on how
// parallel_for split the tensor, which docs/design.md "Determinism" rules out (exp on
// 1572869 f32 values differed between 1 and 2 threads). Exact operations (+, *, /, sqrt,
// comparisons) round alike in both paths and need none of this.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace loom::kernels::cpu {
namespace {  // each including file (one per instruction set) has its own copy

// out[0, n) from K inputs: f(p, o, m) computes o[0, m) from p[0][0, m), ..., p[K-1][0, m) in
// Eigen arrays. f is called on the middle of the range directly, from where `out` is 64-byte
// aligned and for a multiple of 16 values (Eigen then peels nothing off), and on the few values
// before and after it through 64-byte aligned copies padded with `pad` to 16 values.
template <int K, class C, class F>
void on_packet_path(const C* const* in, C* out, int64_t n, C pad, F&& f) {
  constexpr int64_t kLine = 64 / int64_t(sizeof(C)), kWidth = 16;
  auto padded = [&](int64_t off, int64_t len) {  // len <= kWidth
    alignas(64) C xb[K][kWidth];
    alignas(64) C yb[kWidth];
    const C* p[K];
    for (int k = 0; k < K; ++k) {
      for (int64_t i = 0; i < kWidth; ++i) xb[k][i] = i < len ? in[k][off + i] : pad;
      p[k] = xb[k];
    }
    f(p, yb, kWidth);
    for (int64_t i = 0; i < len; ++i) out[off + i] = yb[i];
  };
  const int64_t misaligned = int64_t(reinterpret_cast<uintptr_t>(out) / sizeof(C)) % kLine;
  int64_t head = misaligned == 0 ? 0 : kLine - misaligned;
  if (head > n) head = n;
  if (head > 0) padded(0, head);
  const int64_t body = (n - head) / kWidth * kWidth;
  if (body > 0) {
    const C* p[K];
    for (int k = 0; k < K; ++k) p[k] = in[k] + head;
    f(p, out + head, body);
  }
  for (int64_t off = head + body; off < n; off += kWidth)
    padded(off, n - off < kWidth ? n - off : kWidth);
}

// y[i] = exp(x[i] - m) for i in [0, n).
template <class C>
void exp_shifted_into(const C* x, C m, C* y, int64_t n) {
  const C* in[1] = {x};
  on_packet_path<1>(in, y, n, m, [m](const C* const* p, C* o, int64_t len) {
    using Arr = Eigen::Array<C, Eigen::Dynamic, 1>;
    Eigen::Map<Arr>(o, len) = (Eigen::Map<const Arr>(p[0], len) - m).exp();
  });
}

}  // namespace
}  // namespace loom::kernels::cpu
