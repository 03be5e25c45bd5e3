// Text generation for train_gpt (header-only helper of examples/train_gpt.cpp).
//
// Autoregressive sampling one byte at a time from the model's last-position logits, on the last
// block_size bytes. temperature <= 0 is greedy (argmax); otherwise softmax(logits / temperature)
// sampled with its own seeded generator, so that the same checkpoint, prompt and seed give the
// same text. Every rank runs it (a sharded model's forward is a collective); rank 0 prints.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "autograd/grad_mode.h"
#include "nn/module.h"
#include "tensor/factories.h"
#include "tensor/random.h"

namespace gpt_example {

inline std::string generate(loom::nn::Module& model, const std::string& prompt, int64_t tokens,
                            int64_t block_size, double temperature, uint64_t seed) {
  using namespace loom;
  NoGradGuard no_grad;
  bool was_training = model.is_training();
  model.eval();
  Generator g(seed);
  std::vector<int64_t> ids;
  for (unsigned char c : prompt) ids.push_back(c);
  std::string out;
  std::vector<double> p(256);
  for (int64_t n = 0; n < tokens; ++n) {
    int64_t T = std::min<int64_t>(int64_t(ids.size()), block_size);
    std::vector<int64_t> context(ids.end() - T, ids.end());
    Tensor logits = model(from_vector(context, Shape{1, T}));  // (1, T, 256)
    Tensor last = logits.select(1, T - 1).reshape({-1}).to(DType::f64).contiguous();
    const double* l = last.data_ptr<double>();
    int64_t next = 0;
    if (temperature <= 0) {
      next = int64_t(std::max_element(l, l + 256) - l);
    } else {
      double top = *std::max_element(l, l + 256), total = 0;
      for (int v = 0; v < 256; ++v) total += p[size_t(v)] = std::exp((l[v] - top) / temperature);
      Tensor u = empty({1}, DType::f64);
      fill_uniform(u, 0.0, total, g);
      double r = u.item<double>();
      for (next = 0; next < 255 && r >= p[size_t(next)]; ++next) r -= p[size_t(next)];
    }
    ids.push_back(next);
    out.push_back(char(next));
  }
  if (was_training) model.train();
  return out;
}

// Bytes a terminal shows as they are; others (a model's stray control or non-ASCII bytes) as '?'.
inline std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) out.push_back((c == '\n' || (c >= 32 && c < 127)) ? char(c) : '?');
  return out;
}

}  // namespace gpt_example
