// FSDP against DDP on 2 CPU ranks: step time and per-rank peak memory for the same GPT
// (nn/gpt), in one run, through Fabric.
//
// Both models are built from the same seed. The FSDP one is built on meta and sharded in
// units of one Block (FSDPOptions{.wrap_module_types = {"Block"}}); the DDP one is the same
// GPT wrapped by DDP's own setup_module on the same process group. A step is forward,
// cross-entropy, backward, AdamW step, zero_grad. Rounds alternate between the two so drift
// on a shared machine hits both alike; medians are reported, and FSDP's step over DDP's.
//
// Napkin math: DDP all-reduces the gradients once per step, 2 (W-1)/W x P x 4 bytes on the
// wire per rank; FSDP all-gathers the parameters twice (forward, backward) and
// reduce-scatters the gradients once, 3 (W-1)/W x P x 4 bytes: 1.5x DDP's bytes, which the
// prefetch of the next unit's gather should hide behind compute. Memory (the ZeRO paper's
// count for mixed-precision Adam is 16 bytes per parameter; here f32 Adam is 16 too:
// parameter 4, gradient 4, two moments 8): DDP holds 16 P per rank, FSDP 16 P / W plus the
// largest unit gathered and its gradient.
//
//   bench_fsdp [--rounds 5] [--steps 3] [--layers 4] [--d 128] [--seq 64] [--batch 8]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "bench/bench_util.h"
#include "fabric/fabric.h"
#include "fabric/fsdp.h"
#include "kernels/cpu/capability.h"
#include "loom.h"
#include "nn/gpt.h"
#include "tensor/allocator.h"

namespace {

using namespace loom;
using Clock = std::chrono::steady_clock;

struct Args {
  int rounds = 5, steps = 3, layers = 4, d = 128, seq = 64, batch = 8;
};

Args parse(int argc, char** argv) {
  Args a;
  a.rounds = bench::int_flag(argc, argv, "--rounds", a.rounds);
  a.steps = bench::int_flag(argc, argv, "--steps", a.steps);
  a.layers = bench::int_flag(argc, argv, "--layers", a.layers);
  a.d = bench::int_flag(argc, argv, "--d", a.d);
  a.seq = bench::int_flag(argc, argv, "--seq", a.seq);
  a.batch = bench::int_flag(argc, argv, "--batch", a.batch);
  return a;
}

using bench::median;

struct Mode {
  std::shared_ptr<nn::Module> model;
  std::shared_ptr<optim::Optimizer> opt;
  std::vector<double> times;
  int64_t peak = 0;  // allocator peak above the bytes live before the steps (transient)
  // Bytes that persist between steps on this rank: parameters (shards under fsdp) and the
  // optimizer's state, counted from the tensors (both modes live in this one process, so
  // the allocator's totals mix them).
  int64_t persistent() const {
    int64_t n = 0;
    for (const Tensor& p : opt->param_groups()[0].params) {
      n += int64_t(p.nbytes());
      if (const optim::ParamState* st = opt->state(p))
        for (const auto& [_, t] : st->buffers) n += int64_t(t.nbytes());
    }
    return n;
  }
};

}  // namespace

int main(int argc, char** argv) {
  Args args = parse(argc, argv);
  auto strategy = std::make_shared<FSDPStrategy>(FSDPOptions{.wrap_module_types = {"Block"}});
  Fabric fabric({.accelerator = "cpu", .strategy = strategy, .devices = 2});
  fabric.launch();
  const int r = fabric.global_rank();
  nn::GPTConfig cfg{.vocab_size = 256, .block_size = args.seq, .n_layer = args.layers,
                    .n_head = 4, .n_embd = args.d};

  // FSDP: built on meta, shards only.
  fabric.seed_everything(1);
  std::shared_ptr<nn::GPT> sharded;
  {
    auto ctx = fabric.init_module();
    sharded = std::make_shared<nn::GPT>(cfg);
  }
  Mode fsdp;
  auto fm = fabric.setup_module(sharded);
  fsdp.model = fm;
  fsdp.opt = fabric.setup_optimizers(std::make_shared<optim::AdamW>(fm->parameters(), 1e-3));

  // DDP on the same process group: DDPStrategy's own wrap of a full replica.
  manual_seed(1);
  auto replica = std::make_shared<nn::GPT>(cfg);
  DDPStrategy& ddp_strategy = *strategy;
  Mode ddp;
  ddp.model = ddp_strategy.DDPStrategy::setup_module(replica);
  ddp.opt = std::make_shared<optim::AdamW>(replica->parameters(), 1e-3);

  Tensor idx = randint(0, 256, {args.batch, args.seq + 1});
  Tensor x = native::contiguous(native::slice(idx, 1, 0, args.seq, 1));
  Tensor y = native::contiguous(native::slice(idx, 1, 1, args.seq + 1, 1)).reshape({-1});
  auto step = [&](Mode& m, bool is_fsdp) {
    Tensor loss = cross_entropy((*m.model)(x).reshape({-1, 256}), y);
    if (is_fsdp) fabric.backward(loss);
    else ddp_strategy.DDPStrategy::backward(loss);
    m.opt->step();
    m.opt->zero_grad();
  };
  auto run = [&](Mode& m, bool is_fsdp, bool timed) {
    fabric.barrier();
    reset_peak_memory_stats();
    int64_t base = memory_stats().current_bytes;
    for (int s = 0; s < args.steps; ++s) {
      auto t = Clock::now();
      step(m, is_fsdp);
      if (timed) m.times.push_back(std::chrono::duration<double>(Clock::now() - t).count());
    }
    m.peak = std::max(m.peak, memory_stats().peak_bytes - base);
  };
  run(fsdp, true, false);  // warm-up: AdamW's state, the forward order
  run(ddp, false, false);
  for (int round = 0; round < args.rounds; ++round) {
    run(fsdp, true, true);
    run(ddp, false, true);
  }
  if (r == 0) {
    int64_t p = replica->num_parameters();
    std::printf("bench_fsdp: %s; GPT %d layers, d %d, T %d, B %d per rank, %.2f M parameters, 2 ranks\n",
                cpu_capability_description().c_str(), args.layers, args.d, args.seq, args.batch, p / 1e6);
    std::printf("  ddp   step %8.2f ms   parameters + Adam state %7.2f MB (12 P = %.2f)   "
                "transient peak %7.2f MB\n",
                median(ddp.times) * 1e3, ddp.persistent() / 1e6, 12.0 * p / 1e6, ddp.peak / 1e6);
    std::printf("  fsdp  step %8.2f ms   parameters + Adam state %7.2f MB (12 P / 2 = %.2f)   "
                "transient peak %7.2f MB (gathered units, gradients, activations)\n",
                median(fsdp.times) * 1e3, fsdp.persistent() / 1e6, 6.0 * p / 1e6, fsdp.peak / 1e6);
    std::printf("  fsdp / ddp step time: %.2fx (target <= 1.25x)\n", median(fsdp.times) / median(ddp.times));
  }
  fabric.barrier();
  return 0;
}
