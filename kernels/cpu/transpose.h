// Register transposes of 8 x 8 blocks of 4-byte elements, shared by the tiled copy
// (kernels/cpu/copy.cpp) and the GEMM that computes C^T (kernels/cpu/gemm.cpp).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace loom::kernels::cpu {

// The 8 x 8 block at src (rows src_ld floats apart) transposed into r[0..8): r[j] holds
// column j of the block. Eight loads and three shuffle stages.
inline void load_transposed_8x8(const float* src, int64_t src_ld, __m256 r[8]) {
  __m256 t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_ld);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
  for (int i = 0; i < 8; ++i) r[i] = t[i];
}

// dst (rows dst_ld apart) = the 8 x 8 block at src transposed.
inline void transpose_8x8(const float* src, int64_t src_ld, float* dst, int64_t dst_ld) {
  __m256 r[8];
  load_transposed_8x8(src, src_ld, r);
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + i * dst_ld, r[i]);
}

}  // namespace loom::kernels::cpu
