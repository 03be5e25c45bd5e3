// CPU layer norm (see layer_norm.h).
//
// Forward: rows split across threads. Backward: rows are cut into at most kMaxBlocks blocks
// whose size depends on M only; each block computes its rows' grad_x and its own partial
// grad_w / grad_b, and the partials are added in block order afterwards, so results do not
// depend on the thread count. 16-bit rows are converted into thread-local f32 rows. f32 rows
// take the AVX-512 row routines from that level on (layer_norm_avx512.h).
#include "kernels/cpu/layer_norm.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/layer_norm_avx512.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/strided.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;    // elements per parallel task, at least
constexpr int64_t kMaxBlocks = 64;     // row blocks of the backward's weight reductions

template <class T>
using Compute = std::conditional_t<std::is_same_v<T, double>, double, float>;

// A row of T as Compute<T>: the row itself when the types agree, else converted into buf.
template <class T>
const Compute<T>* as_compute(const T* row, int64_t K, std::vector<Compute<T>>& buf) {
  if constexpr (std::is_same_v<T, Compute<T>>) {
    return row;
  } else {
    buf.resize(size_t(K));
    for (int64_t k = 0; k < K; ++k) buf[size_t(k)] = elem_cast<Compute<T>>(row[k]);
    return buf.data();
  }
}

template <class T>
void forward_kernel(const void* xv, const void* wv, const void* bv, void* yv, void* meanv,
                    void* rstdv, int64_t M, int64_t K, double eps) {
  using S = Compute<T>;
  const T* x = static_cast<const T*>(xv);
  T* y = static_cast<T*>(yv);
  S* mean = static_cast<S*>(meanv);
  S* rstd = static_cast<S*>(rstdv);
  const bool avx512 = cpu_level() >= CpuLevel::avx512;  // f32 rows: layer_norm_avx512.h
  parallel_for(0, M, std::max<int64_t>(1, kGrain / std::max<int64_t>(K, 1)), [&](int64_t b,
                                                                               int64_t e) {
    thread_local std::vector<S> xbuf, wbuf, bbuf;
    const S* w = wv ? as_compute(static_cast<const T*>(wv), K, wbuf) : nullptr;
    const S* bias = bv ? as_compute(static_cast<const T*>(bv), K, bbuf) : nullptr;
    if constexpr (std::is_same_v<T, float>) {
      if (avx512) {
        for (int64_t m = b; m < e; ++m)
          layer_norm_row_f32_avx512(x + m * K, w, bias, y + m * K, K, float(eps), mean + m,
                                    rstd + m);
        return;
      }
    }
    for (int64_t m = b; m < e; ++m) {
      const S* row = as_compute(x + m * K, K, xbuf);
      S mu = sum_contiguous(row, K) / S(K);
      S var = pairwise_sum<S>(K, [row, mu](int64_t k) { return (row[k] - mu) * (row[k] - mu); }) /
              S(K);
      S rs = S(1) / std::sqrt(var + S(eps));
      mean[m] = mu;
      rstd[m] = rs;
      T* out = y + m * K;
      for (int64_t k = 0; k < K; ++k) {
        S v = (row[k] - mu) * rs;
        if (w) v *= w[k];
        if (bias) v += bias[k];
        out[k] = elem_cast<T>(v);
      }
    }
  });
}

template <class T>
void backward_kernel(const void* gv, const void* xv, const void* meanv, const void* rstdv,
                     const void* wv, void* gxv, void* gwv, void* gbv, int64_t M, int64_t K) {
  using S = Compute<T>;
  const T* g = static_cast<const T*>(gv);
  const T* x = static_cast<const T*>(xv);
  const S* mean = static_cast<const S*>(meanv);
  const S* rstd = static_cast<const S*>(rstdv);
  T* gx = static_cast<T*>(gxv);
  int64_t rows_per_block = std::max<int64_t>(1, (M + kMaxBlocks - 1) / kMaxBlocks);
  int64_t blocks = (M + rows_per_block - 1) / rows_per_block;
  bool partials = gwv || gbv;
  // (blocks, K) partial sums of g * xhat and of g.
  std::vector<S> part_w(partials ? size_t(blocks * K) : 0), part_b(partials ? size_t(blocks * K) : 0);
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, rows_per_block * K));
  const bool avx512 = cpu_level() >= CpuLevel::avx512;  // f32 rows: layer_norm_avx512.h
  parallel_for(0, blocks, grain, [&](int64_t bb, int64_t be) {
    thread_local std::vector<S> gbuf, xbuf, wbuf, gh, xhat;
    const S* w = wv ? as_compute(static_cast<const T*>(wv), K, wbuf) : nullptr;
    gh.resize(size_t(K));
    xhat.resize(size_t(K));
    for (int64_t blk = bb; blk < be; ++blk) {
      S* pw = partials ? part_w.data() + blk * K : nullptr;
      S* pb = partials ? part_b.data() + blk * K : nullptr;
      if (partials) {
        std::fill(pw, pw + K, S(0));
        std::fill(pb, pb + K, S(0));
      }
      if constexpr (std::is_same_v<T, float>) {
        if (avx512) {
          for (int64_t m = blk * rows_per_block, m1 = std::min(M, m + rows_per_block); m < m1; ++m)
            layer_norm_backward_row_f32_avx512(g + m * K, x + m * K, mean[m], rstd[m], w,
                                               gx + m * K, pw, pb, K);
          continue;
        }
      }
      for (int64_t m = blk * rows_per_block, m1 = std::min(M, m + rows_per_block); m < m1; ++m) {
        const S* grow = as_compute(g + m * K, K, gbuf);
        const S* xrow = as_compute(x + m * K, K, xbuf);
        S mu = mean[m], rs = rstd[m];
        for (int64_t k = 0; k < K; ++k) {
          xhat[size_t(k)] = (xrow[k] - mu) * rs;
          gh[size_t(k)] = w ? grow[k] * w[k] : grow[k];
        }
        if (partials)
          for (int64_t k = 0; k < K; ++k) {
            pw[k] += grow[k] * xhat[size_t(k)];
            pb[k] += grow[k];
          }
        const S* h = gh.data();
        const S* xh = xhat.data();
        S a = sum_contiguous(h, K) / S(K);
        S c = pairwise_sum<S>(K, [h, xh](int64_t k) { return h[k] * xh[k]; }) / S(K);
        T* out = gx + m * K;
        for (int64_t k = 0; k < K; ++k) out[k] = elem_cast<T>(rs * (h[k] - a - xh[k] * c));
      }
    }
  });
  auto combine = [&](const std::vector<S>& part, void* dst) {
    if (!dst) return;
    S* out = static_cast<S*>(dst);
    std::fill(out, out + K, S(0));
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int64_t k = 0; k < K; ++k) out[k] += part[size_t(blk * K + k)];
  };
  combine(part_w, gwv);
  combine(part_b, gbv);
}

template <class Fn, class Make>
KernelTable<Fn> floating_table(Make&& make) {
  KernelTable<Fn> t;
  t.set(DeviceType::cpu, DType::f64, make(double{}));
  t.set(DeviceType::cpu, DType::f32, make(float{}));
  t.set(DeviceType::cpu, DType::f16, make(Half{}));
  t.set(DeviceType::cpu, DType::bf16, make(BFloat16{}));
  return t;
}

}  // namespace

const KernelTable<LayerNormFn>& layer_norm_kernels() {
  static const auto table = floating_table<LayerNormFn>(
      [](auto z) -> LayerNormFn { return &forward_kernel<decltype(z)>; });
  return table;
}

const KernelTable<LayerNormBackwardFn>& layer_norm_backward_kernels() {
  static const auto table = floating_table<LayerNormBackwardFn>(
      [](auto z) -> LayerNormBackwardFn { return &backward_kernel<decltype(z)>; });
  return table;
}

}  // namespace loom::kernels::cpu
