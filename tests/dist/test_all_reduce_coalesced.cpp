// ProcessGroup::all_reduce_coalesced_async between real processes, on both paths: shared
// memory (the parts are read straight into the slots) and Gloo (ProcessGroup's default:
// gathered into the output, then all-reduced). DDP's Reducer passes its gradients this way,
// some of them already the bucket's own slices, so both kinds of parts are mixed here.
//
// Element i of the concatenated input on rank r is (i % 13 - 6) * (r + 1): small integers,
// exact in f32/f64, so the expected sum is (i % 13 - 6) * world (world + 1) / 2.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "dist/forked_ranks.h"
#include "dist/shm_probe.h"
#include "dist/gloo_process_group.h"
#include "dist/init.h"
#include "dist/shm_all_reduce.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom::dist {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

std::shared_ptr<GlooProcessGroup> make_group(int rank, int world, int port, bool shared_memory) {
  return make_loopback_group(rank, world, port, 5s, /*debug=*/false, shared_memory);
}

double value(int rank, int64_t i) { return double(i % 13 - 6) * (rank + 1); }

// Parts of these sizes, the odd-numbered ones being the output's own slices (as DDP's
// gradients that already are bucket views). With chunk = the shared-memory slot's f32
// elements, parts straddle the chunk boundaries; Gloo has no chunks and gets small parts.
std::vector<int64_t> part_sizes(int64_t chunk) { return {5, chunk - 3, 0, 1, 9, 64, 11}; }

constexpr int64_t kShmChunk = int64_t(ShmAllReduce::kSlotBytes / sizeof(float));

void reduce_mixed_parts(int rank, int world, ProcessGroup& pg, DType dtype, dist::ReduceOp op,
                        int64_t chunk = kShmChunk) {
  std::vector<int64_t> sizes = part_sizes(chunk);
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  Tensor out = zeros({total}, dtype);
  std::vector<Tensor> parts;
  int64_t offset = 0;
  for (size_t k = 0; k < sizes.size(); ++k) {
    Tensor part = k % 2 ? native::slice(out, 0, offset, offset + sizes[k], 1)
                        : zeros({sizes[k]}, dtype);
    std::vector<double> v(size_t(sizes[k]));
    for (int64_t i = 0; i < sizes[k]; ++i) v[size_t(i)] = value(rank, offset + i);
    native::copy_(part, from_vector(v, Shape{sizes[k]}));
    parts.push_back(k == 5 ? native::reshape(part, {8, 8}) : part);  // any contiguous shape
    offset += sizes[k];
  }
  pg.all_reduce_coalesced_async(out, parts, op)->wait();
  std::vector<double> got = out.to_double_vector();
  const double scale = op == ReduceOp::avg ? (world + 1) / 2.0 : world * (world + 1) / 2.0;
  for (int64_t i = 0; i < total; ++i) {
    double want = double(i % 13 - 6) * scale;
    check(got[size_t(i)] == want, std::string(dtype_name(dtype)) + ": element " +
                                      std::to_string(i) + " is " + std::to_string(got[size_t(i)]) +
                                      ", expected " + std::to_string(want));
  }
}

void mixed_parts_over_shared_memory(int world) {
  expect_all_passed(run_ranks(
      world,
      [world](int rank, int port) {
        auto pg = make_group(rank, world, port, /*shared_memory=*/true);
        check(pg->shared_memory(), "shared memory is on for a same-host group");
        reduce_mixed_parts(rank, world, *pg, DType::f32, ReduceOp::avg);
        reduce_mixed_parts(rank, world, *pg, DType::f64, ReduceOp::sum);
        finish(*pg);
      },
      60s));
}

TEST(AllReduceCoalesced, MixedPartsOverSharedMemoryTwoRanks) {
  LOOM_SKIP_WITHOUT_SHM();
  mixed_parts_over_shared_memory(2);
}
TEST(AllReduceCoalesced, MixedPartsOverSharedMemoryThreeRanks) {
  LOOM_SKIP_WITHOUT_SHM();
  mixed_parts_over_shared_memory(3);
}

TEST(AllReduceCoalesced, MixedPartsOverGlooTwoRanks) {
  expect_all_passed(run_ranks(2, [](int rank, int port) {
    auto pg = make_group(rank, 2, port, /*shared_memory=*/false);
    check(!pg->shared_memory(), "Gloo path");
    reduce_mixed_parts(rank, 2, *pg, DType::f32, ReduceOp::avg, /*chunk=*/1000);
    reduce_mixed_parts(rank, 2, *pg, DType::bf16, ReduceOp::sum, /*chunk=*/1000);
    finish(*pg);
  }));
}

TEST(AllReduceCoalesced, BadArgumentsAreRefusedBeforeAnythingIsQueued) {
  expect_all_passed(run_ranks(2, [](int rank, int port) {
    auto pg = make_group(rank, 2, port, /*shared_memory=*/true);
    Tensor out = zeros({10});
    auto message = [&](const std::vector<Tensor>& parts, const Tensor& o) -> std::string {
      try {
        pg->all_reduce_coalesced_async(o, parts, ReduceOp::sum)->wait();
      } catch (const ValueError& e) {
        return e.what();
      }
      return "";
    };
    auto expect = [&](const std::string& msg, const std::string& part) {
      check(msg.find(part) != std::string::npos, "expected '" + part + "' in: " + msg);
    };
    expect(message({zeros({4}), zeros({5})}, out), "the parts hold 9 elements but the output has 10");
    expect(message({zeros({4}), zeros({6}, DType::f64)}, out), "part 1 is f64");
    // out[2:6] given as the first part: output's slice, but not at its own offset 0.
    expect(message({native::slice(out, 0, 2, 6, 1), zeros({6})}, out),
           "part 0 overlaps the output other than at its own offset 0");
    expect(message({native::transpose(zeros({2, 5}), 0, 1)}, out), "part 0 must be a defined, contiguous");
    expect(message({zeros({10})}, zeros({2, 5})), "contiguous 1-D");
    // Nothing was queued: the group still works, and both ranks agree on the next collective.
    Tensor t = full({3}, double(rank + 1));
    pg->all_reduce(t, ReduceOp::sum);
    check(t.to_double_vector() == std::vector<double>{3, 3, 3}, "group usable after refusals");
    finish(*pg);
  }));
}

}  // namespace
}  // namespace loom::dist
