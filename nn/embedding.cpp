#include "nn/embedding.h"

#include "nn/init.h"
#include "tensor/factories.h"
#include "tensor/ops.h"

namespace loom::nn {

Embedding::Embedding(int64_t v, int64_t d) : num_embeddings(v), embedding_dim(d) {
  if (v <= 0 || d <= 0)
    throw ValueError(detail::concat("Embedding: sizes must be positive, got ", v, " and ", d));
  weight = register_parameter("weight", empty({v, d}));
  reset_parameters();
}

void Embedding::reset_parameters() { init::normal_(weight, 0.0, 1.0); }

Tensor Embedding::forward(const Tensor& indices) { return embedding(weight, indices); }

}  // namespace loom::nn
