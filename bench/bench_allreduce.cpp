// all_reduce through dist::ProcessGroup (GlooProcessGroup) vs Gloo called directly, and the
// group's shared-memory fast path (dist/shm_all_reduce.h) vs its Gloo TCP path, for
// all_reduce, all_gather and reduce_scatter.
//
// Two ranks: this process (rank 0) forks rank 1 before any thread exists; they rendezvous over
// loopback through init_process_group's TCPStore. The direct path builds its own Gloo context
// over the same store and reduces the same buffer with the same options (functional allreduce,
// RING, gloo::sum<float>, a fresh tag each call), so the difference is the group's overhead:
// validation, the queue hop to the worker thread and the Work handshake. "ProcessGroup tcp"
// is a group with shared_memory = false, "ProcessGroup shm" the default group (both ranks on
// this host: shared memory on). Also measured: the cost of debug mode (Note [Debug
// collectives]) on a small 4 KiB all_reduce.
//
// Napkin math for shm with 2 ranks and N bytes: each rank copies N into its slot, reads 2 * N/2
// and writes N/2 reducing its half, writes N/2 back to its slot, copies N/2 out of the peer's
// slot: ~6.5 N of memory traffic per rank, no kernel copies. TCP loopback: each byte crosses
// the kernel twice per direction (send copy + receive copy) plus the reduction.
//
// `bench_allreduce reduce_scatter [ranks]` (default 4) measures instead reduce_scatter over TCP
// on that many ranks: the direct exchange against the all_reduce-and-copy it replaced, time
// and the bytes the loopback carried (run_reduce_scatter_rank). `bench_allreduce hierarchical`
// times all_reduce on 4 ranks laid out as 2 nodes of 2, hierarchical against all-TCP
// (run_hierarchical_rank).
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
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dist/gloo_process_group.h"
#include "dist/gloo_store.h"
#include "dist/init.h"
#include "dist/shm_all_reduce.h"
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

struct Row {
  const char* size;
  const char* path;
  const char* baseline;
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
  dbg.shared_memory = false;  // the overhead of debug mode alone, against "ProcessGroup tcp"
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

  // The same pairs of ranks, the shared-memory fast path off: Gloo's TCP loopback behind the
  // same queue and Work as `pg`.
  GlooOptions tcp;
  tcp.timeout = 120s;
  tcp.group_name = "tcp";
  tcp.debug = false;
  tcp.shared_memory = false;
  GlooProcessGroup pg_tcp(rank, 2, store, tcp);
  auto* pg_gloo = dynamic_cast<GlooProcessGroup*>(pg.get());
  if (pg_gloo == nullptr || !pg_gloo->shared_memory() || pg_tcp.shared_memory()) {
    throw std::runtime_error("expected the default group on shared memory and 'tcp' without");
  }

  struct Path {
    const char* name;
    const char* baseline;  // the row it is compared with, at the same size
    std::function<void(Tensor&)> run;
  };
  const char* kTcp = "ProcessGroup tcp";
  const std::vector<Path> paths{
      {"gloo direct", kTcp,
       [&](Tensor& t) { gloo_direct(t.data_ptr<float>(), size_t(t.numel())); }},
      {"ProcessGroup tcp", kTcp, [&](Tensor& t) { pg_tcp.all_reduce(t); }},
      {"ProcessGroup shm", kTcp, [&](Tensor& t) { pg->all_reduce(t); }},
      {"ProcessGroup debug", kTcp, [&](Tensor& t) { pg_debug.all_reduce(t); }},
      // The sharding collectives on the same input: all_gather returns 2 x the input,
      // reduce_scatter half of it.
      {"all_gather tcp", "all_gather tcp", [&](Tensor& t) { pg_tcp.all_gather(t); }},
      {"all_gather shm", "all_gather tcp", [&](Tensor& t) { pg->all_gather(t); }},
      {"reduce_scatter tcp", "reduce_scatter tcp", [&](Tensor& t) { pg_tcp.reduce_scatter(t); }},
      {"reduce_scatter shm", "reduce_scatter tcp", [&](Tensor& t) { pg->reduce_scatter(t); }},
  };
  std::vector<Row> rows;
  // Each size runs its paths interleaved, call by call, so drift on this shared machine hits
  // them alike. `which` indexes `paths`.
  auto measure = [&](const char* label, int64_t n, int reps, std::vector<size_t> which) {
    Tensor t = zeros({n}, DType::f32);
    for (int i = 0; i < 3; ++i)
      for (size_t w : which) paths[w].run(t);
    std::vector<std::vector<double>> times(which.size());
    for (int i = 0; i < reps; ++i)
      for (size_t k = 0; k < which.size(); ++k)
        times[k].push_back(time_once([&] { paths[which[k]].run(t); }));
    for (size_t k = 0; k < which.size(); ++k)
      rows.push_back({label, paths[which[k]].name, paths[which[k]].baseline, stats(times[k]),
                      double(n) * 4.0});
  };
  // 64 MiB: bandwidth-bound. 7.5 MB: the MLP example's gradients (about 1.9 M f32), what
  // DDP reduces every step. 4 KiB: latency-bound; debug mode (on TCP) adds the store
  // round-trips of the fingerprint exchange.
  measure("64 MiB", 16 << 20, 15, {0, 1, 2});
  measure("7.5 MB", 7500000 / 4, 40, {1, 2});
  measure("4 KiB", 1024, 400, {0, 1, 2, 3});
  measure("16 MiB", 4 << 20, 20, {4, 5, 6, 7});
  store_barrier(*store, "bench/end", 2, 60s);
  if (rank != 0) return;

  std::printf("all_reduce f32 sum, 2 processes on one host; per call on rank 0\n");
  std::printf("tcp: Gloo RING over loopback; shm: dist/shm_all_reduce (slots of %zu KiB)\n",
              ShmAllReduce::kSlotBytes >> 10);
  std::printf("%-8s %-20s %13s %13s %12s %13s\n", "size", "path", "median", "min",
              "algbw GB/s", "vs its tcp");
  auto find = [&](const char* size, const char* path) -> const Row& {
    for (const Row& r : rows)
      if (std::string(r.size) == size && std::string(r.path) == path) return r;
    throw std::runtime_error("no row");
  };
  for (const Row& r : rows) {
    const Row& base = find(r.size, r.baseline);
    std::printf("%-8s %-20s %10.1f us %10.1f us %12.3f %12.2fx\n", r.size, r.path,
                r.seconds.median * 1e6, r.seconds.min * 1e6, r.bytes / r.seconds.median / 1e9,
                base.seconds.median / r.seconds.median);
  }
  std::printf("ProcessGroup tcp / direct bandwidth at 64 MiB (medians): %.1f%%\n",
              100.0 * find("64 MiB", "gloo direct").seconds.median /
                  find("64 MiB", "ProcessGroup tcp").seconds.median);
  for (const char* op : {"all_gather", "reduce_scatter"}) {
    std::printf("%s shm speed-up over tcp at 16 MiB of input (medians): %.2fx\n", op,
                find("16 MiB", (std::string(op) + " tcp").c_str()).seconds.median /
                    find("16 MiB", (std::string(op) + " shm").c_str()).seconds.median);
  }
  for (const char* size : {"64 MiB", "7.5 MB", "4 KiB"}) {
    std::printf("shm speed-up over tcp at %s (medians): %.2fx\n", size,
                find(size, "ProcessGroup tcp").seconds.median /
                    find(size, "ProcessGroup shm").seconds.median);
  }
  std::printf("debug-mode overhead at 4 KiB: median %+.1f us, min %+.1f us per call\n",
              (find("4 KiB", "ProcessGroup debug").seconds.median -
               find("4 KiB", "ProcessGroup tcp").seconds.median) * 1e6,
              (find("4 KiB", "ProcessGroup debug").seconds.min -
               find("4 KiB", "ProcessGroup tcp").seconds.min) * 1e6);
}

// Bytes this network namespace's loopback has sent so far (/proc/net/dev, "lo:" transmit).
double loopback_tx_bytes() {
  std::FILE* f = std::fopen("/proc/net/dev", "r");
  if (f == nullptr) return 0;
  char line[512];
  double tx = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    std::string l(line);
    const size_t colon = l.find(':');
    if (colon == std::string::npos || l.substr(0, colon).find("lo") == std::string::npos) continue;
    if (l.substr(0, colon).find_first_not_of(" lo") != std::string::npos) continue;
    double v[16] = {};
    if (std::sscanf(l.c_str() + colon + 1,
                    "%lf %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf %lf", &v[0],
                    &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11],
                    &v[12], &v[13], &v[14], &v[15]) >= 9)
      tx = v[8];
  }
  std::fclose(f);
  return tx;
}

// Mode "reduce_scatter [ranks]": reduce_scatter over TCP (shared memory off, as across hosts)
// as the direct exchange of dist/gloo_reduce_scatter.h against what it replaced, an all_reduce
// of a copy of the input and a copy of this rank's block, on `world` ranks of this host. Time
// per call on rank 0 (interleaved, medians) and the bytes the loopback carried per call, all
// ranks together (the store's few bytes included), read from /proc/net/dev.
void run_reduce_scatter_rank(int rank, int world, int port) {
  ProcessGroupOptions o;
  o.rank = rank;
  o.world_size = world;
  o.master_port = port;
  o.timeout = 120s;
  o.debug = false;
  o.shared_memory = false;
  auto pg = init_process_group(o);
  auto store = store_of(*pg);
  const int64_t block = (16 << 20) / 4 / world;  // 16 MiB of f32 input in all
  Tensor in = zeros({world * block}, DType::f32);
  Tensor out = zeros({block}, DType::f32);
  Tensor scratch = zeros({world * block}, DType::f32);
  auto run_direct = [&] {
    Tensor r = pg->reduce_scatter(in.view({world, block}));
    (void)r;
  };
  auto run_old = [&] {
    std::memcpy(scratch.data_ptr<float>(), in.data_ptr<float>(), size_t(world * block) * 4);
    pg->all_reduce(scratch);
    std::memcpy(out.data_ptr<float>(), scratch.data_ptr<float>() + rank * block, size_t(block) * 4);
  };
  for (int i = 0; i < 3; ++i) run_direct(), run_old();
  constexpr int kReps = 15;
  std::vector<double> t_direct, t_old;
  for (int i = 0; i < kReps; ++i) {
    t_direct.push_back(time_once(run_direct));
    t_old.push_back(time_once(run_old));
  }
  // Bytes: each path alone between barriers, so the counter sees only its traffic.
  double bytes[2] = {0, 0};
  for (int path = 0; path < 2; ++path) {
    store_barrier(*store, "bench/rs/bytes" + std::to_string(path), world, 60s);
    const double before = loopback_tx_bytes();
    for (int i = 0; i < kReps; ++i) path == 0 ? run_direct() : run_old();
    store_barrier(*store, "bench/rs/bytes_end" + std::to_string(path), world, 60s);
    bytes[path] = (loopback_tx_bytes() - before) / kReps;
  }
  store_barrier(*store, "bench/end", world, 60s);
  if (rank != 0) return;
  const Stats d = stats(t_direct), a = stats(t_old);
  const double input = double(world * block) * 4;
  std::printf("reduce_scatter f32 sum over TCP (shared memory off), %d ranks on one host, %.0f MiB "
              "input per rank; per call on rank 0\n",
              world, input / (1 << 20));
  std::printf("%-34s %12s %12s %16s %16s\n", "path", "median", "min", "loopback bytes",
              "x input / rank");
  std::printf("%-34s %9.2f ms %9.2f ms %16.0f %16.2f\n", "direct exchange (now)", d.median * 1e3,
              d.min * 1e3, bytes[0], bytes[0] / world / input);
  std::printf("%-34s %9.2f ms %9.2f ms %16.0f %16.2f\n", "all_reduce + copy (before)",
              a.median * 1e3, a.min * 1e3, bytes[1], bytes[1] / world / input);
  std::printf("time before / now (medians): %.2fx; bytes before / now: %.2fx (expected "
              "2 (n-1)/n / ((n-1)/n) = 2)\n",
              a.median / d.median, bytes[1] / bytes[0]);
}

// Mode "hierarchical": 4 ranks on this host laid out as 2 "nodes" of 2 (GlooOptions::node_key),
// all_reduce f32 sum hierarchically (shared memory in each node, leaders over TCP loopback)
// against all over TCP (shared memory off), interleaved call by call; medians on rank 0. The
// loopback stands in for the network: it is faster than a real one, so the ratio here
// understates what keeping node-local traffic off the wire saves across hosts.
void run_hierarchical_rank(int rank, int world, int port) {
  ProcessGroupOptions o;
  o.rank = rank;
  o.world_size = world;
  o.master_port = port;
  o.timeout = 120s;
  o.debug = false;
  o.shared_memory = false;
  auto tcp = init_process_group(o);
  GlooOptions h;
  h.timeout = 120s;
  h.group_name = "hier";
  h.debug = false;
  h.node_key = rank < world / 2 ? "node-a" : "node-b";
  GlooProcessGroup hier(rank, world, store_of(*tcp), h);
  if (!hier.hierarchical()) throw std::runtime_error("expected a hierarchical group");
  std::vector<std::pair<std::string, Stats>> rows;
  for (int64_t n : {int64_t(1024), int64_t(512 << 10), int64_t(4 << 20)}) {
    Tensor t = zeros({n}, DType::f32);
    const int reps = n <= 1024 ? 300 : n <= (512 << 10) ? 40 : 12;
    for (int i = 0; i < 3; ++i) hier.all_reduce(t), tcp->all_reduce(t);
    std::vector<double> th, tt;
    for (int i = 0; i < reps; ++i) {
      th.push_back(time_once([&] { hier.all_reduce(t); }));
      tt.push_back(time_once([&] { tcp->all_reduce(t); }));
    }
    const std::string size = n == 1024 ? "4 KiB" : n == (512 << 10) ? "2 MiB" : "16 MiB";
    rows.push_back({size + " hierarchical", stats(th)});
    rows.push_back({size + " all-TCP", stats(tt)});
  }
  store_barrier(*store_of(*tcp), "bench/end", world, 60s);
  if (rank != 0) return;
  std::printf("all_reduce f32 sum, %d ranks as 2 nodes of %d on one host (TCP = loopback); per "
              "call on rank 0\n",
              world, world / 2);
  std::printf("%-22s %12s %12s %14s\n", "size / path", "median", "min", "TCP / hier");
  for (size_t i = 0; i < rows.size(); i += 2) {
    for (size_t k = i; k < i + 2; ++k)
      std::printf("%-22s %9.1f us %9.1f us %13.2fx\n", rows[k].first.c_str(),
                  rows[k].second.median * 1e6, rows[k].second.min * 1e6,
                  k == i ? rows[i + 1].second.median / rows[i].second.median : 1.0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const bool reduce_scatter = argc > 1 && std::string(argv[1]) == "reduce_scatter";
  const bool hierarchical = argc > 1 && std::string(argv[1]) == "hierarchical";
  if (argc > 1 && !reduce_scatter && !hierarchical) {
    std::fprintf(stderr, "usage: bench_allreduce [reduce_scatter [ranks] | hierarchical]\n");
    return 2;
  }
  const int world = reduce_scatter ? (argc > 2 ? std::atoi(argv[2]) : 4) : hierarchical ? 4 : 2;
  if (world < 2 || world > 16) {
    std::fprintf(stderr, "bench_allreduce: ranks must be in 2..16\n");
    return 2;
  }
  const int port = find_free_port();
  std::vector<pid_t> children;
  int rank = 0;
  for (int r = 1; r < world; ++r) {
    pid_t child = fork();
    if (child < 0) {
      std::perror("fork");
      return 1;
    }
    if (child == 0) {
      rank = r;
      children.clear();
      break;
    }
    children.push_back(child);
  }
  int rc = 0;
  try {
    if (reduce_scatter) run_reduce_scatter_rank(rank, world, port);
    else if (hierarchical) run_hierarchical_rank(rank, world, port);
    else run_rank(rank, port);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: %s\n", rank, e.what());
    rc = 1;
  }
  if (rank != 0) _exit(rc);
  for (pid_t child : children) {
    int status = 0;
    waitpid(child, &status, 0);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) rc = 1;
  }
  return rc;
}
