#include "kernels/cpu/copy.h"

#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/strided.h"

namespace loom::kernels::cpu {
namespace {

constexpr int64_t kGrain = kMemoryBoundGrain;  // see kernels/cpu/parallel.h

template <class To, class From>
void convert_run(const From* src, To* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = elem_cast<To>(src[i]);
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
  visit_dtype(src_dtype, [&](auto s) {
    using From = decltype(s);
    visit_dtype(dst_dtype, [&](auto d) {
      using To = decltype(d);
      for_each_strided<2>(ndim, sizes, base, strides, [&](char** p, const int64_t* st, int64_t n) {
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
