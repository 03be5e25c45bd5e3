// CPU fused cross-entropy (see cross_entropy.h). Positions (n, d) are independent and split
// across threads; each position's C logits (stride D apart) are gathered into a
// thread-local f32/f64 row, so one code path serves every dtype and layout.
#include "kernels/cpu/cross_entropy.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/softmax.h"
#include "kernels/cpu/strided.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;  // logits per parallel task, at least

template <class T>
using Compute = std::conditional_t<std::is_same_v<T, double>, double, float>;

// The C logits of position p = n * D + d, as Compute<T> in buf.
template <class T>
void gather_row(const T* logits, int64_t p, int64_t C, int64_t D, Compute<T>* buf) {
  const T* src = logits + (p / D) * C * D + p % D;
  for (int64_t c = 0; c < C; ++c) buf[c] = elem_cast<Compute<T>>(src[c * D]);
}

template <class T>
void forward_kernel(const void* lv, const int64_t* target, void* lossv, int64_t N, int64_t C,
                    int64_t D, int64_t ignore_index, double eps) {
  using S = Compute<T>;
  const T* logits = static_cast<const T*>(lv);
  S* loss = static_cast<S*>(lossv);
  parallel_for(0, N * D, std::max<int64_t>(1, kGrain / C), [&](int64_t b, int64_t e) {
    thread_local std::vector<S> buf;
    buf.resize(size_t(C));
    for (int64_t p = b; p < e; ++p) {
      int64_t t = target[p];
      if (t == ignore_index) {
        loss[p] = 0;
        continue;
      }
      gather_row(logits, p, C, D, buf.data());
      // lse = m + ls; adding m back only after subtracting x_t keeps f32 digits for large
      // logits (1000 + 2.4 would round to a 6e-5 grid).
      S m = max_contiguous(buf.data(), C);
      S ls = log_sum_exp_shifted(buf.data(), C, m);
      S nll = (m - buf[size_t(t)]) + ls;
      // mean_c(lse - x_c) = (m - mean_c(x_c)) + ls
      S smooth = eps > 0 ? (m - sum_contiguous(buf.data(), C) / S(C)) + ls : S(0);
      loss[p] = S(1 - eps) * nll + S(eps) * smooth;
    }
  });
}

template <class T>
void backward_kernel(const void* lv, const int64_t* target, const void* gv, int64_t grad_stride,
                     void* gxv, int64_t N, int64_t C, int64_t D, int64_t ignore_index,
                     double eps) {
  using S = Compute<T>;
  const T* logits = static_cast<const T*>(lv);
  const S* grad = static_cast<const S*>(gv);
  T* gx = static_cast<T*>(gxv);
  S off = S(eps / double(C)), hit = S(1 - eps);
  parallel_for(0, N * D, std::max<int64_t>(1, kGrain / C), [&](int64_t b, int64_t e) {
    thread_local std::vector<S> buf;
    buf.resize(size_t(C));
    for (int64_t p = b; p < e; ++p) {
      T* dst = gx + (p / D) * C * D + p % D;
      int64_t t = target[p];
      if (t == ignore_index) {
        for (int64_t c = 0; c < C; ++c) dst[c * D] = elem_cast<T>(S(0));
        continue;
      }
      S g = grad[p * grad_stride];
      gather_row(logits, p, C, D, buf.data());
      softmax_row(buf.data(), buf.data(), C, /*log=*/false);
      buf[size_t(t)] -= hit;
      for (int64_t c = 0; c < C; ++c) dst[c * D] = elem_cast<T>(g * (buf[size_t(c)] - off));
    }
  });
}

}  // namespace

const KernelTable<CrossEntropyFn>& cross_entropy_kernels() {
  static const auto table = [] {
    KernelTable<CrossEntropyFn> t;
    t.set(DeviceType::cpu, DType::f64, &forward_kernel<double>);
    t.set(DeviceType::cpu, DType::f32, &forward_kernel<float>);
    t.set(DeviceType::cpu, DType::f16, &forward_kernel<Half>);
    t.set(DeviceType::cpu, DType::bf16, &forward_kernel<BFloat16>);
    return t;
  }();
  return table;
}

const KernelTable<CrossEntropyBackwardFn>& cross_entropy_backward_kernels() {
  static const auto table = [] {
    KernelTable<CrossEntropyBackwardFn> t;
    t.set(DeviceType::cpu, DType::f64, &backward_kernel<double>);
    t.set(DeviceType::cpu, DType::f32, &backward_kernel<float>);
    t.set(DeviceType::cpu, DType::f16, &backward_kernel<Half>);
    t.set(DeviceType::cpu, DType::bf16, &backward_kernel<BFloat16>);
    return t;
  }();
  return table;
}

}  // namespace loom::kernels::cpu
