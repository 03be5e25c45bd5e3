// f32 GEMMs with one small dimension, without BLAS.
//
// OpenBLAS packs both operands into panels before its micro-kernel runs. When M, N or K is
// 16 or less that packing is most of the work: a training step's last layer (256 x 1024 by
// 1024 x 10, and its two backward GEMMs) runs at 45-70 GFLOP/s in sgemm against ~100 for a
// square GEMM on one core. These kernels read the operands where they lie instead:
//   - rows: C rows are sums of B rows scaled by A's entries, for K <= 16 (a rank-K update)
//     or M <= 16 (few rows of C, each a pass over B), when B and C have unit column stride;
//   - dots: each C entry is one dot product along K, for N <= 16, when A has unit column
//     stride and B unit row stride (B is a transposed weight, as in Linear's forward).
// Everything else goes to BLAS (kernels/cpu/gemm.cpp).
#pragma once

#include <cstdint>

#include "kernels/cpu/gemm.h"

namespace loom::kernels::cpu {

// Which kernel takes this GEMM (g's sizes and strides; batch dims are ignored), if any.
enum class SkinnyKernel { none, rows, dots };
SkinnyKernel skinny_kernel_for(const GemmArgs& g);

// One GEMM of g's sizes and strides at these operand pointers: C = A @ B + beta * C (C is
// not read when beta is 0), by `kernel` = skinny_kernel_for(g), not none.
void skinny_sgemm(const GemmArgs& g, SkinnyKernel kernel, const float* a, const float* b,
                  float* c);

}  // namespace loom::kernels::cpu
