// DDP, FSDP and deepspeed ZeRO-2 on 2 CPU ranks: step time and per-rank peak memory for the
// same GPT (nn/gpt), in one run, each next to the ZeRO paper's count and to the memory
// estimator's figure (fabric/memory_estimate.h).
//
// All three models are built from the same seed and live side by side in each rank, on one
// process group: the Fabric's strategy is a DeepSpeedStrategy (stage 2), which sets up the
// ZeRO-2 model; its base classes' own setup_module / backward set up and run the FSDP model
// (built on meta, sharded in units of one Block) and the DDP replica. ZeRO-3 runs on the FSDP
// machinery (fabric/deepspeed.h) with the same units, so the FSDP row is also ZeRO-3's. A step
// is forward, cross-entropy, backward, AdamW step, zero_grad, in 32-true. Rounds alternate
// between the modes so drift on a shared machine hits them alike; medians are reported, and
// FSDP's step over DDP's.
//
// Memory per rank and mode: the bytes the mode holds between steps (what the allocator's
// count grew by while the mode was built and took its warm-up step) plus the highest
// transient above that during its timed steps (the allocator's peak, reset before them, over
// the bytes held when they start). The ZeRO paper counts 16 bytes per parameter for
// mixed-precision Adam (2 + 2 + 12, divided by W from each term's stage on); f32 Adam is 16
// bytes too (4 + 4 + 8), split differently, and the paper leaves out activations and
// communication buffers, which the estimator counts.
//
// Napkin math for time: DDP all-reduces the gradients once per step, 2 (W-1)/W x P x 4 bytes
// on the wire per rank; FSDP all-gathers the parameters twice (forward, backward) and
// reduce-scatters the gradients once, 3 (W-1)/W x P x 4 bytes: 1.5x DDP's bytes, which the
// prefetch of the next unit's gather should hide behind compute (target: <= 1.25x).
//
//   bench_fsdp [--rounds 5] [--steps 3] [--layers 4] [--d 128] [--seq 64] [--batch 8]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "bench/bench_util.h"
#include "fabric/deepspeed.h"
#include "fabric/fabric.h"
#include "fabric/fsdp.h"
#include "fabric/memory_estimate.h"
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

enum class Kind { ddp, fsdp, zero2 };

struct Mode {
  const char* label = "";
  Kind kind = Kind::ddp;
  int paper_stage = 0;  // the ZeRO paper's stage with the same partitioning
  std::shared_ptr<nn::Module> model;
  std::shared_ptr<optim::Optimizer> opt;
  std::vector<double> times;
  int64_t held = 0;       // bytes held between steps
  int64_t transient = 0;  // highest allocator peak above the bytes held at the timed steps' start
  MemoryEstimate estimate;
};

}  // namespace

int main(int argc, char** argv) {
  Args args = parse(argc, argv);
  constexpr int64_t kVocab = 256;
  // stage3_wrap_module_types is the policy of the FSDP machinery underneath (fsdp's units).
  auto strategy = std::make_shared<DeepSpeedStrategy>(
      DeepSpeedOptions{.stage = 2, .stage3_wrap_module_types = {"Block"}});
  Fabric fabric({.accelerator = "cpu", .strategy = strategy, .devices = 2});
  fabric.launch();
  const int r = fabric.global_rank();
  nn::GPTConfig cfg{.vocab_size = kVocab,
                    .block_size = args.seq,
                    .n_layer = args.layers,
                    .n_head = 4,
                    .n_embd = args.d};
  FSDPStrategy& fsdp_strategy = *strategy;
  DDPStrategy& ddp_strategy = *strategy;

  Tensor idx = randint(0, kVocab, {args.batch, args.seq + 1});
  Tensor x = native::contiguous(native::slice(idx, 1, 0, args.seq, 1));
  Tensor y = native::contiguous(native::slice(idx, 1, 1, args.seq + 1, 1)).reshape({-1});

  std::vector<Mode> modes(3);
  modes[0].label = "ddp", modes[0].kind = Kind::ddp, modes[0].paper_stage = 0;
  modes[1].label = "fsdp", modes[1].kind = Kind::fsdp, modes[1].paper_stage = 3;
  modes[2].label = "zero-2", modes[2].kind = Kind::zero2, modes[2].paper_stage = 2;
  auto step = [&](Mode& m) {
    Tensor loss = cross_entropy((*m.model)(x).reshape({-1, kVocab}), y);
    switch (m.kind) {
      case Kind::ddp:
        ddp_strategy.DDPStrategy::backward(loss);
        break;
      case Kind::fsdp:
        fsdp_strategy.FSDPStrategy::backward(loss);
        break;
      case Kind::zero2:
        strategy->backward(loss);
        break;
    }
    m.opt->step();
    m.opt->zero_grad();
  };

  // Each mode is built and warmed up (AdamW's state, FSDP's forward order) in turn; what the
  // allocator's count grew by meanwhile is what the mode holds between steps.
  for (Mode& m : modes) {
    fabric.barrier();
    const int64_t before = memory_stats().current_bytes;
    fabric.seed_everything(1);
    MemoryEstimateOptions eo{.world_size = 2,
                             .optimizer = OptimizerKind::adamw,
                             .batch_size = args.batch,
                             .seq_len = args.seq};
    if (m.kind == Kind::fsdp) {
      std::shared_ptr<nn::GPT> sharded;
      {
        auto ctx = fsdp_strategy.FSDPStrategy::module_init_context(true);  // meta
        sharded = std::make_shared<nn::GPT>(cfg);
      }
      m.model = fsdp_strategy.FSDPStrategy::setup_module(sharded);
      m.opt = std::make_shared<optim::AdamW>(m.model->parameters(), 1e-3);
      eo.strategy = "fsdp";
      eo.fsdp = fsdp_strategy.fsdp_options();
    } else {
      auto model = std::make_shared<nn::GPT>(cfg);
      if (m.kind == Kind::ddp) {
        m.model = ddp_strategy.DDPStrategy::setup_module(model);
        m.opt = std::make_shared<optim::AdamW>(model->parameters(), 1e-3);
        eo.strategy = "ddp";
      } else {
        m.model = strategy->setup_module(model);
        m.opt =
            strategy->setup_optimizer(std::make_shared<optim::AdamW>(model->parameters(), 1e-3));
        eo.strategy = "deepspeed";
        eo.deepspeed = strategy->deepspeed_options();
      }
    }
    step(m);
    m.held = memory_stats().current_bytes - before;
    DefaultDeviceGuard meta(Device::meta());
    nn::GPT on_meta(cfg);
    m.estimate = estimate_memory(on_meta, eo);
  }

  for (int round = 0; round < args.rounds; ++round)
    for (Mode& m : modes) {
      fabric.barrier();
      reset_peak_memory_stats();
      const int64_t base = memory_stats().current_bytes;
      for (int s = 0; s < args.steps; ++s) {
        auto t = Clock::now();
        step(m);
        m.times.push_back(std::chrono::duration<double>(Clock::now() - t).count());
      }
      m.transient = std::max(m.transient, memory_stats().peak_bytes - base);
    }

  // Every rank's peaks, for rank 0 to print.
  Tensor mine = empty({int64_t(modes.size())}, DType::f64);
  for (size_t i = 0; i < modes.size(); ++i)
    mine.data_ptr<double>()[i] = double(modes[i].held + modes[i].transient);
  std::vector<double> peaks = fabric.all_gather(mine).reshape({-1}).to_vector<double>();
  if (r == 0) {
    const int64_t p = modes[0].estimate.num_parameters;
    std::printf(
        "bench_fsdp: %s; GPT %d layers, d %d, T %d, B %d per rank, %.2f M parameters, "
        "2 ranks, 32-true AdamW\n",
        cpu_capability_description().c_str(), args.layers, args.d, args.seq, args.batch, p / 1e6);
    std::printf("  %-7s %10s %12s %12s %12s %12s %14s\n", "mode", "step ms", "rank0 MB", "rank1 MB",
                "estimate MB", "est/meas", "ZeRO paper MB");
    for (size_t i = 0; i < modes.size(); ++i) {
      const Mode& m = modes[i];
      const double p0 = peaks[i], p1 = peaks[modes.size() + i];
      std::printf(
          "  %-7s %10.2f %12.3f %12.3f %12.3f %12.3f %14.3f  (paper stage %d; held "
          "between steps %.3f MB, estimate %.3f)\n",
          m.label, median(m.times) * 1e3, p0 / 1e6, p1 / 1e6, m.estimate.peak / 1e6,
          m.estimate.peak / std::max(p0, p1), zero_paper_bytes(p, m.paper_stage, 2) / 1e6,
          m.paper_stage, m.held / 1e6, m.estimate.between_steps / 1e6);
    }
    for (const Mode& m : modes) {
      const MemoryEstimate& e = m.estimate;
      std::printf(
          "  %-7s estimate at its peak (%s): parameters %.3f + optimizer %.3f + "
          "gradients %.3f + communication %.3f + activations %.3f MB\n",
          m.label, e.peak_phase.c_str(), e.parameters / 1e6, e.optimizer_state / 1e6,
          e.gradients / 1e6, e.communication / 1e6, e.activations / 1e6);
    }
    std::printf("  (zero-3 is the fsdp machinery with the same units: its row is fsdp's)\n");
    std::printf("  fsdp / ddp step time: %.2fx (target <= 1.25x); zero-2 / ddp: %.2fx\n",
                median(modes[1].times) / median(modes[0].times),
                median(modes[2].times) / median(modes[0].times));
  }
  fabric.barrier();
  return 0;
}
