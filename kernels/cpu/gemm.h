// GEMM on the CPU: C = A @ B (+ beta * C), batched, through OpenBLAS.
//
// Operands are raw pointers with a row and a column stride each (in elements), so a
// transposed view of a contiguous matrix reaches cblas as a transposition flag and a leading
// dimension, with no copy. f32/f64 call sgemm/dgemm directly; f16/bf16 convert A and B to f32
// in panels (never whole-tensor copies), run sgemm per panel and round the f32 block of C back.
// Integer dtypes have no kernel (PyTorch has one on the CPU; loom does not need it).
//
// Deliberately not here: shape inference, broadcasting of batch dims and the choice of
// folding (tensor/native_matmul.cpp); the front-end hands over already-expanded batch dims.
#pragma once

#include <cstdint>

#include "kernels/dispatch.h"

namespace loom::kernels::cpu {

// One (batched) GEMM: for every batch index b, C_b (M, N) = A_b (M, K) @ B_b (K, N) + beta * C_b.
// Element (i, j) of A_b lives at a[off_a(b) + i * a_rs + j * a_cs]; likewise for B and C.
// Batch offsets come from `batch_ndim` batch dims with sizes `batch_sizes` and per-operand
// batch strides (0 for a broadcast dim). M, N, K > 0; C must not alias A or B.
struct GemmArgs {
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t a_rs = 0, a_cs = 0;
  const void* b = nullptr;
  int64_t b_rs = 0, b_cs = 0;
  void* c = nullptr;
  int64_t c_rs = 0, c_cs = 0;
  // 0 overwrites C; 1 adds to it.
  float beta = 0.0f;
  // Optional, with beta = 0: n values of C's dtype at unit stride, added to every row of every
  // C_b: C_b = A_b @ B_b + bias (the Linear layer's bias). oneDNN's matmul primitive adds it
  // in the GEMM; the other kernels first fill C's rows with it and run with beta = 1.
  const void* bias = nullptr;
  int64_t batch_ndim = 0;
  const int64_t* batch_sizes = nullptr;
  const int64_t* a_batch_strides = nullptr;
  const int64_t* b_batch_strides = nullptr;
  const int64_t* c_batch_strides = nullptr;
};

using GemmFn = void (*)(const GemmArgs&);

// The gemm kernels per (device, dtype): f64, f32, f16, bf16 on the CPU.
const KernelTable<GemmFn>& gemm_table();

// Whether the gemm kernel of `dtype` reads a (rows, cols) operand with these strides as it
// is. BLAS needs one unit stride and the other at least the extent of the unit-stride dim;
// the f16/bf16 kernels gather any strides while converting. The front-end copies an operand
// to contiguous when this is false.
bool gemm_accepts(DType dtype, int64_t rows, int64_t cols, int64_t rs, int64_t cs);

// Wall time spent inside the CPU gemm kernels (BLAS and loom's own), for profiling how a
// training step splits between GEMMs and everything else (bench_mlp_step reports it). Off by
// default: a disabled call costs one relaxed atomic load. Calls from any thread add up.
struct GemmTiming {
  int64_t calls = 0;
  double seconds = 0;
};
void set_gemm_timing(bool on);
GemmTiming gemm_timing();  // totals since the last reset
void reset_gemm_timing();

}  // namespace loom::kernels::cpu
