// CPU reduction kernels over a contiguous (O, R, I) input (see reduce.h).
//
// One driver, reduce_ori, schedules all of them:
//   I == 1 (reduce contiguous rows): outputs are split across threads; a row longer than
//     kChunk is cut into fixed chunks reduced in parallel and combined pairwise, so a single
//     big output (a full sum) uses every thread and the result does not depend on the
//     thread count.
//   I > 1 (reduce across rows): outputs are accumulated one whole input row at a time, which
//     walks memory contiguously and vectorises over the outputs; rows are summed in blocks
//     of kRowBlock before joining the total, which bounds the error growth the way the
//     pairwise leaves do. Up to kCol outputs live in stack arrays (one task per o); wider
//     rows, or too few of them, go to reduce_wide_rows, which also splits R across threads.
// 16-bit floats are converted to f32 in blocks of kConvert on the stack.
#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/streaming_avx512.h"
#include "kernels/cpu/strided.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kGrain = kMemoryBoundGrain;  // input elements per task; parallel.h
constexpr int64_t kChunk = 1 << 16;     // a longer row is reduced in chunks of this many
constexpr int64_t kCol = 512;           // outputs accumulated on the stack when I > 1
constexpr int64_t kRowBlock = 64;       // rows per partial block when I > 1
constexpr int64_t kMaxRowChunks = 64;   // most row chunks reduced in parallel when I > kCol
constexpr int64_t kConvert = 2048;      // 16-bit floats converted per block

template <class T>
constexpr bool is_half_v = std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;

// The type a value of T is compared or accumulated in: float for the 16-bit floats.
template <class T>
using Compute = std::conditional_t<is_half_v<T>, float, T>;

template <class T>
inline Compute<T> load(const T& v) {
  return elem_cast<Compute<T>>(v);
}

// Applies fn(const float* buf, len) to consecutive f32-converted blocks of a 16-bit run and
// adds up what it returns.
template <class T, class Fn>
float over_converted_blocks(const T* x, int64_t n, Fn&& fn) {
  float buf[kConvert];
  float total = 0.f;
  for (int64_t b = 0; b < n; b += kConvert) {
    int64_t len = std::min(kConvert, n - b);
    for (int64_t i = 0; i < len; ++i) buf[i] = load(x[b + i]);
    total += fn(buf, len);
  }
  return total;
}

// reduce_ori's I > 1 case for rows wider than kCol, or too few outputs O to keep every
// thread busy. Cutting wide rows into column blocks would read each row in short strided
// pieces (measured: 2.5x slower than streaming), so each task streams whole rows of a fixed
// chunk of R into a full-width partial; the at most kMaxRowChunks partials per output are
// then combined pairwise. The chunking depends on the shape only, not the thread count.
template <class Acc, class Col, class Combine, class Finish>
void reduce_wide_rows(int64_t O, int64_t R, int64_t I, Acc identity, const Col& col,
                      const Combine& combine, const Finish& finish) {
  int64_t rows = std::max(kRowBlock, (R + kMaxRowChunks - 1) / kMaxRowChunks);
  int64_t chunks = std::max<int64_t>(1, (R + rows - 1) / rows);
  std::unique_ptr<Acc[]> part(new Acc[size_t(O * chunks * I)]);  // (O, chunks, I), all written
  parallel_for(0, O * chunks, std::max<int64_t>(1, kGrain / (rows * I)), [&](int64_t b, int64_t e) {
    std::unique_ptr<Acc[]> block(new Acc[size_t(I)]);
    for (int64_t k = b; k < e; ++k) {
      int64_t o = k / chunks, r0 = (k % chunks) * rows, r1 = std::min(R, r0 + rows);
      Acc* total = part.get() + k * I;
      std::fill(total, total + I, identity);
      for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
        std::fill(block.get(), block.get() + I, identity);
        for (int64_t r = rb, re = std::min(r1, rb + kRowBlock); r < re; ++r)
          col(block.get(), o, r, 0, I);
        for (int64_t i = 0; i < I; ++i) total[i] = combine(total[i], block[size_t(i)]);
      }
    }
  });
  // Pairwise over the chunks, a row segment of kCol outputs at a time (contiguous, so it
  // vectorises); each output sees the same tree of additions whatever the segment.
  int64_t segs = (I + kCol - 1) / kCol;
  parallel_for(0, O * segs, std::max<int64_t>(1, kGrain / (chunks * kCol)), [&](int64_t b,
                                                                                  int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      int64_t o = t / segs, i0 = (t % segs) * kCol, n = std::min(kCol, I - i0);
      Acc* p = part.get() + o * chunks * I + i0;  // chunk c's segment at p + c * I
      for (int64_t w = 1; w < chunks; w *= 2)
        for (int64_t c = 0; c + w < chunks; c += 2 * w) {
          Acc* dst = p + c * I;
          const Acc* src = p + (c + w) * I;
          for (int64_t i = 0; i < n; ++i) dst[i] = combine(dst[i], src[i]);
        }
      for (int64_t i = 0; i < n; ++i) finish(o * I + i0 + i, p[i]);
    }
  });
}

// The scheduling driver. row(m, r0, len) reduces x[m, r0 : r0 + len] (I == 1) to an Acc;
// col(acc, o, r, i0, w) folds x[o, r, i0 : i0 + w] into acc[0 : w]; combine joins two Accs;
// finish(k, acc) writes output k.
template <class Acc, class Row, class Col, class Combine, class Finish>
void reduce_ori(int64_t O, int64_t R, int64_t I, Acc identity, const Row& row, const Col& col,
                const Combine& combine, const Finish& finish) {
  if (O * I == 0) return;
  if (I == 1) {
    int64_t chunks = std::max<int64_t>(1, (R + kChunk - 1) / kChunk);
    if (chunks == 1) {
      parallel_for(0, O, std::max<int64_t>(1, kGrain / std::max<int64_t>(R, 1)),
                   [&](int64_t b, int64_t e) {
                     for (int64_t m = b; m < e; ++m) finish(m, R == 0 ? identity : row(m, 0, R));
                   });
      return;
    }
    std::unique_ptr<Acc[]> part(new Acc[size_t(O * chunks)]);  // not vector: Acc may be bool
    parallel_for(0, O * chunks, std::max<int64_t>(1, kGrain / kChunk), [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        int64_t m = k / chunks, r0 = (k % chunks) * kChunk;
        part[size_t(k)] = row(m, r0, std::min(kChunk, R - r0));
      }
    });
    for (int64_t m = 0; m < O; ++m) {
      Acc* p = part.get() + m * chunks;
      for (int64_t w = 1; w < chunks; w *= 2)
        for (int64_t c = 0; c + w < chunks; c += 2 * w) p[c] = combine(p[c], p[c + w]);
      finish(m, p[0]);
    }
    return;
  }
  if (I > kCol || O < kMaxRowChunks / 8) {
    reduce_wide_rows(O, R, I, identity, col, combine, finish);
    return;
  }
  int64_t grain = std::max<int64_t>(1, kGrain / std::max<int64_t>(1, R * I));
  parallel_for(0, O, grain, [&](int64_t b, int64_t e) {
    Acc total[kCol], part[kCol];
    for (int64_t o = b; o < e; ++o) {
      const int64_t i0 = 0, w = I;
      std::fill(total, total + w, identity);
      for (int64_t r0 = 0; r0 < R; r0 += kRowBlock) {
        std::fill(part, part + w, identity);
        for (int64_t r = r0, r1 = std::min(R, r0 + kRowBlock); r < r1; ++r) col(part, o, r, i0, w);
        for (int64_t i = 0; i < w; ++i) total[i] = combine(total[i], part[i]);
      }
      for (int64_t i = 0; i < w; ++i) finish(o * I + i0 + i, total[i]);
    }
  });
}

// ---- sum / mean ----

template <class T>
using SumAcc = std::conditional_t<std::is_same_v<T, double>, double,
                                  std::conditional_t<std::is_floating_point_v<Compute<T>>, float,
                                                     int64_t>>;

// sum_contiguous of f32, in its AVX-512 build where the CPU level allows (same bits).
float sum_f32(const float* x, int64_t n) {
  return cpu_level() >= CpuLevel::avx512 ? sum_f32_avx512(x, n) : sum_contiguous(x, n);
}

template <class T>
SumAcc<T> sum_run(const T* x, int64_t n) {
  using Acc = SumAcc<T>;
  if constexpr (is_half_v<T>) {
    return over_converted_blocks(x, n, [](const float* b, int64_t len) { return sum_f32(b, len); });
  } else if constexpr (std::is_same_v<T, float>) {
    return sum_f32(x, n);
  } else if constexpr (std::is_floating_point_v<T>) {
    return sum_contiguous(x, n);
  } else {
    Acc acc = 0;  // integer addition is exact in any order: a plain loop vectorises
    for (int64_t i = 0; i < n; ++i) acc += Acc(x[i]);
    return acc;
  }
}

template <class T>
void sum_kernel(const void* xv, void* outv, int64_t O, int64_t R, int64_t I, double scale) {
  using Acc = SumAcc<T>;
  const T* x = static_cast<const T*>(xv);
  Acc* out = static_cast<Acc*>(outv);
  reduce_ori<Acc>(
      O, R, I, Acc(0), [&](int64_t m, int64_t r0, int64_t len) { return sum_run(x + m * R + r0, len); },
      [&](Acc* acc, int64_t o, int64_t r, int64_t i0, int64_t w) {
        const T* src = x + (o * R + r) * I + i0;
        for (int64_t i = 0; i < w; ++i) acc[i] += Acc(load(src[i]));
      },
      [](Acc a, Acc b) { return a + b; },
      [&](int64_t k, Acc v) {
        if constexpr (std::is_floating_point_v<Acc>)
          out[k] = scale == 1.0 ? v : Acc(double(v) * scale);
        else
          out[k] = v;
      });
}

// ---- var: two passes, the mean first (the one-pass formula loses digits to cancellation) ----

template <class T>
void var_kernel(const void* xv, void* outv, int64_t O, int64_t R, int64_t I, int64_t correction) {
  using Acc = SumAcc<T>;
  const T* x = static_cast<const T*>(xv);
  Acc* out = static_cast<Acc*>(outv);
  std::vector<Acc> mean(size_t(O * I));
  sum_kernel<T>(xv, mean.data(), O, R, I, 1.0 / double(R));
  reduce_ori<Acc>(
      O, R, I, Acc(0),
      [&](int64_t m, int64_t r0, int64_t len) {
        const T* src = x + m * R + r0;
        Acc mu = mean[size_t(m)];
        if constexpr (is_half_v<T>) {
          return over_converted_blocks(src, len, [mu](const float* b, int64_t n) {
            return pairwise_sum<float>(n, [b, mu](int64_t i) { return (b[i] - mu) * (b[i] - mu); });
          });
        } else {
          return pairwise_sum<Acc>(len, [src, mu](int64_t i) { return (src[i] - mu) * (src[i] - mu); });
        }
      },
      [&](Acc* acc, int64_t o, int64_t r, int64_t i0, int64_t w) {
        const T* src = x + (o * R + r) * I + i0;
        const Acc* mu = mean.data() + o * I + i0;
        for (int64_t i = 0; i < w; ++i) {
          Acc d = Acc(load(src[i])) - mu[i];
          acc[i] += d * d;
        }
      },
      [](Acc a, Acc b) { return a + b; },
      [&](int64_t k, Acc v) { out[k] = v / Acc(std::max<int64_t>(0, R - correction)); });
}

// ---- amax / amin ----

template <bool kMax, class C>
inline C pick(C a, C b) {  // the larger (smaller) of a and b; NaN in either wins
  if (a != a) return a;
  if constexpr (kMax)
    return (b > a || b != b) ? b : a;
  else
    return (b < a || b != b) ? b : a;
}

// Neutral start for accumulating a max (min): -inf (+inf), or the integer type's extreme.
template <class C, bool kMax>
constexpr C extremum_identity() {
  using L = std::numeric_limits<C>;
  if constexpr (L::has_infinity)
    return kMax ? -L::infinity() : L::infinity();
  else
    return kMax ? L::lowest() : L::max();
}

template <class T, bool kMax>
void extremum_kernel(const void* xv, void* outv, int64_t O, int64_t R, int64_t I) {
  using C = Compute<T>;
  const T* x = static_cast<const T*>(xv);
  T* out = static_cast<T*>(outv);
  reduce_ori<C>(
      O, R, I, extremum_identity<C, kMax>(),
      [&](int64_t m, int64_t r0, int64_t len) {
        const T* src = x + m * R + r0;
        if constexpr (is_half_v<T>) {
          float buf[kConvert];
          float best = load(src[0]);
          for (int64_t b = 0; b < len; b += kConvert) {
            int64_t n = std::min(kConvert, len - b);
            for (int64_t i = 0; i < n; ++i) buf[i] = load(src[b + i]);
            best = pick<kMax>(best, extremum_contiguous<kMax>(buf, n));
          }
          return best;
        } else {
          return extremum_contiguous<kMax>(src, len);
        }
      },
      [&](C* acc, int64_t o, int64_t r, int64_t i0, int64_t w) {
        const T* src = x + (o * R + r) * I + i0;
        for (int64_t i = 0; i < w; ++i) acc[i] = pick<kMax>(acc[i], load(src[i]));
      },
      [](C a, C b) { return pick<kMax>(a, b); },
      [&](int64_t k, C v) { out[k] = elem_cast<T>(v); });
}

// ---- max/min along a dim with indices ----

template <bool kMax, class C>
inline bool beats(C v, C best) {  // strictly better, so the first index keeps ties
  if (best != best) return false;  // the first NaN is final
  if (v != v) return true;
  if constexpr (kMax)
    return v > best;
  else
    return v < best;
}

template <class T, bool kMax>
void arg_extremum_kernel(const void* xv, void* valuesv, int64_t* indices, int64_t O, int64_t R,
                         int64_t I) {
  using C = Compute<T>;
  const T* x = static_cast<const T*>(xv);
  T* values = static_cast<T*>(valuesv);
  if (O * I == 0) return;
  if (I == 1) {
    parallel_for(0, O, std::max<int64_t>(1, kGrain / R), [&](int64_t b, int64_t e) {
      for (int64_t m = b; m < e; ++m) {
        const T* src = x + m * R;
        C best = load(src[0]);
        int64_t at = 0;
        for (int64_t r = 1; r < R; ++r) {
          C v = load(src[r]);
          if (beats<kMax>(v, best)) {
            best = v;
            at = r;
          }
        }
        if (values) values[m] = elem_cast<T>(best);
        indices[m] = at;
      }
    });
    return;
  }
  int64_t blocks = (I + kCol - 1) / kCol;
  parallel_for(0, O * blocks, std::max<int64_t>(1, kGrain / (R * std::min(I, kCol))),
               [&](int64_t b, int64_t e) {
                 C best[kCol];
                 int64_t at[kCol];
                 for (int64_t k = b; k < e; ++k) {
                   int64_t o = k / blocks, i0 = (k % blocks) * kCol, w = std::min(kCol, I - i0);
                   const T* base = x + o * R * I + i0;
                   for (int64_t i = 0; i < w; ++i) {
                     best[i] = load(base[i]);
                     at[i] = 0;
                   }
                   for (int64_t r = 1; r < R; ++r)
                     for (int64_t i = 0; i < w; ++i) {
                       C v = load(base[r * I + i]);
                       if (beats<kMax>(v, best[i])) {
                         best[i] = v;
                         at[i] = r;
                       }
                     }
                   for (int64_t i = 0; i < w; ++i) {
                     if (values) values[o * I + i0 + i] = elem_cast<T>(best[i]);
                     indices[o * I + i0 + i] = at[i];
                   }
                 }
               });
}

// ---- tables ----

template <class Fn, class Make>
KernelTable<Fn> build_table(bool floating_only, Make&& make) {
  KernelTable<Fn> t;
  // Spelled out per dtype (a loop over kAllDTypes trips g++ 12's -Warray-bounds).
  auto add = [&](DType d, auto z) {
    if (!floating_only || is_floating(d)) t.set(DeviceType::cpu, d, make(z));
  };
  add(DType::f64, double{});
  add(DType::f32, float{});
  add(DType::f16, Half{});
  add(DType::bf16, BFloat16{});
  add(DType::i64, int64_t{});
  add(DType::i32, int32_t{});
  add(DType::u8, uint8_t{});
  add(DType::bool_, bool{});
  return t;
}

}  // namespace

const KernelTable<SumFn>& sum_kernels() {
  static const auto table = build_table<SumFn>(false, [](auto z) -> SumFn {
    return &sum_kernel<decltype(z)>;
  });
  return table;
}

const KernelTable<VarFn>& var_kernels() {
  static const auto table = build_table<VarFn>(true, [](auto z) -> VarFn {
    using T = decltype(z);
    if constexpr (std::is_floating_point_v<Compute<T>>)
      return &var_kernel<T>;
    else
      return nullptr;
  });
  return table;
}

const KernelTable<ExtremumFn>& amax_kernels() {
  static const auto table = build_table<ExtremumFn>(false, [](auto z) -> ExtremumFn {
    return &extremum_kernel<decltype(z), true>;
  });
  return table;
}

const KernelTable<ExtremumFn>& amin_kernels() {
  static const auto table = build_table<ExtremumFn>(false, [](auto z) -> ExtremumFn {
    return &extremum_kernel<decltype(z), false>;
  });
  return table;
}

const KernelTable<ArgExtremumFn>& max_dim_kernels() {
  static const auto table = build_table<ArgExtremumFn>(false, [](auto z) -> ArgExtremumFn {
    return &arg_extremum_kernel<decltype(z), true>;
  });
  return table;
}

const KernelTable<ArgExtremumFn>& min_dim_kernels() {
  static const auto table = build_table<ArgExtremumFn>(false, [](auto z) -> ArgExtremumFn {
    return &arg_extremum_kernel<decltype(z), false>;
  });
  return table;
}

}  // namespace loom::kernels::cpu
