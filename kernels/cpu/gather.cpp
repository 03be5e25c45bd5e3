// Gather / scatter-add / triangle kernels (see gather.h). Parallel over rows or (outer, inner)
// positions, never over the indices, so scatter-add has no races and a fixed summation order.
#include "kernels/cpu/gather.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/strided.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kGrainBytes = int64_t(1) << 16;  // bytes moved per parallel chunk, at least
constexpr int64_t kGrainElems = int64_t(1) << 15;  // element updates per parallel chunk

// dst[0:n] += src[0:n]; f16/bf16 go through f32 (the compiler vectorises the f32 case).
template <class T>
void add_run(T* dst, const T* src, int64_t n) {
  if constexpr (std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>) {
    for (int64_t i = 0; i < n; ++i)
      dst[i] = elem_cast<T>(elem_cast<float>(dst[i]) + elem_cast<float>(src[i]));
  } else if constexpr (std::is_same_v<T, bool>) {
    for (int64_t i = 0; i < n; ++i) dst[i] = dst[i] || src[i];
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
  }
}

}  // namespace

void index_gather(const void* src, void* dst, int64_t elem_size, int64_t outer, int64_t src_dim,
                  int64_t inner, const int64_t* index, int64_t n_index) {
  const int64_t row_bytes = inner * elem_size;
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  int64_t grain = std::max<int64_t>(1, kGrainBytes / std::max<int64_t>(row_bytes, 1));
  parallel_for(0, outer * n_index, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      int64_t o = r / n_index, j = r % n_index;
      std::memcpy(d + r * row_bytes, s + (o * src_dim + index[j]) * row_bytes, size_t(row_bytes));
    }
  });
}

void index_scatter_add(DType dtype, const void* src, void* dst, int64_t outer, int64_t dst_dim,
                       int64_t inner, const int64_t* index, int64_t n_index) {
  visit_dtype(dtype, [&](auto z) {
    using T = decltype(z);
    const T* s = static_cast<const T*>(src);
    T* d = static_cast<T*>(dst);
    // Split the (outer, inner) positions among threads: each position receives all its
    // updates from one thread, in index order, so there are no races and sums are
    // deterministic.
    int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(n_index, 1));
    parallel_for(0, outer * inner, grain, [&](int64_t b, int64_t e) {
      for (int64_t p = b; p < e;) {
        int64_t o = p / inner, c0 = p % inner;
        int64_t c1 = std::min(inner, c0 + (e - p));
        for (int64_t j = 0; j < n_index; ++j)
          add_run(d + (o * dst_dim + index[j]) * inner + c0, s + (o * n_index + j) * inner + c0,
                  c1 - c0);
        p += c1 - c0;
      }
    });
  });
}

void triangle(const void* src, void* dst, int64_t elem_size, int64_t batch, int64_t rows,
              int64_t cols, int64_t diagonal, bool lower) {
  const char* s = static_cast<const char*>(src);
  char* d = static_cast<char*>(dst);
  const int64_t row_bytes = cols * elem_size;
  int64_t grain = std::max<int64_t>(1, kGrainBytes / std::max<int64_t>(row_bytes, 1));
  parallel_for(0, batch * rows, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      int64_t i = r % rows;
      // Kept columns of row i: [0, i + diagonal] for tril, [i + diagonal, cols) for triu.
      int64_t keep_begin = lower ? 0 : std::clamp<int64_t>(i + diagonal, 0, cols);
      int64_t keep_end = lower ? std::clamp<int64_t>(i + diagonal + 1, 0, cols) : cols;
      char* out = d + r * row_bytes;
      const char* in = s + r * row_bytes;
      // Zero bytes are zero for every dtype (0.0, 0, false).
      std::memset(out, 0, size_t(row_bytes));
      if (keep_end > keep_begin)
        std::memcpy(out + keep_begin * elem_size, in + keep_begin * elem_size,
                    size_t((keep_end - keep_begin) * elem_size));
    }
  });
}

}  // namespace loom::kernels::cpu
