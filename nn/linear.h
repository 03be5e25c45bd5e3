// Linear: y = x W^T + b, with W (out_features, in_features) and b (out_features).
#pragma once

#include "nn/module.h"

namespace loom::nn {

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true);
  Tensor forward(const Tensor& x) override;  // (..., in) -> (..., out)
  // PyTorch's default: W ~ kaiming_uniform(a = sqrt(5)), i.e. U(+-1/sqrt(in)); b ~ U(+-1/sqrt(in)).
  void reset_parameters() override;

  int64_t in_features, out_features;
  Tensor weight;  // (out, in)
  Tensor bias;    // (out), undefined without bias
};

}  // namespace loom::nn
