// Embedding: a lookup table of num_embeddings vectors of size embedding_dim.
#pragma once

#include "nn/module.h"

namespace loom::nn {

class Embedding : public Module {
 public:
  Embedding(int64_t num_embeddings, int64_t embedding_dim);
  Tensor forward(const Tensor& indices) override;  // integer (...) -> (..., D)
  void reset_parameters() override;                // N(0, 1), as PyTorch

  int64_t num_embeddings, embedding_dim;
  Tensor weight;  // (V, D)
};

}  // namespace loom::nn
