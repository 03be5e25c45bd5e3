#include "kernels/cpu/gemm_skinny.h"

#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/parallel.h"
#include "core/error.h"

namespace loom::kernels::cpu {
namespace {

// A small dimension: at most this many rows of C, columns of C, or terms per dot product.
constexpr int64_t kSmall = 16;
// With M small, the rows kernel reads all of B once per block of kRowsMR rows of C: keep B
// within L2 so that the passes after the first are cheap.
constexpr int64_t kMaxRereadBBytes = int64_t(2) << 20;
// Work per parallel chunk, in multiply-adds (about 100 us on one core). Measured on the
// 5.2 MFLOP shapes of bench_gemm: split in two 1M-MAC chunks they ran 10-25% slower on 2
// threads than whole on one; waking the second thread costs more than it saves.
constexpr int64_t kChunkMacs = int64_t(4) << 20;

constexpr int kRowsMR = 6;   // rows kernel: C rows per register block (6 x 16 accumulators)
constexpr int kDotsMR = 4;   // dots kernel: C rows per register block (4 x 3 accumulators)
constexpr int kDotsNR = 3;   // dots kernel: C columns per register block
// The loops over a register block carry `#pragma GCC unroll`: unless they are unrolled, GCC
// keeps the accumulator arrays on the stack and stores them every iteration (the K = 10
// shape of bench_gemm took 131 us that way, 66 us unrolled).

// Lanes [0, count) of an 8-float vector, count in [0, 8].
inline __m256i lane_mask(int64_t count) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::clamp<int64_t>(count, 0, 8))), lanes);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// ---- rows: C[i, j0:j0+16] = sum_k A[i, k] * B[k, j0:j0+16], MR rows at a time ----

// Columns [j0, j0 + width) of rows [i0, i0 + MR), width <= 16 (== 16 when kFull). Strides
// are copied to locals and the masks exist only for the ragged last block, so that the
// 2 * MR accumulators, two B vectors and one broadcast fit the 16 ymm registers.
template <int MR, bool kFull>
void rows_block(const GemmArgs& g, const float* a, const float* b, float* c, int64_t i0,
                int64_t j0, int64_t width) {
  const int64_t k_end = g.k, a_rs = g.a_rs, a_cs = g.a_cs, b_rs = g.b_rs;
  __m256 acc[MR][2];
  #pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  const float* arow = a + i0 * a_rs;
  const float* bp = b + j0;
  for (int64_t k = 0; k < k_end; ++k, bp += b_rs, arow += a_cs) {
    __m256 b0, b1;
    if constexpr (kFull) {
      b0 = _mm256_loadu_ps(bp);
      b1 = _mm256_loadu_ps(bp + 8);
    } else {
      b0 = _mm256_maskload_ps(bp, lane_mask(width));
      b1 = _mm256_maskload_ps(bp + 8, lane_mask(width - 8));
    }
    #pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      __m256 av = _mm256_broadcast_ss(arow + r * a_rs);
      acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
    }
  }
  const __m256 beta = _mm256_set1_ps(g.beta);
  const __m256i m0 = lane_mask(width), m1 = lane_mask(width - 8);
  #pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    float* cp = c + (i0 + r) * g.c_rs + j0;
    if constexpr (kFull) {
      if (g.beta != 0.0f) {
        acc[r][0] = _mm256_fmadd_ps(beta, _mm256_loadu_ps(cp), acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(beta, _mm256_loadu_ps(cp + 8), acc[r][1]);
      }
      _mm256_storeu_ps(cp, acc[r][0]);
      _mm256_storeu_ps(cp + 8, acc[r][1]);
    } else {
      if (g.beta != 0.0f) {
        acc[r][0] = _mm256_fmadd_ps(beta, _mm256_maskload_ps(cp, m0), acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(beta, _mm256_maskload_ps(cp + 8, m1), acc[r][1]);
      }
      _mm256_maskstore_ps(cp, m0, acc[r][0]);
      _mm256_maskstore_ps(cp + 8, m1, acc[r][1]);
    }
  }
}

template <int MR>
void rows_strip(const GemmArgs& g, const float* a, const float* b, float* c, int64_t i0,
                int64_t j_begin, int64_t j_end) {
  int64_t j0 = j_begin;
  for (; j0 + 16 <= j_end; j0 += 16) rows_block<MR, true>(g, a, b, c, i0, j0, 16);
  if (j0 < j_end) rows_block<MR, false>(g, a, b, c, i0, j0, j_end - j0);
}

// Rows [i_begin, i_end) of C, columns [j_begin, j_end), in strips of kRowsMR rows.
void rows_range(const GemmArgs& g, const float* a, const float* b, float* c, int64_t i_begin,
                int64_t i_end, int64_t j_begin, int64_t j_end) {
  int64_t i0 = i_begin;
  for (; i0 + kRowsMR <= i_end; i0 += kRowsMR)
    rows_strip<kRowsMR>(g, a, b, c, i0, j_begin, j_end);
  switch (i_end - i0) {
    case 5: rows_strip<5>(g, a, b, c, i0, j_begin, j_end); break;
    case 4: rows_strip<4>(g, a, b, c, i0, j_begin, j_end); break;
    case 3: rows_strip<3>(g, a, b, c, i0, j_begin, j_end); break;
    case 2: rows_strip<2>(g, a, b, c, i0, j_begin, j_end); break;
    case 1: rows_strip<1>(g, a, b, c, i0, j_begin, j_end); break;
    default: break;
  }
}

// ---- dots: C[i, j] = dot(A[i, :], B[:, j]), both unit stride along K ----

template <int MR, int NR>
void dots_block(const GemmArgs& g, const float* a, const float* b, float* c, int64_t i0,
                int64_t j0) {
  __m256 acc[MR][NR];
  #pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
    #pragma GCC unroll 8
    for (int s = 0; s < NR; ++s) acc[r][s] = _mm256_setzero_ps();
  const int64_t k_end = g.k, a_rs = g.a_rs, b_cs = g.b_cs;
  const float* ap = a + i0 * a_rs;
  const float* bp = b + j0 * b_cs;
  int64_t k = 0;
  for (; k + 8 <= k_end; k += 8) {
    __m256 bv[NR];
    #pragma GCC unroll 8
    for (int s = 0; s < NR; ++s) bv[s] = _mm256_loadu_ps(bp + s * b_cs + k);
    #pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      __m256 av = _mm256_loadu_ps(ap + r * a_rs + k);
      #pragma GCC unroll 8
      for (int s = 0; s < NR; ++s) acc[r][s] = _mm256_fmadd_ps(av, bv[s], acc[r][s]);
    }
  }
  #pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
    #pragma GCC unroll 8
    for (int s = 0; s < NR; ++s) {
      float sum = hsum(acc[r][s]);
      for (int64_t kk = k; kk < k_end; ++kk) sum += ap[r * a_rs + kk] * bp[s * b_cs + kk];
      float& out = c[(i0 + r) * g.c_rs + (j0 + s) * g.c_cs];
      out = g.beta != 0.0f ? sum + g.beta * out : sum;
    }
}

template <int MR>
void dots_strip(const GemmArgs& g, const float* a, const float* b, float* c, int64_t i0) {
  int64_t j0 = 0;
  for (; j0 + kDotsNR <= g.n; j0 += kDotsNR) dots_block<MR, kDotsNR>(g, a, b, c, i0, j0);
  switch (g.n - j0) {
    case 2: dots_block<MR, 2>(g, a, b, c, i0, j0); break;
    case 1: dots_block<MR, 1>(g, a, b, c, i0, j0); break;
    default: break;
  }
}

void dots_range(const GemmArgs& g, const float* a, const float* b, float* c, int64_t i_begin,
                int64_t i_end) {
  int64_t i0 = i_begin;
  for (; i0 + kDotsMR <= i_end; i0 += kDotsMR) dots_strip<kDotsMR>(g, a, b, c, i0);
  switch (i_end - i0) {
    case 3: dots_strip<3>(g, a, b, c, i0); break;
    case 2: dots_strip<2>(g, a, b, c, i0); break;
    case 1: dots_strip<1>(g, a, b, c, i0); break;
    default: break;
  }
}

bool rows_layout(const GemmArgs& g) {
  return (g.b_cs == 1 || g.n == 1) && (g.c_cs == 1 || g.n == 1);
}
bool dots_layout(const GemmArgs& g) {
  return (g.a_cs == 1 || g.k == 1) && (g.b_rs == 1 || g.k == 1);
}

}  // namespace

SkinnyKernel skinny_kernel_for(const GemmArgs& g) {
  if (g.n <= kSmall && dots_layout(g)) return SkinnyKernel::dots;
  const bool rows = rows_layout(g) &&
                    (g.k <= kSmall ||
                     (g.m <= kSmall && g.k * g.n * int64_t(sizeof(float)) <= kMaxRereadBBytes));
  return rows ? SkinnyKernel::rows : SkinnyKernel::none;
}

void skinny_sgemm(const GemmArgs& g, SkinnyKernel kernel, const float* a, const float* b,
                  float* c) {
  LOOM_CHECK(kernel != SkinnyKernel::none, "skinny_sgemm: no kernel takes this GEMM");
  if (kernel == SkinnyKernel::dots) {
    // Split C's rows; a chunk of rows carries g.n * g.k multiply-adds per row.
    const int64_t grain = std::max<int64_t>(kDotsMR, kChunkMacs / std::max<int64_t>(1, g.n * g.k));
    parallel_for(0, g.m, grain, [&](int64_t i0, int64_t i1) { dots_range(g, a, b, c, i0, i1); });
    return;
  }
  if (g.m > kSmall) {  // many rows: split them
    const int64_t grain = std::max<int64_t>(kRowsMR, kChunkMacs / std::max<int64_t>(1, g.n * g.k));
    parallel_for(0, g.m, grain,
                 [&](int64_t i0, int64_t i1) { rows_range(g, a, b, c, i0, i1, 0, g.n); });
    return;
  }
  // Few rows: split C's columns in 16-wide blocks.
  const int64_t blocks = (g.n + 15) / 16;
  const int64_t grain = std::max<int64_t>(1, kChunkMacs / std::max<int64_t>(1, 16 * g.m * g.k));
  parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    rows_range(g, a, b, c, 0, g.m, b0 * 16, std::min(g.n, b1 * 16));
  });
}

}  // namespace loom::kernels::cpu
