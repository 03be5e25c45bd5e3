#include "kernels/cpu/copy.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/strided.h"
#include "kernels/cpu/transpose.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kGrain = kMemoryBoundGrain;  // see kernels/cpu/parallel.h

template <class To, class From>
void convert_run(const From* src, To* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = elem_cast<To>(src[i]);
}

// Square tiles of a transposing copy. 16 x 16: with rows 1 KiB or 4 KiB apart, a source
// tile's 16 lines fall into 4 sets of the 8-way L1 and stay there; 32 rows thrash it (2x
// slower).
constexpr int64_t kTile = 16;
constexpr int64_t kBlock = 128;

template <class To, class From>
void copy_block_tiled(char* dst, const char* src, const int64_t* dst_st, const int64_t* src_st,
                      int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  constexpr bool kVector = std::is_same_v<To, From> && sizeof(To) == 4;
  for (int64_t jb = j0; jb < j1; jb += kTile) {
    const int64_t je = std::min(jb + kTile, j1);
    for (int64_t ib = i0; ib < i1; ib += kTile) {
      const int64_t ie = std::min(ib + kTile, i1);
      if constexpr (kVector) {
        if (je - jb == kTile && ie - ib == kTile && src_st[0] % 4 == 0 && dst_st[1] % 4 == 0) {
          for (int64_t j = jb; j < je; j += 8)
            for (int64_t i = ib; i < ie; i += 8)
              transpose_8x8(reinterpret_cast<const float*>(src + i * src_st[0] + j * src_st[1]),
                            src_st[0] / 4,
                            reinterpret_cast<float*>(dst + j * dst_st[1] + i * dst_st[0]),
                            dst_st[1] / 4);
          continue;
        }
      }
      for (int64_t j = jb; j < je; ++j) {
        To* out = reinterpret_cast<To*>(dst + j * dst_st[1]) + ib;
        const char* in = src + j * src_st[1] + ib * src_st[0];
        for (int64_t i = ib; i < ie; ++i, in += src_st[0])
          *out++ = elem_cast<To>(*reinterpret_cast<const From*>(in));
      }
    }
  }
}

// dst[i] = src[i] over one plane of dims `a` (dst's innermost, contiguous in dst) and `b`
// (contiguous in src), rows [b_begin, b_end) of b. kTile x kTile tiles use every cache line
// of either side whole while it is in L1 (a plain row-by-row walk read each source line 16
// times: 1 MiB transposed took 0.36 ms, now 0.12); kBlock x kBlock blocks of tiles keep the
// pages touched at once (kBlock rows of each side) within the TLB for large planes.
template <class To, class From>
void copy_plane_tiled(char* dst, const char* src, int64_t rows_a, const int64_t* dst_st,
                      const int64_t* src_st, int64_t b_begin, int64_t b_end) {
  for (int64_t jo = b_begin; jo < b_end; jo += kBlock)
    for (int64_t io = 0; io < rows_a; io += kBlock)
      copy_block_tiled<To, From>(dst, src, dst_st, src_st, io, std::min(io + kBlock, rows_a), jo,
                                 std::min(jo + kBlock, b_end));
}

// A copy whose source is contiguous along another dim than its destination (a transpose,
// a permute) in tiles; false when the layouts do not have that form.
template <class To, class From>
bool copy_transposed(const CollapsedDims<2>& c, char* const* base) {
  constexpr int64_t dsize = sizeof(To), ssize = sizeof(From);
  if (c.ndim < 2 || c.st[0][0] != dsize || c.st[1][0] == ssize || c.sz[0] < kTile) return false;
  int b = -1;
  for (int d = 1; d < c.ndim; ++d)
    if (c.st[1][d] == ssize && c.sz[d] >= kTile) b = d;
  if (b < 0) return false;
  const int64_t dst_st[2] = {dsize, c.st[0][b]}, src_st[2] = {c.st[1][0], c.st[1][b]};
  const int64_t rows_a = c.sz[0], rows_b = c.sz[b];
  const int64_t grain = std::max<int64_t>(1, kMemoryBoundGrain / rows_a);  // rows of b
  for_each_outer<2>(c, base, 1, b, -1, [&](char** p) {
    parallel_for(0, rows_b, grain, [&](int64_t begin, int64_t end) {
      copy_plane_tiled<To, From>(p[0], p[1], rows_a, dst_st, src_st, begin, end);
    });
  });
  return true;
}

}  // namespace

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, size_t(n) * dtype_size(src_dtype));
    return;
  }
  visit_dtype(src_dtype, [&](auto s) {
    using From = decltype(s);
    visit_dtype(dst_dtype, [&](auto d) {
      using To = decltype(d);
      parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
        convert_run(static_cast<const From*>(src) + b, static_cast<To*>(dst) + b, e - b);
      });
    });
  });
}

void copy_strided(int64_t ndim, const int64_t* sizes, void* dst, DType dst_dtype,
                  const int64_t* dst_strides, const void* src, DType src_dtype,
                  const int64_t* src_strides) {
  std::vector<int64_t> ds(ndim), ss(ndim);
  int64_t dsize = int64_t(dtype_size(dst_dtype)), ssize = int64_t(dtype_size(src_dtype));
  for (int64_t i = 0; i < ndim; ++i) {
    ds[i] = dst_strides[i] * dsize;
    ss[i] = src_strides[i] * ssize;
  }
  char* base[2] = {static_cast<char*>(dst), const_cast<char*>(static_cast<const char*>(src))};
  const int64_t* strides[2] = {ds.data(), ss.data()};
  const CollapsedDims<2> dims = collapse_dims<2>(ndim, sizes, strides);
  if (dims.empty) return;
  visit_dtype(src_dtype, [&](auto s) {
    using From = decltype(s);
    visit_dtype(dst_dtype, [&](auto d) {
      using To = decltype(d);
      if (copy_transposed<To, From>(dims, base)) return;
      for_each_strided<2>(dims, base, [&](char** p, const int64_t* st, int64_t n) {
        if (st[0] == dsize && st[1] == ssize) {
          if constexpr (std::is_same_v<To, From>)
            std::memcpy(p[0], p[1], size_t(n) * sizeof(To));
          else
            convert_run(reinterpret_cast<const From*>(p[1]), reinterpret_cast<To*>(p[0]), n);
          return;
        }
        char* out = p[0];
        const char* in = p[1];
        for (int64_t i = 0; i < n; ++i, out += st[0], in += st[1])
          *reinterpret_cast<To*>(out) = elem_cast<To>(*reinterpret_cast<const From*>(in));
      });
    });
  });
}

void fill_strided(int64_t ndim, const int64_t* sizes, void* dst, DType dtype,
                  const int64_t* strides, double value) {
  std::vector<int64_t> bs(ndim);
  int64_t esize = int64_t(dtype_size(dtype));
  for (int64_t i = 0; i < ndim; ++i) bs[i] = strides[i] * esize;
  char* base[1] = {static_cast<char*>(dst)};
  const int64_t* st_arr[1] = {bs.data()};
  visit_dtype(dtype, [&](auto z) {
    using T = decltype(z);
    T v = from_double<T>(value);
    for_each_strided<1>(ndim, sizes, base, st_arr, [&](char** p, const int64_t* st, int64_t n) {
      if (st[0] == esize) {
        T* out = reinterpret_cast<T*>(p[0]);
        parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { std::fill(out + b, out + e, v); });
        return;
      }
      char* out = p[0];
      for (int64_t i = 0; i < n; ++i, out += st[0]) *reinterpret_cast<T*>(out) = v;
    });
  });
}

}  // namespace loom::kernels::cpu
