// Adam and AdamW, following PyTorch's torch.optim.Adam / torch.optim.AdamW update rules with
// bias correction and optional AMSGrad (see adam.cpp for the math and references).
// Adam adds weight decay to the gradient (L2); AdamW decays the weights directly
// ("decoupled"). Neither implements `maximize`, `capturable` or complex parameters.
#pragma once

#include "optim/optimizer.h"

namespace loom::optim {

// Hyper-parameter keys: "lr", "beta1", "beta2", "eps", "weight_decay", "amsgrad" (0 / 1).
// PyTorch's `betas` tuple is two keys here because group values are plain doubles
// (Note [Hyper-parameters as a map]).
struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;    // decay of the first moment (mean of gradients)
  double beta2 = 0.999;  // decay of the second moment (mean of squared gradients)
  double eps = 1e-8;     // added to the denominator for numerical stability
  double weight_decay = 0.0;
  bool amsgrad = false;  // use the running maximum of the second moment

  HyperParams to_map() const;
  static AdamOptions from_map(const HyperParams& options);
};

// AdamW's options: the same fields, but PyTorch's AdamW defaults weight_decay to 1e-2.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
  bool amsgrad = false;

  AdamOptions as_adam() const { return {lr, beta1, beta2, eps, weight_decay, amsgrad}; }
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, double lr, AdamOptions options = {});
  Adam(std::vector<ParamGroup> groups, AdamOptions options = {});

 protected:
  // decoupled: AdamW's weight decay (θ -= γλθ) instead of Adam's L2 term in the gradient.
  Adam(const char* name, bool decoupled, std::vector<ParamGroup> groups, AdamOptions options);

  void check_options(const HyperParams& options) const override;
  void step_group(ParamGroup& group) override;

 private:
  bool decoupled_ = false;
};

class AdamW : public Adam {
 public:
  AdamW(std::vector<Tensor> params, double lr, AdamWOptions options = {});
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options = {});
};

}  // namespace loom::optim
