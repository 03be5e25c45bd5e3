// CPU softmax family (see softmax.h).
//
// Rows along R are the unit of work. With I == 1 and an f32/f64 tensor a row is used in
// place. Otherwise (16-bit dtypes, or a softmax over a non-last dim) up to kTile rows are
// gathered into a thread-local f32/f64 buffer, computed there and scattered back: this keeps
// one row routine for every layout, and for I > 1 the gather reads kTile adjacent values per
// step, so it stays cache friendly without a transposed copy of the whole tensor.
#include "kernels/cpu/softmax.h"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/softmax_avx512.h"
#include "kernels/cpu/softmax_math.h"
#include "kernels/cpu/strided.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;  // elements per parallel task: exp is not cheap
constexpr int64_t kTile = 16;        // rows gathered together when I > 1

// The row routines at the current level: f32 takes the AVX-512 compilation from avx512.
template <class C>
void softmax_row_at_level(const C* x, C* y, int64_t n, bool log) {
  if constexpr (std::is_same_v<C, float>) {
    if (kSoftmaxAvx512Built && cpu_level() >= CpuLevel::avx512) return softmax_row_f32_avx512(x, y, n, log);
  }
  softmax_row_impl(x, y, n, log);
}

template <class C>
C sum_exp_shifted_at_level(const C* x, int64_t n, C m) {
  if constexpr (std::is_same_v<C, float>) {
    if (kSoftmaxAvx512Built && cpu_level() >= CpuLevel::avx512) return sum_exp_shifted_f32_avx512(x, n, m);
  }
  return sum_exp_shifted(x, n, m);
}

template <class C>
void softmax_backward_row(const C* g, const C* y, C* gx, int64_t n, bool log) {
  if (log) {
    C s = sum_contiguous(g, n);
    const C* in[2] = {g, y};  // exp through eigen_blocks.h: bits independent of the row's address
    on_packet_path<2>(in, gx, n, C(0), [s](const C* const* p, C* o, int64_t m) {
      Map<C>(o, m) = CMap<C>(p[0], m) - CMap<C>(p[1], m).exp() * s;
    });
  } else {
    C dot = pairwise_sum<C>(n, [g, y](int64_t i) { return g[i] * y[i]; });
    Map<C>(gx, n) = CMap<C>(y, n) * (CMap<C>(g, n) - dot);
  }
}

template <class T>
using Compute = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Calls fn(rows_of_input_0, ..., rows_of_input_K-1, out_row, R) for every row along R of K
// contiguous (O, R, I) inputs, writing out. out_row may alias the first input's row.
template <class T, int K, class Fn>
void for_each_row(const T* const* in, T* out, int64_t O, int64_t R, int64_t I, const Fn& fn) {
  using C = Compute<T>;
  if (O * R * I == 0) return;
  if constexpr (std::is_same_v<T, C>) {
    if (I == 1) {
      parallel_for(0, O, std::max<int64_t>(1, kGrain / R), [&](int64_t b, int64_t e) {
        for (int64_t m = b; m < e; ++m) {
          const C* rows[K];
          for (int k = 0; k < K; ++k) rows[k] = in[k] + m * R;
          fn(rows, out + m * R, R);
        }
      });
      return;
    }
  }
  int64_t tile = std::min(I, kTile);
  int64_t tiles = (I + tile - 1) / tile;
  parallel_for(0, O * tiles, std::max<int64_t>(1, kGrain / (R * tile)), [&](int64_t b, int64_t e) {
    thread_local std::vector<C> buf;
    buf.resize(size_t(K * tile * R));
    for (int64_t t = b; t < e; ++t) {
      int64_t o = t / tiles, i0 = (t % tiles) * tile, w = std::min(tile, I - i0);
      // buf[k][i][r] = in[k][o, r, i0 + i]
      for (int k = 0; k < K; ++k)
        for (int64_t r = 0; r < R; ++r) {
          const T* src = in[k] + (o * R + r) * I + i0;
          C* dst = buf.data() + k * tile * R + r;
          for (int64_t i = 0; i < w; ++i) dst[i * R] = elem_cast<C>(src[i]);
        }
      for (int64_t i = 0; i < w; ++i) {
        const C* rows[K];
        for (int k = 0; k < K; ++k) rows[k] = buf.data() + k * tile * R + i * R;
        fn(rows, buf.data() + i * R, R);
      }
      for (int64_t r = 0; r < R; ++r) {
        T* dst = out + (o * R + r) * I + i0;
        const C* src = buf.data() + r;
        for (int64_t i = 0; i < w; ++i) dst[i] = elem_cast<T>(src[i * R]);
      }
    }
  });
}

template <class T>
void softmax_kernel(const void* x, void* y, int64_t O, int64_t R, int64_t I, bool log) {
  using C = Compute<T>;
  const T* in[1] = {static_cast<const T*>(x)};
  for_each_row<T, 1>(in, static_cast<T*>(y), O, R, I, [log](const C* const* rows, C* out, int64_t n) {
    softmax_row_at_level(rows[0], out, n, log);
  });
}

template <class T>
void softmax_backward_kernel(const void* grad, const void* y, void* grad_x, int64_t O, int64_t R,
                             int64_t I, bool log) {
  using C = Compute<T>;
  const T* in[2] = {static_cast<const T*>(grad), static_cast<const T*>(y)};
  for_each_row<T, 2>(in, static_cast<T*>(grad_x), O, R, I,
                     [log](const C* const* rows, C* out, int64_t n) {
                       softmax_backward_row(rows[0], rows[1], out, n, log);
                     });
}

template <class Fn, template <class> class Make>
KernelTable<Fn> floating_table() {
  KernelTable<Fn> t;
  t.set(DeviceType::cpu, DType::f64, Make<double>::fn);
  t.set(DeviceType::cpu, DType::f32, Make<float>::fn);
  t.set(DeviceType::cpu, DType::f16, Make<Half>::fn);
  t.set(DeviceType::cpu, DType::bf16, Make<BFloat16>::fn);
  return t;
}

template <class T>
struct MakeForward {
  static constexpr SoftmaxFn fn = &softmax_kernel<T>;
};
template <class T>
struct MakeBackward {
  static constexpr SoftmaxBackwardFn fn = &softmax_backward_kernel<T>;
};

}  // namespace

void softmax_row(const float* x, float* y, int64_t n, bool log) { softmax_row_at_level(x, y, n, log); }
void softmax_row(const double* x, double* y, int64_t n, bool log) { softmax_row_impl(x, y, n, log); }
float log_sum_exp_shifted(const float* x, int64_t n, float m) {
  return std::log(sum_exp_shifted_at_level(x, n, m));
}
double log_sum_exp_shifted(const double* x, int64_t n, double m) {
  return std::log(sum_exp_shifted(x, n, m));
}

const KernelTable<SoftmaxFn>& softmax_kernels() {
  static const auto table = floating_table<SoftmaxFn, MakeForward>();
  return table;
}

const KernelTable<SoftmaxBackwardFn>& softmax_backward_kernels() {
  static const auto table = floating_table<SoftmaxBackwardFn, MakeBackward>();
  return table;
}

}  // namespace loom::kernels::cpu
