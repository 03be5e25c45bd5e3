// Memory estimator: the bytes one rank holds when it trains a model under a strategy, from the
// model's parameter list alone (a model built on meta costs nothing), laid out as the
// strategies lay them out (docs/design.md "Memory estimator").
//
// The figures are those of loom's CPU allocator (tensor/allocator.h: bytes of live tensors,
// as requested; shared-memory transfer slots between ranks are not tensors and not counted).
// They follow the real layouts: DDP's reducer buckets (fabric/reducer.h: reverse registration
// order, a first bucket that closes at 1 MiB), FSDP's flat units padded to a multiple of the
// world size (fabric/fsdp_unit.h, units planned by fsdp::plan_units with the same policy),
// ZeRO's padded partition buckets and their stage-2 reduce-scatter buffers (fabric/zero.h,
// Note [ZeRO partition]), and the optimizer's state over exactly the tensors it steps.
//
// The peak is that of a steady training step (forward, backward, optimizer step, zero_grad
// with set_to_none, the optimizer's state already created), found by walking the backward
// pass segment by segment: autograd keeps every tensor saved for backward until the whole
// backward ends (autograd/engine.cpp), so the backward peak is the saved activations plus
// whatever gradient memory the strategy holds at that point plus the gradient being computed.
//
// Activations are estimated for nn::GPT only (every tensor its forward saves for backward and
// the gradients in flight inside each backward segment; 32-true and bf16-true within 0.6% of
// the allocator on one process, the mixed precisions, which add autocast's copies, within 2%);
// for any other model they are 0 and `activation_note` says so.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "fabric/deepspeed.h"
#include "fabric/fsdp.h"
#include "nn/module.h"

namespace loom {

enum class OptimizerKind {
  sgd,           // no state
  sgd_momentum,  // one buffer per parameter
  adam,          // exp_avg and exp_avg_sq (amsgrad adds a third: set `amsgrad`)
  adamw,
};

struct MemoryEstimateOptions {
  // "single" (one device), "ddp", "fsdp" or "deepspeed" (stage from deepspeed.stage).
  std::string strategy = "ddp";
  int world_size = 1;
  // "32-true", "bf16-mixed", "16-mixed", "bf16-true" (and "16-true", "64-true").
  std::string precision = "32-true";
  OptimizerKind optimizer = OptimizerKind::adamw;
  bool amsgrad = false;
  // The strategies' own options: bucket sizes, the FSDP wrap policy, the ZeRO stage.
  DDPOptions ddp{};
  FSDPOptions fsdp{};
  DeepSpeedOptions deepspeed{};
  // Activation estimate for this per-rank batch (nn::GPT: batch x seq_len tokens); 0: none.
  int64_t batch_size = 0;
  int64_t seq_len = 0;
};

struct MemoryEstimate {
  int64_t num_parameters = 0;  // of the whole model
  // Per rank, bytes: rank 0's, the largest (under ZeRO a later rank may own only padding of
  // a bucket, and so step fewer elements). Held between steps:
  int64_t parameters = 0;  // replicas, or shards (fsdp, stage 3); stages 1/2 add the owned shard
  int64_t optimizer_state = 0;     // over exactly what the optimizer steps
  int64_t persistent_buffers = 0;  // DDP / stage-1 reducer buckets (allocated at setup)
  // Everything held between two steps (after zero_grad): the three above, plus stage 2's
  // partition gradients, which the next backward drops.
  int64_t between_steps = 0;
  // At the step's peak:
  int64_t gradients = 0;      // gradient tensors live (autograd's, partition or shard gradients)
  int64_t communication = 0;  // in-flight buffers: FSDP gathered units, flat reduce inputs,
                              // ZeRO flat buckets; plus persistent_buffers
  int64_t activations = 0;    // saved for backward, plus the gradient being computed
  int64_t peak = 0;           // the sum of the above at the step's peak
  std::string peak_phase;     // "backward", "optimizer step" or "forward"
  // Largest unit's gathered bytes (fsdp and stage 3; 0 otherwise).
  int64_t largest_unit_gathered = 0;
  int64_t saved_activations = 0;  // the forward's saved tensors alone (0 if not estimated)
  std::string activation_note;
  // The ZeRO paper's count for mixed-precision Adam (Rajbhandari et al. 2020, section 3):
  // 2 + 2 + 12 bytes per parameter, each term divided by W from its stage on.
  int64_t zero_paper_bytes = 0;
};

// `model` may live on meta (Fabric::init_module(empty_init), or DefaultDeviceGuard(meta)).
// ValueError for an unknown strategy or precision, a world size < 1, a deepspeed stage other
// than 1, 2, 3 (or with 16-mixed, which that strategy refuses), or a GPT estimate asked for
// with seq_len above the model's block_size.
MemoryEstimate estimate_memory(nn::Module& model, const MemoryEstimateOptions& options);

// The ZeRO paper's bytes per rank for `num_parameters` under mixed-precision Adam at `stage`
// (0: data parallel, 16 bytes per parameter; 1: 4 + 12 / W; 2: 2 + 14 / W; 3: 16 / W).
int64_t zero_paper_bytes(int64_t num_parameters, int stage, int world_size);

}  // namespace loom
