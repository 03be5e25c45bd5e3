// Per-rank memory of training a GPT (nn/gpt) under each strategy and world size, from
// loom::estimate_memory (fabric/memory_estimate.h): the model is built on meta, so a model of
// any size costs nothing to estimate. Next to each row, the ZeRO paper's count for
// mixed-precision Adam (16 bytes per parameter: 2 + 2 + 12, each term divided by W from its
// stage on) for comparison; it leaves out activations and communication buffers.
//
//   estimate_memory [--layers 12] [--d 768] [--heads 12] [--vocab 50304] [--block 1024]
//                   [--batch 8] [--seq 1024] [--precision bf16-mixed] [--optimizer adamw]
//                   [--world 1,2,4,8] [--bucket-mb 25]
#include <CLI/CLI.hpp>
#include <cstdio>

#include "fabric/memory_estimate.h"
#include "loom.h"
#include "nn/gpt.h"

using namespace loom;

namespace {

double mb(int64_t bytes) { return double(bytes) / (1024.0 * 1024.0); }

OptimizerKind optimizer_kind(const std::string& name) {
  if (name == "sgd") return OptimizerKind::sgd;
  if (name == "sgd_momentum") return OptimizerKind::sgd_momentum;
  if (name == "adam") return OptimizerKind::adam;
  if (name == "adamw") return OptimizerKind::adamw;
  throw ValueError("--optimizer: unknown '" + name + "'; use sgd, sgd_momentum, adam or adamw");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Estimate per-rank training memory of a GPT across strategies and world sizes"};
  nn::GPTConfig cfg{
      .vocab_size = 50304, .block_size = 1024, .n_layer = 12, .n_head = 12, .n_embd = 768};
  int64_t batch = 8, seq = 0;
  std::string precision = "bf16-mixed", optimizer = "adamw";
  std::vector<int> worlds{1, 2, 4, 8};
  double bucket_mb = 25.0;
  app.add_option("--layers", cfg.n_layer, "transformer blocks");
  app.add_option("--d", cfg.n_embd, "channels (n_embd)");
  app.add_option("--heads", cfg.n_head, "attention heads");
  app.add_option("--vocab", cfg.vocab_size, "vocabulary size");
  app.add_option("--block", cfg.block_size, "longest sequence (block_size)");
  app.add_option("--batch", batch, "sequences per rank");
  app.add_option("--seq", seq, "tokens per sequence (default: --block)");
  app.add_option("--precision", precision, "32-true, bf16-mixed, 16-mixed, bf16-true");
  app.add_option("--optimizer", optimizer, "sgd, sgd_momentum, adam, adamw");
  app.add_option("--world", worlds, "world sizes")->delimiter(',');
  app.add_option("--bucket-mb", bucket_mb, "DDP and ZeRO bucket size (MiB)");
  CLI11_PARSE(app, argc, argv);
  if (seq == 0) seq = cfg.block_size;

  try {
    const OptimizerKind kind = optimizer_kind(optimizer);  // a bad name fails before any output
    std::shared_ptr<nn::GPT> model;
    {
      DefaultDeviceGuard meta(Device::meta());  // shapes only: no parameter bytes
      model = std::make_shared<nn::GPT>(cfg);
    }
    std::printf(
        "GPT: %lld layers, d %lld, %lld heads, vocab %lld: %.2f M parameters; %s, %s; "
        "batch %lld x %lld tokens per rank (activations: %s)\n",
        (long long)cfg.n_layer, (long long)cfg.n_embd, (long long)cfg.n_head,
        (long long)cfg.vocab_size, model->num_parameters() / 1e6, precision.c_str(),
        optimizer.c_str(), (long long)batch, (long long)seq, "nn::GPT's saved tensors");
    std::printf(
        "MiB per rank; peak = the step's high-water mark (its parts at that moment); "
        "ZeRO = the paper's 16 bytes/parameter split 2+2+12\n\n");
    std::printf("%-12s %3s %10s %10s %10s %10s %10s %10s %12s %10s %10s\n", "strategy", "W",
                "params", "optimizer", "grads", "comm", "activ.", "peak", "peak phase",
                "largest u.", "ZeRO");
    struct Row {
      const char* label;
      const char* strategy;
      int stage;
    };
    const Row rows[] = {{"single", "single", 0},    {"ddp", "ddp", 0},
                        {"fsdp", "fsdp", 0},        {"zero-1", "deepspeed", 1},
                        {"zero-2", "deepspeed", 2}, {"zero-3", "deepspeed", 3}};
    for (int w : worlds) {
      for (const Row& row : rows) {
        if ((w == 1) != (std::string(row.strategy) == "single")) continue;
        MemoryEstimateOptions o{.strategy = row.strategy,
                                .world_size = w,
                                .precision = precision,
                                .optimizer = kind,
                                .batch_size = batch,
                                .seq_len = seq};
        o.ddp.bucket_cap_mb = bucket_mb;
        o.fsdp.wrap_module_types = {"Block"};
        o.deepspeed.stage = row.stage == 0 ? 2 : row.stage;
        o.deepspeed.reduce_bucket_mb = o.deepspeed.allgather_bucket_mb = bucket_mb;
        o.deepspeed.stage3_wrap_module_types = {"Block"};
        MemoryEstimate e = estimate_memory(*model, o);
        int paper_stage = row.stage == 0 && std::string(row.strategy) == "fsdp" ? 3 : row.stage;
        std::printf("%-12s %3d %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f %12s %10.1f %10.1f\n",
                    row.label, w, mb(e.parameters), mb(e.optimizer_state), mb(e.gradients),
                    mb(e.communication), mb(e.activations), mb(e.peak), e.peak_phase.c_str(),
                    mb(e.largest_unit_gathered),
                    mb(zero_paper_bytes(e.num_parameters, paper_stage, w)));
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "estimate_memory: %s\n", e.what());
    return 1;
  }
  return 0;
}
