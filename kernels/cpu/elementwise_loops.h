// The walk shared by the elementwise kernels: collapse the operands' dims, split the work
// across threads, and hand each run to a block function in the compute type.
//
// Internal to kernels/cpu/{binary,unary}.cpp. A "run" is a stretch along the innermost
// collapsed dim where every operand advances by a fixed byte stride. A "block function"
// fn(in, step, out, n) computes n outputs from K inputs in the compute type C (f32 for
// f16/bf16, else the element type itself); step[k] is 1 for a contiguous input and 0 for a
// broadcast one (in[k][0] is then its only value). apply_run calls it directly on the
// tensors' memory when a run allows, and through block buffers of kBlock elements when the
// run is strided or 16-bit (so no kernel ever makes a whole-tensor temporary).
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/strided.h"
#include "core/error.h"

namespace loom::kernels::cpu::ew {

inline constexpr int64_t kBlock = 1024;     // elements per conversion/gather block
inline constexpr int64_t kGrain = kMemoryBoundGrain;  // see kernels/cpu/parallel.h
inline constexpr int kMaxDims = 16;         // for_each_strided's limit

template <class T>
inline constexpr bool is_16bit_v = std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;
template <class T>
using compute_t = std::conditional_t<is_16bit_v<T>, float, T>;

#if defined(__AVX2__)
// bf16 <-> f32 for 8 values in registers, with the rules of core/half.h bit for bit: widening
// is a 16-bit shift; narrowing rounds to nearest even (add 0x7fff plus the lowest kept bit)
// and turns a NaN into a quiet NaN of the same sign and top payload bits ((x >> 16) | 0x40).
inline __m256 bf16x8_to_f32(const BFloat16* src) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline void f32x8_to_bf16(__m256 v, BFloat16* dst) {
  const __m256i x = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
  const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                         _mm256_set1_epi32(0x7f800000));
  const __m256i bits = _mm256_blendv_epi8(rounded, quiet, nan);  // each lane < 0x10000
  // Pack the 32-bit lanes to 16 bits; packus works per 128-bit half, so restore the order.
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(bits, bits), 0xd8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(packed));
}
#endif

// Contiguous block conversions between a stored type T and its compute type. For f16 they
// use the F16C instructions when compiled with -mf16c (LOOM_AVX2): both directions are exact
// or round to nearest even, so they agree bit for bit with core/half.h on every non-NaN
// value (a NaN stays a NaN; only non-default payload bits may differ). This is what makes an
// f16 add memory bound instead of conversion bound.
template <class T, class C>
inline void load_block(const T* src, C* dst, int64_t m) {
  int64_t i = 0;
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, Half>)
    for (; i + 8 <= m; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                    reinterpret_cast<const __m128i*>(src + i))));
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, BFloat16>)
    for (; i + 8 <= m; i += 8) _mm256_storeu_ps(dst + i, bf16x8_to_f32(src + i));
#endif
  for (; i < m; ++i) dst[i] = elem_cast<C>(src[i]);
}
template <class C, class T>
inline void store_block(const C* src, T* dst, int64_t m) {
  int64_t i = 0;
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, Half>)
    for (; i + 8 <= m; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, BFloat16>)
    for (; i + 8 <= m; i += 8) f32x8_to_bf16(_mm256_loadu_ps(src + i), dst + i);
#endif
  for (; i < m; ++i) dst[i] = elem_cast<T>(src[i]);
}

// Operands after dropping size-1 dims and merging dims that are contiguous with their inner
// neighbour in every operand; strides in bytes, outermost dim first.
template <int N>
struct Collapsed {
  int ndim = 0;
  int64_t sizes[kMaxDims];
  int64_t strides[N][kMaxDims];
};

template <int N>
Collapsed<N> collapse(int64_t ndim, const int64_t* sizes, const StridedArg* args,
                      const int64_t* elem_size) {
  Collapsed<N> c;
  int64_t sz[kMaxDims], st[N][kMaxDims];  // innermost first while building
  int d = 0;
  for (int64_t i = ndim - 1; i >= 0; --i) {
    if (sizes[i] == 1) continue;
    if (d > 0) {
      bool mergeable = true;
      for (int k = 0; k < N; ++k)
        if (args[k].strides[i] * elem_size[k] != st[k][d - 1] * sz[d - 1]) mergeable = false;
      if (mergeable) {
        sz[d - 1] *= sizes[i];
        continue;
      }
    }
    if (d == kMaxDims)
      throw ValueError(detail::concat("elementwise ops support at most ", kMaxDims,
                                      " non-mergeable dims; make the operands contiguous"));
    sz[d] = sizes[i];
    for (int k = 0; k < N; ++k) st[k][d] = args[k].strides[i] * elem_size[k];
    ++d;
  }
  if (d == 0) {  // one element
    sz[0] = 1;
    for (int k = 0; k < N; ++k) st[k][0] = 0;
    d = 1;
  }
  c.ndim = d;
  for (int j = 0; j < d; ++j) {
    c.sizes[j] = sz[d - 1 - j];
    for (int k = 0; k < N; ++k) c.strides[k][j] = st[k][d - 1 - j];
  }
  return c;
}

// Calls run(ptrs, byte_strides, n) over every run of N operands (operand 0 is the output).
// One collapsed dim (contiguous or 0-dim operands) is split by elements; otherwise the
// outermost collapsed dim is split by rows, so a row broadcast (M, N) op (N) gives each
// thread whole rows.
template <int N, class Run>
void walk(int64_t ndim, const int64_t* sizes, const StridedArg* args, const int64_t* elem_size,
          Run&& run) {
  for (int64_t i = 0; i < ndim; ++i)
    if (sizes[i] == 0) return;
  Collapsed<N> c = collapse<N>(ndim, sizes, args, elem_size);
  char* base[N];
  for (int k = 0; k < N; ++k) base[k] = static_cast<char*>(args[k].data);
  if (c.ndim == 1) {
    parallel_for(0, c.sizes[0], kGrain, [&](int64_t b, int64_t e) {
      char* p[N];
      int64_t st[N];
      for (int k = 0; k < N; ++k) {
        st[k] = c.strides[k][0];
        p[k] = base[k] + b * st[k];
      }
      run(p, st, e - b);
    });
    return;
  }
  int64_t inner = 1;
  for (int j = 1; j < c.ndim; ++j) inner *= c.sizes[j];
  parallel_for(0, c.sizes[0], std::max<int64_t>(1, kGrain / inner), [&](int64_t b, int64_t e) {
    int64_t sz[kMaxDims];
    std::copy(c.sizes, c.sizes + c.ndim, sz);
    sz[0] = e - b;
    char* p[N];
    const int64_t* st[N];
    for (int k = 0; k < N; ++k) {
      p[k] = base[k] + b * c.strides[k][0];
      st[k] = c.strides[k];
    }
    for_each_strided<N>(c.ndim, sz, p, st, run);
  });
}

// Runs fn over one run: p[0]/st[0] the output (element type O), p[1..K]/st[1..K] the inputs
// (element type T). See the file comment for the block-function contract.
template <int K, class T, class O, class Fn>
void apply_run(const Fn& fn, char* const* p, const int64_t* st, int64_t n) {
  using C = compute_t<T>;
  using OC = compute_t<O>;
  constexpr int64_t kIn = int64_t(sizeof(T));
  bool in_direct[K];
  bool all_direct = std::is_same_v<OC, O> && st[0] == int64_t(sizeof(O));
  for (int k = 0; k < K; ++k) {
    in_direct[k] = std::is_same_v<C, T> && (st[k + 1] == kIn || st[k + 1] == 0);
    all_direct = all_direct && in_direct[k];
  }
  const C* in[K];
  int64_t step[K];
  if (all_direct) {  // the common case: straight on the tensors' memory, no buffer
    for (int k = 0; k < K; ++k) {
      in[k] = reinterpret_cast<const C*>(p[k + 1]);
      step[k] = st[k + 1] == 0 ? 0 : 1;
    }
    fn(in, step, reinterpret_cast<OC*>(p[0]), n);
    return;
  }
  alignas(64) C buf[K][kBlock];
  alignas(64) OC obuf[kBlock];
  bool out_direct = std::is_same_v<OC, O> && st[0] == int64_t(sizeof(O));
  for (int64_t s = 0; s < n; s += kBlock) {
    int64_t m = std::min(kBlock, n - s);
    for (int k = 0; k < K; ++k) {
      const char* src = p[k + 1] + s * st[k + 1];
      if (in_direct[k]) {
        in[k] = reinterpret_cast<const C*>(src);
        step[k] = st[k + 1] == 0 ? 0 : 1;
      } else if (st[k + 1] == 0) {
        buf[k][0] = elem_cast<C>(*reinterpret_cast<const T*>(src));
        in[k] = buf[k];
        step[k] = 0;
      } else if (st[k + 1] == kIn) {
        load_block(reinterpret_cast<const T*>(src), buf[k], m);
        in[k] = buf[k];
        step[k] = 1;
      } else {
        for (int64_t i = 0; i < m; ++i)
          buf[k][i] = elem_cast<C>(*reinterpret_cast<const T*>(src + i * st[k + 1]));
        in[k] = buf[k];
        step[k] = 1;
      }
    }
    char* dst = p[0] + s * st[0];
    if (out_direct) {
      fn(in, step, reinterpret_cast<OC*>(dst), m);
    } else {
      fn(in, step, obuf, m);
      if (st[0] == int64_t(sizeof(O))) {
        store_block(obuf, reinterpret_cast<O*>(dst), m);
      } else {
        for (int64_t i = 0; i < m; ++i)
          *reinterpret_cast<O*>(dst + i * st[0]) = elem_cast<O>(obuf[i]);
      }
    }
  }
}

// walk + apply_run for K inputs of type T into an output of type O.
template <int K, class T, class O, class Fn>
void map_elements(int64_t ndim, const int64_t* sizes, StridedArg out, const StridedArg* in,
                  const Fn& fn) {
  StridedArg args[K + 1];
  int64_t esize[K + 1];
  args[0] = out;
  esize[0] = int64_t(sizeof(O));
  for (int k = 0; k < K; ++k) {
    args[k + 1] = in[k];
    esize[k + 1] = int64_t(sizeof(T));
  }
  walk<K + 1>(ndim, sizes, args, esize, [&](char* const* p, const int64_t* st, int64_t n) {
    apply_run<K, T, O>(fn, p, st, n);
  });
}

// Registers make(T{}) for every dtype as a CPU kernel. Spelled out rather than a loop over
// kAllDTypes: g++ 12 then warns (falsely) about an out-of-bounds table index.
template <class Fn, class Make>
void set_all_dtypes(KernelTable<Fn>& t, Make make) {
  t.set(DeviceType::cpu, DType::f64, make(double{}));
  t.set(DeviceType::cpu, DType::f32, make(float{}));
  t.set(DeviceType::cpu, DType::f16, make(Half{}));
  t.set(DeviceType::cpu, DType::bf16, make(BFloat16{}));
  t.set(DeviceType::cpu, DType::i64, make(int64_t{}));
  t.set(DeviceType::cpu, DType::i32, make(int32_t{}));
  t.set(DeviceType::cpu, DType::u8, make(uint8_t{}));
  t.set(DeviceType::cpu, DType::bool_, make(bool{}));
}

}  // namespace loom::kernels::cpu::ew
