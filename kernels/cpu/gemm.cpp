// GEMM kernels: OpenBLAS sgemm/dgemm for f32/f64, panel-converted sgemm for f16/bf16, and
// loom's own kernels for f32 GEMMs with one dimension of 16 or less (kernels/cpu/gemm_skinny.h).
// On CPUs with AVX-512 (cpu_level() >= avx512, docs/design.md "CPU capabilities") and a loom
// built with oneDNN, f32 GEMMs and the f32 panels of f16/bf16 GEMMs run in dnnl_sgemm instead,
// and with AVX512-BF16 bf16 GEMMs run in oneDNN's bf16 matmul (kernels/cpu/gemm_onednn.h).
// Measured on one thread at 1024^3 (AMD EPYC, 2 vCPU, OPENBLAS_CORETYPE=Haswell set): OpenBLAS
// 83-103 GFLOP/s, dnnl_sgemm 168-245, oneDNN's bf16 matmul 463-499; OpenBLAS's own AVX-512
// kernel (the environment unset) 190-222. Below avx512 everything stays as it was.
//
// Threading (one thread budget, see kernels/cpu/parallel.h): a large GEMM runs alone and lets
// OpenBLAS use the threads. A batch of small GEMMs is split over loom's pool instead, and only
// when each GEMM is at or below OpenBLAS's own threading threshold (M*N*K <= 65536 * 4, the
// GEMM_MULTITHREAD_THRESHOLD of interface/gemm.c), so that every cblas call made from a pool
// thread runs single-threaded and OpenBLAS never spins up threads inside parallel_for.
// loom's own skinny kernels and the transposing pass of the C^T path split over loom's pool
// (from about 4M multiply-adds, or 256K elements, per chunk). oneDNN always runs on one thread
// per call; a large GEMM is split into blocks of C rows (or columns, when C is wide) over
// loom's pool, one block per thread, from kMinChunkMacs multiply-adds per block.
#include "kernels/cpu/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <string>
#include <vector>

#include <immintrin.h>

#include "kernels/cpu/capability.h"
#include "kernels/cpu/gemm_onednn.h"
#include "kernels/cpu/gemm_skinny.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/transpose.h"

namespace loom::kernels::cpu {
namespace {

// GEMMs with M*N*K at most this run single-threaded inside OpenBLAS (65536 * 4).
constexpr int64_t kSmallGemmFlops = int64_t(65536) * 4;
// f16/bf16 panels: rows of A per block, the K extent of a block, and the f32 elements of one
// B panel (K block x N block); with K = 1024 that is 256 x 1024 A blocks and 1024 x 512 B
// panels, 1 MiB + 2 MiB of f32 per thread.
constexpr int64_t kLowpBlockM = 256;
constexpr int64_t kLowpBlockK = 2048;
constexpr int64_t kLowpPanelElems = int64_t(1) << 19;

// How cblas sees one operand: row-major as stored, or transposed, with its leading dimension.
struct BlasLayout {
  bool ok = false;
  bool trans = false;
  int64_t ld = 0;
};

// A (rows, cols) operand with element strides (rs, cs) is usable by row-major cblas as
// NoTrans when cs == 1 and rs >= cols, or as Trans when rs == 1 and cs >= rows. Strides of
// size-1 dims carry no information, so they are replaced by whatever makes a layout fit.
BlasLayout blas_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  if (cols == 1) cs = 1;
  if (cs == 1 && (rows == 1 || rs >= std::max<int64_t>(cols, 1)))
    return {true, false, rows == 1 ? std::max<int64_t>(cols, 1) : rs};
  if (rows == 1) rs = 1;
  if (rs == 1 && cs >= std::max<int64_t>(rows, 1)) return {true, true, cs};
  return {};
}

bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

// Calls fn(a_off, b_off, c_off) for every batch index, in element offsets, over [begin, end).
template <class Fn>
void for_batch_range(const GemmArgs& g, int64_t begin, int64_t end, Fn&& fn) {
  for (int64_t bi = begin; bi < end; ++bi) {
    int64_t rem = bi, ao = 0, bo = 0, co = 0;
    for (int64_t d = g.batch_ndim - 1; d >= 0; --d) {
      int64_t idx = rem % g.batch_sizes[d];
      rem /= g.batch_sizes[d];
      ao += idx * g.a_batch_strides[d];
      bo += idx * g.b_batch_strides[d];
      co += idx * g.c_batch_strides[d];
    }
    fn(ao, bo, co);
  }
}

// Runs one GEMM per batch index: over loom's pool when each is small (single-threaded in
// OpenBLAS), else one after another so that OpenBLAS threads each.
template <class Fn>
void run_batched(const GemmArgs& g, Fn&& one) {
  int64_t batch = 1;
  for (int64_t d = 0; d < g.batch_ndim; ++d) batch *= g.batch_sizes[d];
  int64_t flops = g.m * g.n * g.k;
  if (batch > 1 && flops <= kSmallGemmFlops) {
    int64_t grain = std::max<int64_t>(1, kSmallGemmFlops / std::max<int64_t>(flops, 1));
    parallel_for(0, batch, grain,
                 [&](int64_t b, int64_t e) { for_batch_range(g, b, e, one); });
  } else {
    for_batch_range(g, 0, batch, one);
  }
}

// ---- oneDNN: which GEMMs, and how they split over the pool ----

bool use_onednn_f32() { return cpu_level() >= CpuLevel::avx512 && onednn_available(); }
bool use_onednn_bf16() { return cpu_level() >= CpuLevel::avx512_bf16 && onednn_available(); }

// A block of C: rows [i0, i1), columns [j0, j1).
struct Block {
  int64_t i0, i1, j0, j1;
};

// Multiply-adds per block, at least: 8M is 40-80 us on one core at AVX-512 rates, against
// about 20 us to wake a pool thread (kernels/cpu/parallel.h).
constexpr int64_t kMinChunkMacs = int64_t(8) << 20;
// Block edges fall on multiples of this many rows or columns (the JIT kernels' register
// blocks are 16 or 32 wide).
constexpr int64_t kBlockAlign = 32;

// Splits C into at most get_num_threads() blocks along its longer side, each a multiple of
// kBlockAlign; the split depends only on the shape and the thread count, so results are
// reproducible at a fixed thread count (docs/design.md "Determinism").
template <class Fn>
void split_over_pool(int64_t m, int64_t n, int64_t k, Fn&& fn) {
  const int64_t macs = m * n * k;
  int64_t chunks = std::min<int64_t>(get_num_threads(), std::max<int64_t>(1, macs / kMinChunkMacs));
  const bool rows = m >= n;
  const int64_t extent = rows ? m : n;
  int64_t per = (extent + chunks - 1) / chunks;
  per = (per + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
  chunks = (extent + per - 1) / per;
  if (chunks <= 1) return fn(Block{0, m, 0, n});
  parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t ci = c0; ci < c1; ++ci) {
      const int64_t lo = ci * per, hi = std::min(extent, lo + per);
      fn(rows ? Block{lo, hi, 0, n} : Block{0, m, lo, hi});
    }
  });
}

// Every GEMM of the batch, for kernels that run on one thread: a batch of small GEMMs splits
// over the batch (fn(a_off, b_off, c_off, false)), each larger GEMM is to be split over blocks
// of its C by fn (split = true).
template <class Fn>
void for_each_gemm(const GemmArgs& g, Fn&& fn) {
  int64_t batch = 1;
  for (int64_t d = 0; d < g.batch_ndim; ++d) batch *= g.batch_sizes[d];
  const int64_t macs = g.m * g.n * g.k;
  if (batch > 1 && macs < kMinChunkMacs) {
    const int64_t grain = std::max<int64_t>(1, kMinChunkMacs / std::max<int64_t>(macs, 1));
    parallel_for(0, batch, grain, [&](int64_t b, int64_t e) {
      for_batch_range(g, b, e, [&](int64_t ao, int64_t bo, int64_t co) { fn(ao, bo, co, false); });
    });
    return;
  }
  for_batch_range(g, 0, batch, [&](int64_t ao, int64_t bo, int64_t co) { fn(ao, bo, co, true); });
}

// for_each_gemm with the split done here: fn(a_off, b_off, c_off, block of C).
template <class Fn>
void run_split(const GemmArgs& g, Fn&& fn) {
  for_each_gemm(g, [&](int64_t ao, int64_t bo, int64_t co, bool split) {
    if (split) {
      split_over_pool(g.m, g.n, g.k, [&](const Block& blk) { fn(ao, bo, co, blk); });
    } else {
      fn(ao, bo, co, Block{0, g.m, 0, g.n});
    }
  });
}

// Where loom's skinny kernels (AVX2) still beat dnnl_sgemm (AVX-512). Measured on one thread,
// K = 1024 or N = 1024 around the small dimension, loom's time including matmul's front end:
// dots (x @ w^T) N = 2 / 8 / 10 / 12 / 16: 13 / 38 / 48 / 54 / 75 us against 45 / 44 / 52 /
// 45 / 48; rows with small K = 4 / 10 / 16: 26 / 46 / 90 against 39 / 39 / 54; rows with small
// M (the weight gradient dy^T @ x) M = 4 / 10 / 16: 32 / 63-69 / 94 against 18 / 31-33 / 38.
bool skinny_beats_onednn(const GemmArgs& g, SkinnyKernel kernel) {
  if (kernel == SkinnyKernel::dots) return g.n <= 10;
  return g.k <= 8;  // rows: a rank-K update; with M small oneDNN is faster
}

// ---- the bias row ----

// Rows [i0, i1), columns [j0, j1) of the C at offset co = the bias (g.bias, C's dtype).
template <class T>
void fill_bias_rows(const GemmArgs& g, int64_t co, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const T* bias = static_cast<const T*>(g.bias);
  T* c = static_cast<T*>(g.c) + co;
  for (int64_t i = i0; i < i1; ++i) {
    T* row = c + i * g.c_rs;
    if (g.c_cs == 1) {
      std::copy(bias + j0, bias + j1, row + j0);
    } else {
      for (int64_t j = j0; j < j1; ++j) row[j * g.c_cs] = bias[j];
    }
  }
}

// g with its bias moved into C: every C_b's rows filled with it, then beta = 1 and no bias.
template <class T>
GemmArgs bias_into_c(const GemmArgs& g) {
  LOOM_CHECK(g.beta == 0.0f, "gemm: a bias needs beta = 0");
  int64_t batch = 1;
  for (int64_t d = 0; d < g.batch_ndim; ++d) batch *= g.batch_sizes[d];
  const int64_t grain = std::max<int64_t>(1, kMemoryBoundGrain / std::max<int64_t>(g.m * g.n, 1));
  parallel_for(0, batch, grain, [&](int64_t b0, int64_t b1) {
    for_batch_range(g, b0, b1, [&](int64_t, int64_t, int64_t co) {
      fill_bias_rows<T>(g, co, 0, g.m, 0, g.n);
    });
  });
  GemmArgs out = g;
  out.bias = nullptr;
  out.beta = 1.0f;
  return out;
}

// Where oneDNN's matmul primitive (its brgemm kernel) beats dnnl_sgemm for f32, by shape of
// the block one call computes. Measured on one thread, same process, primitive / dnnl_sgemm
// time. x @ w^T (A as stored, B transposed): M = 256 with (N, K) = (1024, 784) 0.90, (1024,
// 1024) 0.93, (768, 3072) 0.92, (768, 768) 0.99, (3072, 768) 1.00; M = 64, 128, 512 at K = N =
// 512-1024: 0.77, 0.95, 0.98; but M = 1024: 1.03. dy^T @ x (A transposed, K = 256 the batch):
// M = 1024 with N = 512-800: 0.85-0.89; but N = M: 0.99-1.02, N > M 1.04-1.40, and M = 3072
// 1.05. A @ B as stored: 0.99-1.01 at M = 256, K = N = 784-1024, 1.19-1.30 at K or N = 3072;
// but with a short K (dy @ w for a narrow layer) 0.41-0.53 at 256 x 1024 x 10-16, 0.62 / 0.73
// at K = 32 / 64, 0.69-0.91 at 512 x 4096 and 1024 x 1024 with K = 10, 1.00 at 2048 x 768 x 16.
// So the primitive only for those three families, where measured ahead; and above 2M
// multiply-adds (10-20 us), below which the two run alike and the primitive's creation
// (~0.2 ms per shape, then cached) would not pay for itself on shapes seen a few times. In the
// MLP step of bench_mlp_step (784-1024-1024-10, batch 256, one thread) the three large GEMMs
// that switch take 6.05 ms instead of 6.57 (medians of 300 steps each, alternating step by
// step), and dy @ w of the last layer (K = 10) 0.071 instead of 0.081.
constexpr int64_t kMinPrimitiveMacs = int64_t(2) << 20;

bool onednn_primitive_beats_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k) {
  if (m * n * k < kMinPrimitiveMacs) return false;
  if (!ta && tb) return m <= 512 && n * k <= (int64_t(1) << 22);
  if (ta && !tb) return k <= 512 && n < m && m * n <= (int64_t(1) << 20);
  if (!ta && !tb) return k <= 64;
  return false;
}

// ---- f32 / f64: straight to cblas ----

void blas_gemm(int64_t m, int64_t n, int64_t k, const float* a, BlasLayout la, const float* b,
               BlasLayout lb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, la.trans ? CblasTrans : CblasNoTrans,
              lb.trans ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), 1.0f, a, int(la.ld), b,
              int(lb.ld), beta, c, int(ldc));
}

void blas_gemm(int64_t m, int64_t n, int64_t k, const double* a, BlasLayout la, const double* b,
               BlasLayout lb, float beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, la.trans ? CblasTrans : CblasNoTrans,
              lb.trans ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), 1.0, a, int(la.ld), b,
              int(lb.ld), double(beta), c, int(ldc));
}

// ---- f32 x @ w^T with w's rows 4 KiB apart: computed as C^T ----
//
// sgemm's NoTrans x Trans path slows down when B's leading dimension is a multiple of 1024
// floats (4 KiB): packing walks B's rows at a stride that maps them onto a few cache sets.
// Measured on one thread with K = ld = 1024 or 2048 (a Linear layer of that width): M = 64
// ran at 70 GFLOP/s against 89-92 with the rows padded, M = 256 at 93 against 98-100; at
// M = 1024 the loss is about 1%. Computing C^T = B^T A^T instead packs B on the other side,
// at full speed, and costs one transposing pass over C (0.05-0.1 ms for 256 x 1024).
// C^T lives in a per-thread scratch buffer, kept between calls: at most kMaxTransposedC
// floats (8 MiB), above which (a vocabulary-sized output, say) the plain call is used.
constexpr int64_t kAliasedLd = 1024;
constexpr int64_t kMinRowsForTransposedC = 32, kMaxRowsForTransposedC = 512;
constexpr int64_t kMaxTransposedC = int64_t(1) << 21;

bool nt_with_aliased_b(const BlasLayout& la, const BlasLayout& lb, int64_t m, int64_t n) {
  return !la.trans && lb.trans && lb.ld % kAliasedLd == 0 && m >= kMinRowsForTransposedC &&
         m <= kMaxRowsForTransposedC && m * n <= kMaxTransposedC;
}

// C (m x n, rows ldc apart) = beta * C + T^T, for T (n x m, rows m apart): rows of C in
// blocks of 8 taken from 8 x 8 register transposes of T.
void add_transposed(const float* t, int64_t m, int64_t n, float beta, float* c, int64_t ldc,
                    int64_t i_begin, int64_t i_end) {
  // Row i of C from column j_begin on, one element at a time (the ragged edges).
  auto scalar_row = [&](int64_t i, int64_t j_begin) {
    for (int64_t j = j_begin; j < n; ++j)
      c[i * ldc + j] = (beta == 0.0f ? 0.0f : beta * c[i * ldc + j]) + t[j * m + i];
  };
  const __m256 vbeta = _mm256_set1_ps(beta);
  const int64_t n8 = n / 8 * 8;
  int64_t i0 = i_begin;
  for (; i0 + 8 <= i_end; i0 += 8) {
    for (int64_t j0 = 0; j0 < n8; j0 += 8) {
      __m256 r[8];
      load_transposed_8x8(t + j0 * m + i0, m, r);
      for (int ii = 0; ii < 8; ++ii) {
        float* cp = c + (i0 + ii) * ldc + j0;
        __m256 v = beta == 0.0f ? r[ii] : _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(cp), r[ii]);
        _mm256_storeu_ps(cp, v);
      }
    }
    for (int64_t i = i0; i < i0 + 8; ++i) scalar_row(i, n8);
  }
  for (int64_t i = i0; i < i_end; ++i) scalar_row(i, 0);
}

void sgemm_via_transposed_c(int64_t m, int64_t n, int64_t k, const float* a, BlasLayout la,
                            const float* b, BlasLayout lb, float beta, float* c, int64_t ldc) {
  thread_local std::vector<float> scratch;
  if (int64_t(scratch.size()) < m * n) scratch.resize(size_t(m * n));
  float* t = scratch.data();
  // T (n x m) = B^T (n x k: w as stored) @ A^T (A as stored, transposed by the flag).
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(m), int(k), 1.0f, b,
              int(lb.ld), a, int(la.ld), 0.0f, t, int(m));
  const int64_t grain = std::max<int64_t>(8, kMemoryBoundGrain / std::max<int64_t>(n, 1));
  parallel_for(0, (m + 7) / 8, (grain + 7) / 8, [&](int64_t b0, int64_t b1) {
    add_transposed(t, m, n, beta, c, ldc, b0 * 8, std::min(m, b1 * 8));
  });
}

template <class T>
void gemm_blas_kernel(const GemmArgs& g) {
  LOOM_CHECK(!g.bias || g.beta == 0.0f, "gemm: a bias needs beta = 0");
  if (g.bias && !(std::is_same_v<T, float> && use_onednn_f32()))
    return gemm_blas_kernel<T>(bias_into_c<T>(g));  // OpenBLAS takes no bias
  BlasLayout la = blas_layout(g.m, g.k, g.a_rs, g.a_cs);
  BlasLayout lb = blas_layout(g.k, g.n, g.b_rs, g.b_cs);
  LOOM_CHECK(la.ok && lb.ok, "gemm: operand strides not usable by BLAS; the front-end copies them");
  LOOM_CHECK(g.c_cs == 1 || g.n == 1, "gemm: C must have unit column stride");
  int64_t ldc = g.m == 1 ? std::max<int64_t>(g.n, 1) : g.c_rs;
  LOOM_CHECK(fits_int(g.m) && fits_int(g.n) && fits_int(g.k) && fits_int(la.ld) &&
                 fits_int(lb.ld) && fits_int(ldc),
             "gemm: sizes exceed BLAS's 32-bit integers");
  const T* a = static_cast<const T*>(g.a);
  const T* b = static_cast<const T*>(g.b);
  T* c = static_cast<T*>(g.c);
  if constexpr (std::is_same_v<T, float>) {
    if (const SkinnyKernel kernel = skinny_kernel_for(g);
        kernel != SkinnyKernel::none && (!use_onednn_f32() || skinny_beats_onednn(g, kernel))) {
      if (g.bias) return gemm_blas_kernel<T>(bias_into_c<T>(g));
      run_batched(g, [&](int64_t ao, int64_t bo, int64_t co) {
        skinny_sgemm(g, kernel, a + ao, b + bo, c + co);
      });
      return;
    }
    if (use_onednn_f32()) {
      run_split(g, [&](int64_t ao, int64_t bo, int64_t co, const Block& blk) {
        const int64_t mi = blk.i1 - blk.i0, nj = blk.j1 - blk.j0;
        const float* ab = a + ao + (la.trans ? blk.i0 : blk.i0 * la.ld);
        const float* bb = b + bo + (lb.trans ? blk.j0 * lb.ld : blk.j0);
        float* cb = c + co + blk.i0 * ldc + blk.j0;
        const float* bias = g.bias ? static_cast<const float*>(g.bias) + blk.j0 : nullptr;
        if (onednn_primitive_beats_sgemm(la.trans, lb.trans, mi, nj, g.k) &&
            onednn_matmul_f32(la.trans, lb.trans, mi, nj, g.k, ab, la.ld, bb, lb.ld, g.beta, cb,
                              ldc, bias))
          return;
        float beta = g.beta;
        if (bias) {  // dnnl_sgemm takes no bias: fill this block of C with it and add
          fill_bias_rows<float>(g, co, blk.i0, blk.i1, blk.j0, blk.j1);
          beta = 1.0f;
        }
        onednn_sgemm(la.trans, lb.trans, mi, nj, g.k, ab, la.ld, bb, lb.ld, beta, cb, ldc);
      });
      return;
    }
    if (nt_with_aliased_b(la, lb, g.m, g.n)) {
      run_batched(g, [&](int64_t ao, int64_t bo, int64_t co) {
        sgemm_via_transposed_c(g.m, g.n, g.k, a + ao, la, b + bo, lb, g.beta, c + co, ldc);
      });
      return;
    }
  }
  run_batched(g, [&](int64_t ao, int64_t bo, int64_t co) {
    blas_gemm(g.m, g.n, g.k, a + ao, la, b + bo, lb, g.beta, c + co, ldc);
  });
}

// ---- f16 / bf16: convert panels to f32, sgemm, round back ----

inline float to_f32(Half v) { return f16_to_f32(v.bits); }
inline float to_f32(BFloat16 v) { return bf16_to_f32(v.bits); }
template <class T>
inline T from_f32(float v);
template <>
inline Half from_f32<Half>(float v) { return Half{f32_to_f16(v)}; }
template <>
inline BFloat16 from_f32<BFloat16>(float v) { return BFloat16{f32_to_bf16(v)}; }

// n contiguous 16-bit values to f32. f16 -> f32 is exact, so F16C's conversion gives the
// same bits as half.h's; bf16 -> f32 is a shift that the compiler vectorises.
template <class T>
void to_f32_run(const T* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, Half>) {
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                    reinterpret_cast<const __m128i*>(src + i))));
  }
#endif
  for (; i < n; ++i) dst[i] = to_f32(src[i]);
}

// Loads a (rows, cols) block with strides (rs, cs) into dst as f32, keeping whichever
// direction has unit stride contiguous. Returns the cblas layout of dst.
template <class T>
BlasLayout load_block(const T* src, int64_t rows, int64_t cols, int64_t rs, int64_t cs,
                      float* dst) {
  if (cs == 1 || cols == 1) {
    for (int64_t i = 0; i < rows; ++i) {
      if (cs == 1) {
        to_f32_run(src + i * rs, dst + i * cols, cols);
      } else {
        dst[i * cols] = to_f32(src[i * rs]);
      }
    }
    return {true, false, std::max<int64_t>(cols, 1)};
  }
  if (rs == 1) {
    for (int64_t j = 0; j < cols; ++j) to_f32_run(src + j * cs, dst + j * rows, rows);
    return {true, true, std::max<int64_t>(rows, 1)};
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[i * cols + j] = to_f32(src[i * rs + j * cs]);
  return {true, false, std::max<int64_t>(cols, 1)};
}

// Per-thread f32 scratch, grown on demand and kept (pool threads reuse theirs).
struct LowpScratch {
  std::vector<float> a, b, c;
};
LowpScratch& lowp_scratch() {
  thread_local LowpScratch s;
  return s;
}

// One GEMM in 16-bit storage: for each N panel, for each M block, accumulate the K blocks
// into an f32 C block with sgemm, then round the block back. The B panel is converted once
// per N panel when K fits one block.
template <class T>
void gemm_lowp_one(const GemmArgs& g, const T* a, const T* b, T* c, bool onednn) {
  const int64_t m = g.m, n = g.n, k = g.k;
  const int64_t kb = std::min(k, kLowpBlockK);
  const int64_t nb = std::min(n, std::max<int64_t>(64, kLowpPanelElems / kb));
  const int64_t mb = std::min(m, kLowpBlockM);
  LowpScratch& s = lowp_scratch();
  if (int64_t(s.a.size()) < mb * kb) s.a.resize(size_t(mb * kb));
  if (int64_t(s.b.size()) < kb * nb) s.b.resize(size_t(kb * nb));
  if (int64_t(s.c.size()) < mb * nb) s.c.resize(size_t(mb * nb));
  const bool one_k_block = kb == k;
  for (int64_t j0 = 0; j0 < n; j0 += nb) {
    const int64_t nj = std::min(nb, n - j0);
    BlasLayout lb;
    if (one_k_block) lb = load_block(b + j0 * g.b_cs, k, nj, g.b_rs, g.b_cs, s.b.data());
    for (int64_t i0 = 0; i0 < m; i0 += mb) {
      const int64_t mi = std::min(mb, m - i0);
      float* cb = s.c.data();  // (mi, nj), row-major
      T* cblk = c + i0 * g.c_rs + j0 * g.c_cs;
      if (g.beta != 0.0f)
        for (int64_t i = 0; i < mi; ++i)
          for (int64_t j = 0; j < nj; ++j) cb[i * nj + j] = to_f32(cblk[i * g.c_rs + j * g.c_cs]);
      for (int64_t k0 = 0; k0 < k; k0 += kb) {
        const int64_t kk = std::min(kb, k - k0);
        if (!one_k_block)
          lb = load_block(b + k0 * g.b_rs + j0 * g.b_cs, kk, nj, g.b_rs, g.b_cs, s.b.data());
        BlasLayout la =
            load_block(a + i0 * g.a_rs + k0 * g.a_cs, mi, kk, g.a_rs, g.a_cs, s.a.data());
        float beta = k0 > 0 ? 1.0f : g.beta;
        if (onednn) {
          onednn_sgemm(la.trans, lb.trans, mi, nj, kk, s.a.data(), la.ld, s.b.data(), lb.ld, beta,
                       cb, nj);
        } else {
          blas_gemm(mi, nj, kk, s.a.data(), la, s.b.data(), lb, beta, cb, nj);
        }
      }
      for (int64_t i = 0; i < mi; ++i)
        for (int64_t j = 0; j < nj; ++j) cblk[i * g.c_rs + j * g.c_cs] = from_f32<T>(cb[i * nj + j]);
    }
  }
}

// ---- bf16 in oneDNN's bf16 matmul ----

// 8 x 8 16-bit transpose: dst row ii (8 values, dst_ld apart) = column ii of the 8 rows of
// src (src_ld apart), in three rounds of SSE2 unpacks.
inline void transpose_8x8_u16(const void* src, int64_t src_ld, void* dst, int64_t dst_ld) {
  const auto* s = static_cast<const uint16_t*>(src);
  auto* d = static_cast<uint16_t*>(dst);
  __m128i a[8], t[8], u[8];
  for (int r = 0; r < 8; ++r) a[r] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + r * src_ld));
  for (int r = 0; r < 4; ++r) {
    t[2 * r] = _mm_unpacklo_epi16(a[2 * r], a[2 * r + 1]);
    t[2 * r + 1] = _mm_unpackhi_epi16(a[2 * r], a[2 * r + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 0-3 (h = 0) and 4-7 (h = 1) of src
    u[4 * h + 0] = _mm_unpacklo_epi32(t[4 * h], t[4 * h + 2]);
    u[4 * h + 1] = _mm_unpackhi_epi32(t[4 * h], t[4 * h + 2]);
    u[4 * h + 2] = _mm_unpacklo_epi32(t[4 * h + 1], t[4 * h + 3]);
    u[4 * h + 3] = _mm_unpackhi_epi32(t[4 * h + 1], t[4 * h + 3]);
  }
  for (int q = 0; q < 4; ++q) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + (2 * q) * dst_ld), _mm_unpacklo_epi64(u[q], u[4 + q]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + (2 * q + 1) * dst_ld), _mm_unpackhi_epi64(u[q], u[4 + q]));
  }
}

// dst (rows x cols, row-major) = rows [r0, r1) of src (strides rs, cs), in 32 x 32 tiles, the
// inner loop along whichever side of src is contiguous; a transposed 16-bit source (rs == 1)
// goes through 8 x 8 register transposes (0.1 ms for 1024 x 1024 against ~2 ms element-wise).
template <class T>
void gather_rows(const T* src, int64_t cols, int64_t rs, int64_t cs, T* dst, int64_t r0,
                 int64_t r1) {
  constexpr int64_t kTile = 32;
  for (int64_t i0 = r0; i0 < r1; i0 += kTile) {
    const int64_t i1 = std::min(r1, i0 + kTile);
    for (int64_t j0 = 0; j0 < cols; j0 += kTile) {
      const int64_t j1 = std::min(cols, j0 + kTile);
      if (rs == 1) {
        int64_t i8 = i0;
        if constexpr (sizeof(T) == 2) {
          const int64_t j8_end = j0 + (j1 - j0) / 8 * 8;
          for (; i8 + 8 <= i1; i8 += 8) {
            for (int64_t j = j0; j < j8_end; j += 8)
              transpose_8x8_u16(src + i8 + j * cs, cs, dst + i8 * cols + j, cols);
            for (int64_t i = i8; i < i8 + 8; ++i)
              for (int64_t j = j8_end; j < j1; ++j) dst[i * cols + j] = src[i + j * cs];
          }
        }
        for (int64_t j = j0; j < j1; ++j)
          for (int64_t i = i8; i < i1; ++i) dst[i * cols + j] = src[i + j * cs];
      } else {
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t j = j0; j < j1; ++j) dst[i * cols + j] = src[i * rs + j * cs];
      }
    }
  }
}

// A (rows, cols) operand as oneDNN's matmul takes it, row-major with unit column stride: src
// itself when it is laid out so, else a copy in `scratch`. Sets ld.
template <class T>
const T* row_major(const T* src, int64_t rows, int64_t cols, int64_t rs, int64_t cs,
                   std::vector<T>& scratch, int64_t& ld) {
  if ((cs == 1 || cols == 1) && (rows == 1 || rs >= cols)) {
    ld = rows == 1 ? cols : rs;
    return src;
  }
  if (int64_t(scratch.size()) < rows * cols) scratch.resize(size_t(rows * cols));
  T* dst = scratch.data();
  const int64_t grain = std::max<int64_t>(32, kMemoryBoundGrain / std::max<int64_t>(cols, 1));
  parallel_for(0, rows, grain,
               [&](int64_t r0, int64_t r1) { gather_rows(src, cols, rs, cs, dst, r0, r1); });
  ld = cols;
  return dst;
}

// Returns false, having done nothing, when C's layout does not suit oneDNN.
bool gemm_bf16_onednn(const GemmArgs& g, const BFloat16* a, const BFloat16* b, BFloat16* c) {
  if (!((g.c_cs == 1 || g.n == 1) && (g.m == 1 || g.c_rs >= g.n))) return false;
  const int64_t ldc = g.m == 1 ? g.n : g.c_rs;
  for_each_gemm(g, [&](int64_t ao, int64_t bo, int64_t co, bool split) {
    thread_local std::vector<BFloat16> sa, sb;
    int64_t lda = 0, ldb = 0;
    const BFloat16* ap = row_major(a + ao, g.m, g.k, g.a_rs, g.a_cs, sa, lda);
    const BFloat16* bp = row_major(b + bo, g.k, g.n, g.b_rs, g.b_cs, sb, ldb);
    auto block = [&](const Block& blk) {
      const int64_t mi = blk.i1 - blk.i0, nj = blk.j1 - blk.j0;
      const BFloat16* ab = ap + blk.i0 * lda;
      const BFloat16* bb = bp + blk.j0;
      BFloat16* cb = c + co + blk.i0 * ldc + blk.j0;
      if (onednn_bf16_gemm(mi, nj, g.k, reinterpret_cast<const uint16_t*>(ab), lda,
                           reinterpret_cast<const uint16_t*>(bb), ldb, g.beta,
                           reinterpret_cast<uint16_t*>(cb), ldc))
        return;
      GemmArgs s = g;  // no bf16 kernel for this shape: convert to f32 panels
      s.m = mi, s.n = nj, s.a_rs = lda, s.a_cs = 1, s.b_rs = ldb, s.b_cs = 1, s.c_rs = ldc,
      s.c_cs = 1, s.batch_ndim = 0;
      gemm_lowp_one<BFloat16>(s, ab, bb, cb, true);
    };
    if (split) {
      split_over_pool(g.m, g.n, g.k, block);
    } else {
      block(Block{0, g.m, 0, g.n});
    }
  });
  return true;
}

template <class T>
void gemm_lowp_kernel(const GemmArgs& g) {
  if (g.bias) return gemm_lowp_kernel<T>(bias_into_c<T>(g));
  LOOM_CHECK(fits_int(g.m) && fits_int(g.n) && fits_int(g.k),
             "gemm: sizes exceed BLAS's 32-bit integers");
  const T* a = static_cast<const T*>(g.a);
  const T* b = static_cast<const T*>(g.b);
  T* c = static_cast<T*>(g.c);
  if constexpr (std::is_same_v<T, BFloat16>) {
    if (use_onednn_bf16() && gemm_bf16_onednn(g, a, b, c)) return;
  }
  if (use_onednn_f32()) {  // f32 panels in dnnl_sgemm, one thread per block of C
    run_split(g, [&](int64_t ao, int64_t bo, int64_t co, const Block& blk) {
      GemmArgs s = g;
      s.m = blk.i1 - blk.i0, s.n = blk.j1 - blk.j0, s.batch_ndim = 0;
      gemm_lowp_one<T>(s, a + ao + blk.i0 * g.a_rs, b + bo + blk.j0 * g.b_cs,
                       c + co + blk.i0 * g.c_rs + blk.j0 * g.c_cs, true);
    });
    return;
  }
  run_batched(g, [&](int64_t ao, int64_t bo, int64_t co) {
    gemm_lowp_one<T>(g, a + ao, b + bo, c + co, false);
  });
}

// ---- optional timing of every call (see set_gemm_timing) ----

std::atomic<bool> g_timing{false};
std::atomic<int64_t> g_timed_calls{0}, g_timed_ns{0};

template <GemmFn Kernel>
void timed(const GemmArgs& g) {
  if (!g_timing.load(std::memory_order_relaxed)) {
    Kernel(g);
    return;
  }
  const auto t0 = std::chrono::steady_clock::now();
  Kernel(g);
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now() - t0).count();
  g_timed_calls.fetch_add(1, std::memory_order_relaxed);
  g_timed_ns.fetch_add(int64_t(ns), std::memory_order_relaxed);
}

}  // namespace

const KernelTable<GemmFn>& gemm_table() {
  static const KernelTable<GemmFn> table = [] {
    KernelTable<GemmFn> t;
    t.set(DeviceType::cpu, DType::f64, &timed<&gemm_blas_kernel<double>>);
    t.set(DeviceType::cpu, DType::f32, &timed<&gemm_blas_kernel<float>>);
    t.set(DeviceType::cpu, DType::f16, &timed<&gemm_lowp_kernel<Half>>);
    t.set(DeviceType::cpu, DType::bf16, &timed<&gemm_lowp_kernel<BFloat16>>);
    return t;
  }();
  return table;
}

void set_gemm_timing(bool on) { g_timing.store(on, std::memory_order_relaxed); }

GemmTiming gemm_timing() {
  return {g_timed_calls.load(std::memory_order_relaxed),
          double(g_timed_ns.load(std::memory_order_relaxed)) * 1e-9};
}

void reset_gemm_timing() {
  g_timed_calls.store(0, std::memory_order_relaxed);
  g_timed_ns.store(0, std::memory_order_relaxed);
}

std::string gemm_backend_description() {
  const std::string onednn = onednn_version();
  if (use_onednn_bf16())
    return onednn + " f32 and bf16 (bf16 products, f32 accumulation), f16 as f32 panels; "
                    "OpenBLAS f64; loom's skinny f32 kernels";
  if (use_onednn_f32())
    return onednn + " f32, bf16/f16 as f32 panels; OpenBLAS f64; loom's skinny f32 kernels";
  return "OpenBLAS f32/f64, bf16/f16 as f32 panels; loom's skinny f32 kernels" +
         (onednn_available() ? std::string() : " (" + onednn + ")");
}

bool gemm_accepts(DType dtype, int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  if (is_low_precision(dtype)) return true;
  return blas_layout(rows, cols, rs, cs).ok;
}

}  // namespace loom::kernels::cpu
