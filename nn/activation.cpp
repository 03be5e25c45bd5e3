#include "nn/activation.h"

namespace loom::nn {

GELU::GELU(std::string approximate) : tanh_(approximate == "tanh") {
  if (approximate != "none" && approximate != "tanh")
    throw ValueError("GELU: approximate must be 'none' or 'tanh', got '" + approximate + "'");
}

Dropout::Dropout(double prob) : p(prob) {
  if (p < 0.0 || p > 1.0)
    throw ValueError(detail::concat("Dropout: probability must be in [0, 1], got ", p));
}

}  // namespace loom::nn
