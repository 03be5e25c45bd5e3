// SGD: stochastic gradient descent with momentum, dampening, Nesterov momentum and L2
// weight decay, following PyTorch's torch.optim.SGD update rule exactly (see sgd.cpp).
// It is not LARS/LAMB-style layer-wise scaling and has no `maximize` flag.
#pragma once

#include "optim/optimizer.h"

namespace loom::optim {

// Hyper-parameter keys: "lr", "momentum", "dampening", "weight_decay", "nesterov" (0 / 1).
struct SGDOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;  // L2 penalty added to the gradient
  bool nesterov = false;      // needs momentum > 0 and dampening == 0

  HyperParams to_map() const;
  static SGDOptions from_map(const HyperParams& options);
};

class SGD : public Optimizer {
 public:
  // SGD(model->parameters(), /*lr=*/0.1, {.momentum = 0.9}); lr overrides options.lr.
  SGD(std::vector<Tensor> params, double lr, SGDOptions options = {});
  SGD(std::vector<ParamGroup> groups, SGDOptions options = {});

 protected:
  void check_options(const HyperParams& options) const override;
  void step_group(ParamGroup& group) override;
};

}  // namespace loom::optim
