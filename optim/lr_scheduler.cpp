// Learning-rate schedulers: the shared epoch bookkeeping and each schedule's closed form.
#include "optim/lr_scheduler.h"

#include <cmath>
#include <numbers>

namespace loom::optim {

LRScheduler::LRScheduler(std::shared_ptr<Optimizer> optimizer, const char* name)
    : name_(name), optimizer_(std::move(optimizer)) {
  if (!optimizer_) throw ValueError(detail::concat(name_, ": got a null optimizer"));
  for (const auto& g : optimizer_->param_groups()) base_lrs_.push_back(g.lr());
}

void LRScheduler::apply(int64_t epoch) {
  auto& groups = optimizer_->param_groups();
  if (groups.size() != base_lrs_.size())
    throw ValueError(detail::concat(name_, ": the optimizer has ", groups.size(),
                                    " parameter groups but the scheduler was built for ",
                                    base_lrs_.size(), "; create the scheduler after adding "
                                    "all groups"));
  std::vector<double> lrs;
  for (size_t i = 0; i < groups.size(); ++i) lrs.push_back(lr_at(epoch, base_lrs_[i], i));
  for (size_t i = 0; i < groups.size(); ++i) optimizer_->set_lr(i, lrs[i]);
  last_epoch_ = epoch;
  last_lrs_ = std::move(lrs);
}

void LRScheduler::step() { apply(last_epoch_ + 1); }

void LRScheduler::load_state_dict(const SchedulerStateDict& dict) {
  if (dict.base_lrs.size() != base_lrs_.size())
    throw ValueError(detail::concat(name_, ": load_state_dict: the state dict has ",
                                    dict.base_lrs.size(), " base lrs but the optimizer has ",
                                    base_lrs_.size(), " parameter groups"));
  if (dict.last_epoch < 0)
    throw ValueError(detail::concat(name_, ": load_state_dict: invalid last_epoch ",
                                    dict.last_epoch, " (must be >= 0)"));
  std::vector<double> saved = base_lrs_;
  base_lrs_ = dict.base_lrs;
  try {
    apply(dict.last_epoch);
  } catch (...) {
    base_lrs_ = std::move(saved);  // leave the scheduler as it was
    throw;
  }
}

StepLR::StepLR(std::shared_ptr<Optimizer> optimizer, int64_t step_size, double gamma)
    : LRScheduler(std::move(optimizer), "StepLR"), step_size_(step_size), gamma_(gamma) {
  if (step_size <= 0)
    throw ValueError(detail::concat("StepLR: invalid step_size ", step_size, " (must be > 0)"));
  apply(0);
}

double StepLR::lr_at(int64_t epoch, double base_lr, size_t) const {
  return base_lr * std::pow(gamma_, double(epoch / step_size_));  // γ^⌊epoch / step_size⌋
}

CosineAnnealingLR::CosineAnnealingLR(std::shared_ptr<Optimizer> optimizer, int64_t t_max,
                                     double eta_min)
    : LRScheduler(std::move(optimizer), "CosineAnnealingLR"), t_max_(t_max), eta_min_(eta_min) {
  if (t_max <= 0)
    throw ValueError(detail::concat("CosineAnnealingLR: invalid T_max ", t_max, " (must be > 0)"));
  apply(0);
}

double CosineAnnealingLR::lr_at(int64_t epoch, double base_lr, size_t) const {
  // η_min + (η_max - η_min) (1 + cos(π T_cur / T_max)) / 2
  const double cosine = std::cos(std::numbers::pi * double(epoch) / double(t_max_));
  return eta_min_ + (base_lr - eta_min_) * (1.0 + cosine) / 2.0;
}

LinearWarmup::LinearWarmup(std::shared_ptr<Optimizer> optimizer, int64_t warmup_steps,
                           int64_t total_steps, double min_lr_ratio)
    : LRScheduler(std::move(optimizer), "LinearWarmup"),
      warmup_steps_(warmup_steps),
      total_steps_(total_steps),
      min_lr_ratio_(min_lr_ratio) {
  if (warmup_steps < 0 || total_steps <= 0 || total_steps < warmup_steps)
    throw ValueError(detail::concat("LinearWarmup: invalid warmup_steps ", warmup_steps,
                                    " / total_steps ", total_steps,
                                    " (need 0 <= warmup_steps <= total_steps, total_steps > 0)"));
  if (!(min_lr_ratio >= 0.0 && min_lr_ratio <= 1.0))
    throw ValueError(detail::concat("LinearWarmup: invalid min_lr_ratio ", min_lr_ratio,
                                    " (must be in [0, 1])"));
  apply(0);
}

double LinearWarmup::lr_at(int64_t epoch, double base_lr, size_t) const {
  if (epoch < warmup_steps_)  // linear ramp: base (epoch + 1) / W
    return base_lr * double(epoch + 1) / double(warmup_steps_);
  if (epoch >= total_steps_) return base_lr * min_lr_ratio_;  // floor after the decay
  // cosine from base down to r base over the T - W decay steps
  const double progress = double(epoch - warmup_steps_) / double(total_steps_ - warmup_steps_);
  const double cosine = (1.0 + std::cos(std::numbers::pi * progress)) / 2.0;
  return base_lr * (min_lr_ratio_ + (1.0 - min_lr_ratio_) * cosine);
}

LambdaLR::LambdaLR(std::shared_ptr<Optimizer> optimizer, Fn fn)
    : LRScheduler(std::move(optimizer), "LambdaLR") {
  if (!fn) throw ValueError("LambdaLR: got an empty function");
  fns_.assign(base_lrs().size(), std::move(fn));
  apply(0);
}

LambdaLR::LambdaLR(std::shared_ptr<Optimizer> optimizer, std::vector<Fn> fns)
    : LRScheduler(std::move(optimizer), "LambdaLR"), fns_(std::move(fns)) {
  if (fns_.size() != base_lrs().size())
    throw ValueError(detail::concat("LambdaLR: got ", fns_.size(), " functions for ",
                                    base_lrs().size(), " parameter groups (pass one per group, "
                                    "or a single function)"));
  for (const auto& f : fns_)
    if (!f) throw ValueError("LambdaLR: got an empty function");
  apply(0);
}

double LambdaLR::lr_at(int64_t epoch, double base_lr, size_t group) const {
  return base_lr * fns_.at(group)(epoch);  // base × λ(epoch)
}

}  // namespace loom::optim
