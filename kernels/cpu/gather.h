// Gather, scatter-add and triangle masks over contiguous CPU buffers: the kernels behind
// embedding, index_select, index_add and tril/triu.
//
// Every buffer is seen as (outer, dim, inner): `dim` is the indexed dimension, `inner` the
// contiguous elements after it. Indices are i64, already validated by the front-end (which
// also makes operands contiguous). Deliberately not here: shape checks and dtype promotion.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace loom::kernels::cpu {

// dst (outer, n_index, inner)[o, j, :] = src (outer, src_dim, inner)[o, index[j], :].
// Any dtype: rows are copied as bytes.
void index_gather(const void* src, void* dst, int64_t elem_size, int64_t outer, int64_t src_dim,
                  int64_t inner, const int64_t* index, int64_t n_index);

// dst (outer, dst_dim, inner)[o, index[j], :] += src (outer, n_index, inner)[o, j, :], in
// index order, so repeated indices add up. f16/bf16 add in f32 and round per update.
void index_scatter_add(DType dtype, const void* src, void* dst, int64_t outer, int64_t dst_dim,
                       int64_t inner, const int64_t* index, int64_t n_index);

// dst = src with the elements of each (rows, cols) matrix outside the kept triangle zeroed.
// lower: keep j - i <= diagonal (tril); else keep j - i >= diagonal (triu).
void triangle(const void* src, void* dst, int64_t elem_size, int64_t batch, int64_t rows,
              int64_t cols, int64_t diagonal, bool lower);

}  // namespace loom::kernels::cpu
