// GEMMs through oneDNN (Debian's libdnnl 2.6), for CPUs with AVX-512 (docs/design.md "CPU
// capabilities"): f32 through dnnl_sgemm, bf16 through a matmul primitive whose JIT kernel
// multiplies bf16 pairs with vdpbf16ps and accumulates in f32 (AVX512-BF16 or AMX).
//
// Threading: oneDNN's runtime here is OpenMP, whose workers spin after each parallel region.
// loom has one thread budget (kernels/cpu/parallel.h), so every oneDNN call runs on one
// thread (omp_set_num_threads(1) in each calling thread, so OpenMP never starts a team) and
// kernels/cpu/gemm.cpp splits a large GEMM over loom's pool, one oneDNN call per block.
// Each call is deterministic, and so is the split at a fixed thread count.
//
// Every function here runs only when onednn_available(): built with LOOM_WITH_ONEDNN and the
// OpenMP entry point found in the process (else nothing could keep oneDNN single-threaded).
#pragma once

#include <cstdint>
#include <string>

namespace loom::kernels::cpu {

bool onednn_available();
// "oneDNN 2.6.3" or why not available.
std::string onednn_version();

// Row-major C (m x n, ldc) = A @ B + beta * C with A (m x k) read transposed when ta (then
// stored k x m), B likewise; lda/ldb the leading dimensions as stored. One thread.
void onednn_sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

// bf16 row-major, unit column strides: C (m x n, ldc) = A (m x k, lda) @ B (k x n, ldb) +
// beta * C, products of bf16 pairs accumulated in f32 and C rounded to bf16 once. One
// thread. Returns false (and does nothing) when oneDNN has no kernel for this shape.
bool onednn_bf16_gemm(int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda,
                      const uint16_t* b, int64_t ldb, float beta, uint16_t* c, int64_t ldc);

// f32 through oneDNN's matmul primitive (its brgemm kernel), which beats dnnl_sgemm by 5-20%
// where one dimension is at most 512 (kernels/cpu/gemm.cpp says where loom calls it): C (m x
// n, ldc) = A @ B + beta * C (+ bias, a row of n broadcast over C's rows, when not null), A
// and B as in onednn_sgemm. One thread. Returns false (and does nothing) when oneDNN has no
// brgemm kernel for this shape. Primitives are created once per shape and cached.
bool onednn_matmul_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a,
                       int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                       const float* bias = nullptr);

// How many bf16 (f32) matmul primitives were created (each shape once: tests check the cache).
int64_t onednn_primitives_created();
int64_t onednn_f32_primitives_created();

}  // namespace loom::kernels::cpu
