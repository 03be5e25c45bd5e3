// all_reduce through dist::ProcessGroup (GlooProcessGroup) vs Gloo called directly.
//
// Two ranks: this process (rank 0) forks rank 1 before any thread exists; they rendezvous over
// loopback through init_process_group's TCPStore. The direct path builds its own Gloo context
// over the same store and reduces the same buffer with the same options (functional allreduce,
// RING, gloo::sum<float>, a fresh tag each call), so the difference is the group's overhead:
// validation, the queue hop to the worker thread and the Work handshake. Also measured: the
// cost of debug mode (Note [Debug collectives]) on a small 4 KiB all_reduce.
//
// Not Google Benchmark: its runner would drive one process and not know about the peer. Both
// ranks run the same fixed schedule; rank 0 times each call and prints the medians. Bandwidth
// is algorithm bandwidth, bytes / time (as nccl-tests' algbw).
#include <gloo/allreduce.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/transport/tcp/device.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "dist/gloo_process_group.h"
#include "dist/gloo_store.h"
#include "dist/init.h"
#include "dist/socket.h"
#include "tensor/factories.h"

namespace {

using namespace loom;
using namespace loom::dist;
using namespace std::chrono_literals;

double time_once(const std::function<void()>& fn) {
  auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Stats {
  double median = 0;
  double min = 0;
};

Stats stats(std::vector<double> times) {
  std::sort(times.begin(), times.end());
  return {times[times.size() / 2], times.front()};
}

Stats repeat(int reps, const std::function<void()>& fn) {
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) times.push_back(time_once(fn));
  return stats(std::move(times));
}

struct Row {
  const char* size;
  const char* path;
  Stats seconds;
  double bytes;
};

void run_rank(int rank, int port) {
  ProcessGroupOptions o;
  o.rank = rank;
  o.world_size = 2;
  o.master_port = port;
  o.timeout = 120s;
  o.debug = false;
  auto pg = init_process_group(o);
  auto store = store_of(*pg);
  GlooOptions dbg;
  dbg.timeout = 120s;
  dbg.group_name = "debug";
  dbg.debug = true;
  GlooProcessGroup pg_debug(rank, 2, store, dbg);

  GlooStore gloo_store(store, "bench/direct");
  gloo::transport::tcp::attr attr;
  attr.hostname = "127.0.0.1";
  auto device = gloo::transport::tcp::CreateDevice(attr);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, 2);
  context->setTimeout(120s);
  context->connectFullMesh(gloo_store, device);
  uint32_t tag = 0;
  auto gloo_direct = [&](float* p, size_t n) {
    gloo::AllreduceOptions opts(context);
    opts.setOutput(p, n);
    opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
    opts.setReduceFunction(
        static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    opts.setTag(++tag);
    opts.setTimeout(120s);
    gloo::allreduce(opts);
  };

  std::vector<Row> rows;
  // 64 MiB: the two paths interleaved so drift on this shared machine hits both alike.
  {
    constexpr int64_t kN = 16 << 20;
    constexpr int kReps = 15;
    Tensor big = zeros({kN}, DType::f32);
    float* p = big.data_ptr<float>();
    for (int i = 0; i < 2; ++i) {
      gloo_direct(p, kN);
      pg->all_reduce(big);
    }
    std::vector<double> direct, group;
    for (int i = 0; i < kReps; ++i) {
      direct.push_back(time_once([&] { gloo_direct(p, kN); }));
      group.push_back(time_once([&] { pg->all_reduce(big); }));
    }
    rows.push_back({"64 MiB", "gloo direct", stats(direct), kN * 4.0});
    rows.push_back({"64 MiB", "ProcessGroup", stats(group), kN * 4.0});
  }
  // 4 KiB: latency-bound; debug mode adds the store round-trips of the fingerprint exchange.
  {
    constexpr int64_t kN = 1024;
    constexpr int kReps = 400;
    Tensor small = zeros({kN}, DType::f32);
    float* p = small.data_ptr<float>();
    for (int i = 0; i < 20; ++i) {
      gloo_direct(p, kN);
      pg->all_reduce(small);
      pg_debug.all_reduce(small);
    }
    Stats d = repeat(kReps, [&] { gloo_direct(p, kN); });
    Stats g = repeat(kReps, [&] { pg->all_reduce(small); });
    Stats dbg_s = repeat(kReps, [&] { pg_debug.all_reduce(small); });
    rows.push_back({"4 KiB", "gloo direct", d, kN * 4.0});
    rows.push_back({"4 KiB", "ProcessGroup", g, kN * 4.0});
    rows.push_back({"4 KiB", "ProcessGroup debug", dbg_s, kN * 4.0});
  }
  store_barrier(*store, "bench/end", 2, 60s);
  if (rank != 0) return;

  std::printf("all_reduce f32 sum, 2 processes over loopback, RING; per call on rank 0\n");
  std::printf("%-8s %-20s %13s %13s %12s %10s\n", "size", "path", "median", "min",
              "algbw GB/s", "vs direct");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const Row& base = (i < 2) ? rows[0] : rows[2];
    std::printf("%-8s %-20s %10.1f us %10.1f us %12.3f %9.1f%%\n", r.size, r.path,
                r.seconds.median * 1e6, r.seconds.min * 1e6, r.bytes / r.seconds.median / 1e9,
                100.0 * base.seconds.median / r.seconds.median);
  }
  std::printf("ProcessGroup / direct bandwidth at 64 MiB (medians): %.1f%%\n",
              100.0 * rows[0].seconds.median / rows[1].seconds.median);
  std::printf("debug-mode overhead at 4 KiB: median %+.1f us, min %+.1f us per call\n",
              (rows[4].seconds.median - rows[3].seconds.median) * 1e6,
              (rows[4].seconds.min - rows[3].seconds.min) * 1e6);
}

}  // namespace

int main() {
  const int port = find_free_port();
  pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  const int rank = child == 0 ? 1 : 0;
  int rc = 0;
  try {
    run_rank(rank, port);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    rc = 1;
  }
  if (child == 0) _exit(rc);
  int status = 0;
  waitpid(child, &status, 0);
  if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) rc = 1;
  return rc;
}
