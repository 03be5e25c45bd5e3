// The state fuzz_checkpoint loads into, and the input encoding it reads; make_corpus writes
// seed inputs from the same definitions.
//
// Input: one flags byte, then
//   raw mode:         the bytes of a checkpoint file, loaded as they are;
//   structured mode:  the loom JSON text, optionally followed by "\0" and one line per tensor,
//                     "name|DTYPE|d0,d1,...". The harness writes a safetensors file from them
//                     with a valid header checksum (and, with kResealTensors, the JSON's
//                     "crc32c" replaced by the tensors' real CRCs), so that mutations reach the
//                     checks behind the checksums. A tensor's bytes come from the pristine
//                     checkpoint when it has one of that name and size, else from a fixed pattern.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "fabric/checkpoint.h"
#include "nn/activation.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "optim/adam.h"
#include "optim/lr_scheduler.h"
#include "tensor/factories.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace loom::fuzz {

enum Flags : uint8_t {
  kStrict = 1,         // load(strict = true)
  kStructured = 2,     // structured input (see above), else raw file bytes
  kResealTensors = 4,  // structured: replace "crc32c" with the tensors' real CRCs
  kPrecision = 8,      // pass a precision_state to load
};

// A small model, AdamW with state after `steps` steps, a StepLR, and one plain value of each
// kind. Same seed and steps, same bytes.
struct State {
  std::shared_ptr<nn::Sequential> model;
  std::shared_ptr<optim::AdamW> opt;
  std::shared_ptr<optim::StepLR> sched;
  CheckpointState values;
};

inline State make_state(uint64_t seed, int steps, bool amsgrad = false) {
  State s;
  manual_seed(seed);
  s.model = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(3, 4),
                                             std::make_shared<nn::ReLU>(),
                                             std::make_shared<nn::Linear>(4, 2));
  s.opt = std::make_shared<optim::AdamW>(s.model->parameters(), 1e-2,
                                         optim::AdamWOptions{.amsgrad = amsgrad});
  s.sched = std::make_shared<optim::StepLR>(s.opt, 2, 0.5);
  Tensor x = randn({5, 3}), y = randn({5, 2});
  for (int i = 0; i < steps; ++i) {
    s.opt->zero_grad();
    mse_loss((*s.model)(x), y).backward();
    s.opt->step();
    s.sched->step();
  }
  s.values = {{"model", std::shared_ptr<nn::Module>(s.model)},
              {"opt", std::shared_ptr<optim::Optimizer>(s.opt)},
              {"sched", std::shared_ptr<optim::LRScheduler>(s.sched)},
              {"step", int64_t(steps)},
              {"loss", 0.5 + double(seed)},
              {"name", "run-" + std::to_string(seed)},
              {"ema", randn({3})}};
  return s;
}

}  // namespace loom::fuzz
