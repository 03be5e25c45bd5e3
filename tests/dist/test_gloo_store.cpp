// Gloo over the TCPStore adapter: two ranks (threads of this process) build a full mesh
// through GlooStore and all-reduce floats; each rank fills its buffer with rank + 1 so the
// closed-form result is sum_{r<W} (r + 1) = W (W + 1) / 2 in every element.
#include <gloo/allreduce.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/transport/tcp/device.h>
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "dist/gloo_store.h"
#include "core/error.h"

namespace loom::dist {
namespace {

using namespace std::chrono_literals;

void run_rank(int rank, int world, int port, std::vector<float>& out) {
  auto store = std::make_shared<TCPStore>("127.0.0.1", port, world, rank == 0, 5s);
  GlooStore gloo_store(store, "pg/0");
  gloo::transport::tcp::attr attr;
  attr.hostname = "127.0.0.1";
  auto device = gloo::transport::tcp::CreateDevice(attr);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, world);
  context->setTimeout(5s);
  context->connectFullMesh(gloo_store, device);
  out.assign(1000, static_cast<float>(rank + 1));
  gloo::AllreduceOptions opts(context);
  opts.setOutput(out.data(), out.size());
  opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
  opts.setReduceFunction(
      static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
  opts.setTag(7);
  gloo::allreduce(opts);
  // Keep the store (rank 0 hosts it) alive until every rank is done with it.
  store_barrier(*store, "end", world, 5s);
}

TEST(GlooStore, AllreduceThroughTcpStore) {
  constexpr int kWorld = 2;
  int port = find_free_port();
  std::vector<std::vector<float>> results(kWorld);
  std::vector<std::string> errors(kWorld);
  std::vector<std::thread> ranks;
  for (int r = 0; r < kWorld; ++r) {
    ranks.emplace_back([&, r] {
      try {
        run_rank(r, kWorld, port, results[r]);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  for (int r = 0; r < kWorld; ++r) {
    ASSERT_EQ(errors[r], "") << "rank " << r;
    ASSERT_EQ(results[r].size(), 1000u);
    for (float v : results[r]) ASSERT_EQ(v, kWorld * (kWorld + 1) / 2.0f);
  }
}

TEST(GlooStore, PrefixSeparatesGroupsAndWaitTimesOut) {
  auto store = std::make_shared<TCPStore>("127.0.0.1", 0, 0, true, 2s);
  GlooStore a(store, "pg/a");
  GlooStore b(store, "pg/b");
  a.set("addr", {'x', 'y'});
  EXPECT_EQ(a.get("addr"), (std::vector<char>{'x', 'y'}));
  EXPECT_EQ(store->get_string("pg/a/addr"), "xy");
  EXPECT_FALSE(store->check({"pg/b/addr"}));
  EXPECT_THROW(b.wait({"addr"}, 100ms), RuntimeError);
  EXPECT_THROW(GlooStore(nullptr, "p"), ValueError);
}

}  // namespace
}  // namespace loom::dist
