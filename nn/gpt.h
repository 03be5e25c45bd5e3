// A GPT-2 style decoder: causal self-attention, an MLP, pre-norm blocks and the model.
//
// Letters: B batch, T time (sequence), C channels (n_embd), H heads, D = C / H head size,
// V vocabulary size.
#pragma once

#include "nn/containers.h"
#include "nn/embedding.h"
#include "nn/layer_norm.h"
#include "nn/linear.h"

namespace loom::nn {

struct GPTConfig {
  int64_t vocab_size = 256;
  int64_t block_size = 64;  // the longest sequence
  int64_t n_layer = 2;
  int64_t n_head = 2;
  int64_t n_embd = 64;
  double dropout = 0.0;
};

// Multi-head self-attention where position t attends to positions <= t.
class CausalSelfAttention : public Module {
 public:
  CausalSelfAttention(int64_t n_embd, int64_t n_head, double dropout = 0.0);
  Tensor forward(const Tensor& x) override;  // (B, T, C) -> (B, T, C)

  int64_t n_embd, n_head;
  double dropout_p;
  std::shared_ptr<Linear> qkv;   // C -> 3C
  std::shared_ptr<Linear> proj;  // C -> C
};

// Position-wise feed-forward: C -> 4C -> GELU(tanh) -> C.
class MLP : public Module {
 public:
  MLP(int64_t n_embd, double dropout = 0.0);
  Tensor forward(const Tensor& x) override;

  double dropout_p;
  std::shared_ptr<Linear> fc, proj;
};

// Pre-norm block: x + attn(ln1(x)), then + mlp(ln2(x)).
class Block : public Module {
 public:
  explicit Block(const GPTConfig& cfg);
  Tensor forward(const Tensor& x) override;

  std::shared_ptr<LayerNorm> ln1, ln2;
  std::shared_ptr<CausalSelfAttention> attn;
  std::shared_ptr<MLP> mlp;
};

// Token + position embeddings, n_layer blocks, a final LayerNorm and the LM head.
class GPT : public Module {
 public:
  explicit GPT(GPTConfig cfg);
  Tensor forward(const Tensor& idx) override;  // (B, T) i64 -> logits (B, T, V)
  // Mean cross-entropy of next-token prediction.
  Tensor loss(const Tensor& idx, const Tensor& targets);
  // GPT-2 initialisation: N(0, 0.02) for Linear weights and embeddings, zero biases.
  void reset_parameters() override;

  GPTConfig config;
  std::shared_ptr<Embedding> wte, wpe;
  std::shared_ptr<ModuleList> blocks;
  std::shared_ptr<LayerNorm> ln_f;
  std::shared_ptr<Linear> lm_head;
};

}  // namespace loom::nn
