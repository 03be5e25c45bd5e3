#include "fabric/precision.h"

#include <cmath>

#include "autograd/grad_mode.h"
#include "tensor/autocast.h"
#include "tensor/defaults.h"
#include "tensor/native.h"

namespace loom {

// ---- GradScaler ----

Tensor GradScaler::scale(const Tensor& loss) {
  loss_scale_ = scale_;
  unscaled_.clear();  // a new backward brings new scaled gradients
  return loss * scale_;
}

void GradScaler::unscale(optim::Optimizer& opt) {
  if (unscaled_.count(&opt)) return;
  NoGradGuard no_grad;
  double inv = 1.0 / loss_scale_;
  bool found_inf = false;
  for (auto& group : opt.param_groups())
    for (Tensor& p : group.params) {
      Tensor g = p.grad();
      if (!g.defined()) continue;
      native::binary_(native::BinaryOp::mul, g, native::wrap_scalar(inv, g));
      double peak = native::amax(native::unary(native::UnaryOp::abs, g), {}, false).item_double();
      if (!std::isfinite(peak)) found_inf = true;
    }
  unscaled_[&opt] = found_inf;
}

bool GradScaler::step(optim::Optimizer& opt) {
  unscale(opt);
  bool stepped = !unscaled_.at(&opt);
  unscaled_.erase(&opt);
  if (stepped) {
    opt.step();
    if (++growth_tracker_ >= opts_.growth_interval) {
      scale_ *= opts_.growth_factor;
      growth_tracker_ = 0;
    }
  } else {
    scale_ *= opts_.backoff_factor;  // skip this step and retry with a smaller scale
    growth_tracker_ = 0;
  }
  return stepped;
}

std::map<std::string, double> GradScaler::state_dict() const {
  return {{"scale", scale_},
          {"growth_factor", opts_.growth_factor},
          {"backoff_factor", opts_.backoff_factor},
          {"growth_interval", double(opts_.growth_interval)},
          {"growth_tracker", double(growth_tracker_)}};
}

void GradScaler::load_state_dict(const std::map<std::string, double>& s) {
  auto get = [&](const char* k) {
    auto it = s.find(k);
    if (it == s.end())
      throw ValueError(std::string("GradScaler.load_state_dict: missing key '") + k + "'");
    return it->second;
  };
  scale_ = loss_scale_ = get("scale");
  opts_.growth_factor = get("growth_factor");
  opts_.backoff_factor = get("backoff_factor");
  opts_.growth_interval = int64_t(get("growth_interval"));
  growth_tracker_ = int64_t(get("growth_tracker"));
}

// ---- Precision ----

void Precision::convert_module(nn::Module& module) const {
  if (param_dtype() != DType::f32) module.to(param_dtype());
}

Tensor Precision::convert_input(const Tensor& x) const {
  if (x.defined() && x.is_floating_point() && x.dtype() != param_dtype()) return x.to(param_dtype());
  return x;
}

ScopeStack Precision::module_init_context() const {
  ScopeStack s;
  s.push<DefaultDTypeGuard>(param_dtype());
  return s;
}

bool Precision::optimizer_step(optim::Optimizer& opt) {
  opt.step();
  return true;
}

std::string TruePrecision::name() const {
  switch (dtype_) {
    case DType::f64: return "64-true";
    case DType::bf16: return "bf16-true";
    case DType::f16: return "16-true";
    default: return "32-true";
  }
}

MixedPrecision::MixedPrecision(DType low, GradScaler::Options scaler) : low_(low) {
  if (low == DType::f16) scaler_ = std::make_unique<GradScaler>(scaler);
}

ScopeStack MixedPrecision::forward_context() const {
  ScopeStack s;
  s.push<AutocastGuard>(true, low_);
  return s;
}

Tensor MixedPrecision::convert_output(const Tensor& y) const {
  if (y.defined() && is_low_precision(y.dtype())) return y.to(DType::f32);
  return y;
}

Tensor MixedPrecision::pre_backward(const Tensor& loss) {
  return scaler_ ? scaler_->scale(loss) : loss;
}

void MixedPrecision::unscale_gradients(optim::Optimizer& opt) {
  if (scaler_) scaler_->unscale(opt);
}

bool MixedPrecision::optimizer_step(optim::Optimizer& opt) {
  if (!scaler_) return Precision::optimizer_step(opt);
  return scaler_->step(opt);
}

std::map<std::string, double> MixedPrecision::state_dict() const {
  return scaler_ ? scaler_->state_dict() : std::map<std::string, double>{};
}

void MixedPrecision::load_state_dict(const std::map<std::string, double>& state) {
  if (scaler_ && !state.empty()) scaler_->load_state_dict(state);
}

std::shared_ptr<Precision> make_precision(const std::string& name) {
  if (name == "64-true" || name == "64") return std::make_shared<TruePrecision>(DType::f64);
  if (name == "32-true" || name == "32") return std::make_shared<TruePrecision>(DType::f32);
  if (name == "bf16-true") return std::make_shared<TruePrecision>(DType::bf16);
  if (name == "16-true") return std::make_shared<TruePrecision>(DType::f16);
  if (name == "bf16-mixed" || name == "bf16") return std::make_shared<MixedPrecision>(DType::bf16);
  if (name == "16-mixed" || name == "16") return std::make_shared<MixedPrecision>(DType::f16);
  throw ValueError("precision '" + name +
                   "' is not supported; valid: 64-true, 32-true, 16-mixed, bf16-mixed, 16-true, "
                   "bf16-true (aliases: 64, 32, 16, bf16)");
}

}  // namespace loom
