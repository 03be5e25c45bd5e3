#include "nn/layer_norm.h"

#include "nn/init.h"
#include "tensor/factories.h"
#include "tensor/ops.h"

namespace loom::nn {

LayerNorm::LayerNorm(Shape shape, double e, bool affine, bool with_bias)
    : normalized_shape(std::move(shape)), eps(e) {
  if (affine) {
    weight = register_parameter("weight", empty(normalized_shape));
    if (with_bias) bias = register_parameter("bias", empty(normalized_shape));
  }
  reset_parameters();
}

void LayerNorm::reset_parameters() {
  if (weight.defined()) init::ones_(weight);
  if (bias.defined()) init::zeros_(bias);
}

Tensor LayerNorm::forward(const Tensor& x) {
  return layer_norm(x, normalized_shape, weight, bias, eps);
}

}  // namespace loom::nn
