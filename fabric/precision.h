// Precision plugins: how parameters are stored and how forward, backward and the optimizer
// step treat dtypes (docs/design.md "Precision").
//
//   64-true / 32-true      parameters and compute in f64 / f32
//   bf16-mixed / 16-mixed  f32 master parameters; matmul-like ops in bf16 / f16 under autocast,
//                          reductions, softmax, norms and losses in f32; module outputs f32.
//                          16-mixed adds a dynamic gradient scaler (f16's range is narrow).
//   bf16-true / 16-true    parameters and compute in the low dtype
#pragma once

#include <map>
#include <memory>
#include <string>
#include <unordered_map>

#include "fabric/scope.h"
#include "nn/module.h"
#include "optim/optimizer.h"

namespace loom {

// Dynamic loss scaling for f16: multiply the loss by `scale` before backward, divide the
// gradients by it before the step; skip a step whose gradients hold inf/nan and multiply
// the scale by backoff_factor; after growth_interval clean steps multiply it by growth_factor.
class GradScaler {
 public:
  struct Options {
    double init_scale = 65536.0;
    double growth_factor = 2.0;
    double backoff_factor = 0.5;
    int64_t growth_interval = 2000;
  };
  GradScaler() : GradScaler(Options{}) {}
  explicit GradScaler(Options o) : opts_(o), scale_(o.init_scale) {}

  // Multiplies the loss by the current scale and remembers that scale: the gradients of
  // this backward are divided by it, even when another optimizer's step changes the scale
  // before this one's.
  Tensor scale(const Tensor& loss);
  // Divides the optimizer's gradients by the loss's scale once per step; remembers whether
  // any was inf/nan. Safe to call twice (clip_gradients then step), and tracked per optimizer
  // so that several optimizers are each unscaled once.
  void unscale(optim::Optimizer& opt);
  // Steps unless the unscaled gradients were non-finite; updates the scale. Returns whether
  // the optimizer stepped.
  bool step(optim::Optimizer& opt);

  double get_scale() const { return scale_; }
  std::map<std::string, double> state_dict() const;
  void load_state_dict(const std::map<std::string, double>& state);

 private:
  Options opts_;
  double scale_;
  double loss_scale_ = scale_;  // the scale the current gradients were computed with
  int64_t growth_tracker_ = 0;
  // Optimizers unscaled since their last step -> whether their gradients held inf/nan.
  std::unordered_map<const optim::Optimizer*, bool> unscaled_;
};

class Precision {
 public:
  virtual ~Precision() = default;
  virtual std::string name() const = 0;  // "32-true", ...

  // Dtype of new floating tensors inside init_module() (and of parameters after setup).
  virtual DType param_dtype() const { return DType::f32; }
  // Casts parameters and floating buffers where the precision stores them differently.
  virtual void convert_module(nn::Module& module) const;
  // Entered around every FabricModule forward (autocast for the mixed precisions).
  virtual ScopeStack forward_context() const { return {}; }
  // Floating inputs and outputs of FabricModule forward.
  virtual Tensor convert_input(const Tensor& x) const;
  virtual Tensor convert_output(const Tensor& y) const { return y; }
  // Inside init_module(): the default dtype for new tensors.
  virtual ScopeStack module_init_context() const;

  virtual Tensor pre_backward(const Tensor& loss) { return loss; }
  virtual void unscale_gradients(optim::Optimizer&) {}
  // Returns whether the optimizer stepped.
  virtual bool optimizer_step(optim::Optimizer& opt);

  virtual std::map<std::string, double> state_dict() const { return {}; }
  virtual void load_state_dict(const std::map<std::string, double>&) {}
};

// 64-true, 32-true, bf16-true, 16-true.
class TruePrecision : public Precision {
 public:
  explicit TruePrecision(DType dtype) : dtype_(dtype) {}
  std::string name() const override;
  DType param_dtype() const override { return dtype_; }

 private:
  DType dtype_;
};

// bf16-mixed, 16-mixed (the latter with a GradScaler).
class MixedPrecision : public Precision {
 public:
  explicit MixedPrecision(DType low, GradScaler::Options scaler = {});
  std::string name() const override { return low_ == DType::bf16 ? "bf16-mixed" : "16-mixed"; }
  ScopeStack forward_context() const override;
  Tensor convert_input(const Tensor& x) const override { return x; }
  Tensor convert_output(const Tensor& y) const override;
  Tensor pre_backward(const Tensor& loss) override;
  void unscale_gradients(optim::Optimizer& opt) override;
  bool optimizer_step(optim::Optimizer& opt) override;
  std::map<std::string, double> state_dict() const override;
  void load_state_dict(const std::map<std::string, double>& state) override;
  GradScaler* scaler() { return scaler_.get(); }
  DType low_dtype() const { return low_; }

 private:
  DType low_;
  std::unique_ptr<GradScaler> scaler_;  // 16-mixed only
};

// "32", "bf16-mixed", ... (aliases 64, 32, 16, bf16) -> plugin; ValueError lists the valid ones.
std::shared_ptr<Precision> make_precision(const std::string& name);

}  // namespace loom
