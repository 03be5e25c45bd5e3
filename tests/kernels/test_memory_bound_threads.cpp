// The memory-bound kernels (elementwise, copies, reductions) split their work over the pool
// only above kMemoryBoundGrain elements per chunk. Above it, on 1, 2 and 3 threads, they must
// give bit-identical results: elementwise ops touch each element once, and the reductions
// choose their partial sums from the shape alone, never from the thread count. Below it, the
// same ops on small tensors must still agree (they run in the caller).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernels/cpu/parallel.h"
#include "kernels/threads_guard.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom {
namespace {


bool same_bits(const Tensor& a, const Tensor& b) {
  return a.sizes() == b.sizes() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw_data_ptr(), b.raw_data_ptr(), a.nbytes()) == 0;
}

// Every op of a training step's non-GEMM work, on (rows, 1024) f32 inputs.
std::vector<Tensor> run_ops(int64_t rows) {
  manual_seed(21);
  Tensor a = randn({rows, 1024}), b = randn({rows, 1024}), bias = randn({1024});
  Tensor r = native::unary(native::UnaryOp::relu, a);
  Tensor out = native::empty({rows, 1024}, DType::f32, Device::cpu());
  native::copy_(out, native::expand(native::reshape(bias, {1, 1024}), {rows, 1024}));
  return {native::binary(native::BinaryOp::add, a, b),
          r,
          native::unary_backward(native::UnaryOp::relu, b, a, r),
          out,
          native::sum(a, Shape{0}, false),
          native::sum(a, Shape{1}, false),
          native::sum(native::reshape(a, {-1}), Shape{0}, false)};
}

TEST(MemoryBoundKernels, GiveTheSameBitsOnAnyThreadCountAboveAndBelowTheGrain) {
  ThreadsGuard guard;
  // 1100 x 1024 = 4.3 grains (ragged); 64 x 1024 stays below one grain.
  ASSERT_GT(1100 * 1024, 4 * kernels::kMemoryBoundGrain);
  ASSERT_LT(64 * 1024, kernels::kMemoryBoundGrain);
  for (int64_t rows : {int64_t(1100), int64_t(64)}) {
    set_num_threads(1);
    std::vector<Tensor> one = run_ops(rows);
    for (int threads : {2, 3}) {
      set_num_threads(threads);
      std::vector<Tensor> many = run_ops(rows);
      ASSERT_EQ(one.size(), many.size());
      for (size_t i = 0; i < one.size(); ++i)
        EXPECT_TRUE(same_bits(one[i], many[i])) << "op " << i << ", rows " << rows << ", "
                                                << threads << " threads";
    }
  }
}

}  // namespace
}  // namespace loom
