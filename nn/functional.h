// nn::functional: the stateless forms of the layers and losses (PyTorch's F.*).
#pragma once

#include "tensor/ops.h"

namespace loom::nn::functional {

using loom::cross_entropy;
using loom::dropout;
using loom::embedding;
using loom::gelu;
using loom::layer_norm;
using loom::linear;
using loom::log_softmax;
using loom::mse_loss;
using loom::relu;
using loom::softmax;

}  // namespace loom::nn::functional
