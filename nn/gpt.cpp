#include "nn/gpt.h"

#include <cmath>

#include "nn/init.h"
#include "tensor/factories.h"
#include "tensor/ops.h"

namespace loom::nn {

CausalSelfAttention::CausalSelfAttention(int64_t c, int64_t h, double dropout)
    : n_embd(c), n_head(h), dropout_p(dropout) {
  if (c % h != 0)
    throw ValueError(detail::concat("CausalSelfAttention: n_embd ", c,
                                    " must be divisible by n_head ", h));
  qkv = register_module("qkv", std::make_shared<Linear>(c, 3 * c));
  proj = register_module("proj", std::make_shared<Linear>(c, c));
}

Tensor CausalSelfAttention::forward(const Tensor& x) {
  int64_t B = x.size(0), T = x.size(1), C = x.size(2), H = n_head, D = C / H;
  TensorList parts = (*qkv)(x).split(C, -1);  // 3 x (B, T, C)
  auto heads = [&](const Tensor& t) { return t.view({B, T, H, D}).transpose(1, 2); };
  Tensor q = heads(parts[0]), k = heads(parts[1]), v = heads(parts[2]);  // (B, H, T, D)
  Tensor att = q.matmul(k.transpose(-2, -1)) * (1.0 / std::sqrt(double(D)));  // (B, H, T, T)
  // Mask the future: position t sees only s <= t.
  Tensor future = triu(ones({T, T}, DType::bool_, x.device()), 1);
  att = att.masked_fill(future, -INFINITY).softmax(-1);
  att = dropout(att, dropout_p, is_training());
  Tensor y = att.matmul(v);                                  // (B, H, T, D)
  y = y.transpose(1, 2).contiguous().view({B, T, C});       // (B, T, C)
  return dropout((*proj)(y), dropout_p, is_training());
}

MLP::MLP(int64_t c, double dropout) : dropout_p(dropout) {
  fc = register_module("fc", std::make_shared<Linear>(c, 4 * c));
  proj = register_module("proj", std::make_shared<Linear>(4 * c, c));
}

Tensor MLP::forward(const Tensor& x) {
  return dropout((*proj)(gelu((*fc)(x), /*tanh_approximation=*/true)), dropout_p, is_training());
}

Block::Block(const GPTConfig& cfg) {
  ln1 = register_module("ln1", std::make_shared<LayerNorm>(cfg.n_embd));
  attn = register_module("attn",
                         std::make_shared<CausalSelfAttention>(cfg.n_embd, cfg.n_head, cfg.dropout));
  ln2 = register_module("ln2", std::make_shared<LayerNorm>(cfg.n_embd));
  mlp = register_module("mlp", std::make_shared<MLP>(cfg.n_embd, cfg.dropout));
}

Tensor Block::forward(const Tensor& x) {
  Tensor h = x + (*attn)((*ln1)(x));
  return h + (*mlp)((*ln2)(h));
}

GPT::GPT(GPTConfig cfg) : config(cfg) {
  wte = register_module("wte", std::make_shared<Embedding>(cfg.vocab_size, cfg.n_embd));
  wpe = register_module("wpe", std::make_shared<Embedding>(cfg.block_size, cfg.n_embd));
  blocks = register_module("blocks", std::make_shared<ModuleList>());
  for (int64_t i = 0; i < cfg.n_layer; ++i) blocks->push_back(std::make_shared<Block>(cfg));
  ln_f = register_module("ln_f", std::make_shared<LayerNorm>(cfg.n_embd));
  lm_head = register_module("lm_head", std::make_shared<Linear>(cfg.n_embd, cfg.vocab_size, false));
  reset_parameters();
}

void GPT::reset_parameters() {
  apply([](Module& m) {
    if (auto* l = dynamic_cast<Linear*>(&m)) {
      init::normal_(l->weight, 0.0, 0.02);
      if (l->bias.defined()) init::zeros_(l->bias);
    } else if (auto* e = dynamic_cast<Embedding*>(&m)) {
      init::normal_(e->weight, 0.0, 0.02);
    }
  });
}

Tensor GPT::forward(const Tensor& idx) {
  int64_t T = idx.size(1);
  if (T > config.block_size)
    throw ValueError(detail::concat("GPT: sequence length ", T, " exceeds block_size ",
                                    config.block_size));
  Tensor pos = arange(0, double(T), 1, DType::i64, idx.device());
  Tensor x = (*wte)(idx) + (*wpe)(pos);  // (B, T, C)
  for (const auto& b : *blocks) x = (*b)(x);
  return (*lm_head)((*ln_f)(x));  // (B, T, V)
}

Tensor GPT::loss(const Tensor& idx, const Tensor& targets) {
  Tensor logits = (*this)(idx);
  return cross_entropy(logits.view({-1, config.vocab_size}), targets.reshape({-1}));
}

}  // namespace loom::nn
