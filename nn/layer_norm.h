// LayerNorm over the trailing normalized_shape dims, with an optional affine transform.
#pragma once

#include "nn/module.h"

namespace loom::nn {

class LayerNorm : public Module {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = 1e-5, bool elementwise_affine = true,
                     bool bias = true);
  explicit LayerNorm(int64_t dim, double eps = 1e-5) : LayerNorm(Shape{dim}, eps) {}
  Tensor forward(const Tensor& x) override;
  void reset_parameters() override;  // weight 1, bias 0

  Shape normalized_shape;
  double eps;
  Tensor weight, bias;  // normalized_shape each; undefined without affine
};

}  // namespace loom::nn
