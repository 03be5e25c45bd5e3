// Learning-rate schedulers: StepLR, CosineAnnealingLR, LinearWarmup (linear warm-up then
// cosine decay) and LambdaLR, each a closed form lr(epoch) written into the optimizer's
// groups, as PyTorch's torch.optim.lr_scheduler does.
//
// Every scheduler here computes lr from (epoch, base lr) directly, never from the previous
// lr: PyTorch's "chainable" recursive forms give the same numbers for these schedules when
// they run alone, and the closed form cannot drift or depend on step order. Chaining
// several schedulers on one optimizer (SequentialLR, ChainedScheduler) is deliberately not
// supported; LinearWarmup covers the common warm-up + decay case.
//
// An "epoch" is one call of step(): per optimizer step or per data epoch, as the caller
// decides. Construction applies epoch 0 (as PyTorch's initial step does).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "optim/optimizer.h"

namespace loom::optim {

// last_epoch and the base lr of each group: enough to resume a schedule. A LambdaLR's
// function is code, not state, and is not saved (as in PyTorch).
struct SchedulerStateDict {
  int64_t last_epoch = 0;
  std::vector<double> base_lrs;
};

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  // Advances one epoch and writes the new lr into every group.
  void step();
  // The lr of each group as last set by this scheduler.
  const std::vector<double>& get_last_lr() const { return last_lrs_; }
  int64_t last_epoch() const { return last_epoch_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  const std::shared_ptr<Optimizer>& optimizer() const { return optimizer_; }

  SchedulerStateDict state_dict() const { return {last_epoch_, base_lrs_}; }
  // Restores the epoch and base lrs, and writes the lrs of that epoch into the optimizer.
  void load_state_dict(const SchedulerStateDict& dict);

  // The closed form: lr of `group` at `epoch`, given that group's base lr.
  virtual double lr_at(int64_t epoch, double base_lr, size_t group) const = 0;

 protected:
  // Records each group's current lr as its base lr. Derived constructors validate their
  // arguments and then call apply(0) (a base constructor cannot call lr_at).
  LRScheduler(std::shared_ptr<Optimizer> optimizer, const char* name);
  void apply(int64_t epoch);
  const char* name_;

 private:
  std::shared_ptr<Optimizer> optimizer_;
  int64_t last_epoch_ = 0;
  std::vector<double> base_lrs_;
  std::vector<double> last_lrs_;
};

// lr = base * gamma^floor(epoch / step_size).
class StepLR : public LRScheduler {
 public:
  StepLR(std::shared_ptr<Optimizer> optimizer, int64_t step_size, double gamma = 0.1);
  double lr_at(int64_t epoch, double base_lr, size_t group) const override;

 private:
  int64_t step_size_;
  double gamma_;
};

// lr = eta_min + (base - eta_min) (1 + cos(pi epoch / T_max)) / 2 (SGDR without restarts,
// Loshchilov & Hutter 2017, eq. 5); periodic past T_max, like PyTorch's closed form.
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(std::shared_ptr<Optimizer> optimizer, int64_t t_max, double eta_min = 0.0);
  double lr_at(int64_t epoch, double base_lr, size_t group) const override;

 private:
  int64_t t_max_;
  double eta_min_;
};

// Linear warm-up, then cosine decay to min_lr_ratio * base:
//   epoch <  W:          lr = base (epoch + 1) / W
//   W <= epoch < T:      lr = base (r + (1 - r) (1 + cos(pi (epoch - W) / (T - W))) / 2)
//   epoch >= T:          lr = base r
// with W = warmup_steps, T = total_steps, r = min_lr_ratio. Warm-up starts at base / W
// rather than 0 so that the first step is not wasted.
class LinearWarmup : public LRScheduler {
 public:
  LinearWarmup(std::shared_ptr<Optimizer> optimizer, int64_t warmup_steps, int64_t total_steps,
               double min_lr_ratio = 0.0);
  double lr_at(int64_t epoch, double base_lr, size_t group) const override;

 private:
  int64_t warmup_steps_;
  int64_t total_steps_;
  double min_lr_ratio_;
};

// lr = base * fn(epoch); one function for every group, or one per group.
class LambdaLR : public LRScheduler {
 public:
  using Fn = std::function<double(int64_t)>;
  LambdaLR(std::shared_ptr<Optimizer> optimizer, Fn fn);
  LambdaLR(std::shared_ptr<Optimizer> optimizer, std::vector<Fn> fns);
  double lr_at(int64_t epoch, double base_lr, size_t group) const override;

 private:
  std::vector<Fn> fns_;
};

}  // namespace loom::optim
