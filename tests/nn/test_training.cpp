// End-to-end training, deterministic for a seed: an MLP learns a non-linear separable
// problem with hand-written SGD, and a tiny GPT memorises a short repeated text with a
// hand-written Adam. Both loops update parameters in place under NoGradGuard, as optim/ does.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <map>
#include <random>
#include <string>

#include "autograd/grad_mode.h"
#include "nn/nn.h"
#include "tensor/factories.h"
#include "tensor/random.h"

namespace loom::nn {
namespace {

// XOR of the quadrants: label 1 where x0 * x1 > 0. Not linearly separable; points closer
// than 0.1 to an axis are left out so that the classes have a margin.
void xor_data(int64_t n, uint64_t seed, Tensor& x, Tensor& y) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> xs;
  std::vector<int64_t> ys;
  while (int64_t(ys.size()) < n) {
    float a = u(rng), b = u(rng);
    if (std::abs(a) < 0.1f || std::abs(b) < 0.1f) continue;
    xs.push_back(a);
    xs.push_back(b);
    ys.push_back(a * b > 0 ? 1 : 0);
  }
  x = from_vector<float>(xs, Shape{n, 2});
  y = from_vector<int64_t>(ys);
}

double accuracy(Module& model, const Tensor& x, const Tensor& y) {
  NoGradGuard g;
  std::vector<int64_t> pred = model(x).argmax(1).to_vector<int64_t>(), want = y.to_vector<int64_t>();
  int64_t right = 0;
  for (size_t i = 0; i < pred.size(); ++i) right += pred[i] == want[i];
  return double(right) / double(pred.size());
}

TEST(Training, MlpWithSgdSeparatesXor) {
  manual_seed(0);
  Tensor x, y, x_test, y_test;
  xor_data(512, 1, x, y);
  xor_data(512, 2, x_test, y_test);
  auto model = std::make_shared<Sequential>(std::make_shared<Linear>(2, 32), std::make_shared<Tanh>(),
                                            std::make_shared<Linear>(32, 2));
  std::vector<Tensor> params = model->parameters();
  const double lr = 0.5;
  double first_loss = 0, loss_value = 0;
  for (int step = 0; step < 600; ++step) {
    model->zero_grad();
    Tensor loss = loom::cross_entropy((*model)(x), y);
    loss.backward();
    loss_value = loss.item<double>();
    if (step == 0) first_loss = loss_value;
    NoGradGuard g;
    for (Tensor& p : params) p.sub_(p.grad(), lr);
  }
  // Measured with this seed: loss 0.71 -> 0.016 and 100% train/test accuracy (seeds 0-4 all
  // within 0.68-0.72 -> 0.015-0.017); the bounds leave a wide margin.
  EXPECT_GT(first_loss, 0.6);  // ~log(2): the start is chance level
  EXPECT_LT(loss_value, 0.1);
  EXPECT_GT(accuracy(*model, x, y), 0.95);
  EXPECT_GT(accuracy(*model, x_test, y_test), 0.95);
}

// A minimal Adam (Kingma & Ba 2015) over a parameter list.
class Adam {
 public:
  Adam(std::vector<Tensor> params, double lr) : params_(std::move(params)), lr_(lr) {
    for (const Tensor& p : params_) {
      m_.push_back(zeros_like(p));
      v_.push_back(zeros_like(p));
    }
  }
  void step() {
    NoGradGuard g;
    ++t_;
    double c1 = 1.0 - std::pow(b1_, t_), c2 = 1.0 - std::pow(b2_, t_);
    for (size_t i = 0; i < params_.size(); ++i) {
      Tensor grad = params_[i].grad();
      if (!grad.defined()) continue;
      m_[i].mul_(b1_).add_(grad, 1.0 - b1_);
      v_[i].mul_(b2_).add_(grad * grad, 1.0 - b2_);
      Tensor update = (m_[i] / c1) / ((v_[i] / c2).sqrt() + 1e-8);
      params_[i].sub_(update, lr_);
    }
  }

 private:
  std::vector<Tensor> params_, m_, v_;
  double lr_, b1_ = 0.9, b2_ = 0.999;
  int t_ = 0;
};

TEST(Training, TinyGptMemorisesRepeatedText) {
  const std::string text = "the quick brown fox jumps over the lazy dog. ";
  std::string corpus;
  for (int i = 0; i < 20; ++i) corpus += text;
  // Vocabulary: the distinct bytes of the text.
  std::map<char, int64_t> vocab;
  for (char c : corpus) vocab.emplace(c, 0);
  int64_t v = 0;
  for (auto& [c, id] : vocab) id = v++;
  std::vector<int64_t> ids;
  for (char c : corpus) ids.push_back(vocab[c]);

  manual_seed(1);
  GPTConfig cfg;
  cfg.vocab_size = v;
  cfg.block_size = 16;
  cfg.n_layer = 2;
  cfg.n_head = 2;
  cfg.n_embd = 32;
  GPT gpt(cfg);
  Adam adam(gpt.parameters(), 3e-3);

  const int64_t B = 8, T = 16;
  std::mt19937_64 rng(2);
  std::uniform_int_distribution<size_t> start(0, ids.size() - size_t(T) - 2);
  auto batch = [&](Tensor& idx, Tensor& target) {
    std::vector<int64_t> a, b;
    for (int64_t i = 0; i < B; ++i) {
      size_t s = start(rng);
      a.insert(a.end(), ids.begin() + long(s), ids.begin() + long(s) + T);
      b.insert(b.end(), ids.begin() + long(s) + 1, ids.begin() + long(s) + T + 1);
    }
    idx = from_vector<int64_t>(a, Shape{B, T});
    target = from_vector<int64_t>(b, Shape{B, T});
  };

  auto t0 = std::chrono::steady_clock::now();
  double first = 0, last = 0;
  const int kSteps = 200;
  for (int step = 0; step < kSteps; ++step) {
    Tensor idx, target;
    batch(idx, target);
    gpt.zero_grad();
    Tensor loss = gpt.loss(idx, target);
    loss.backward();
    adam.step();
    last = loss.item<double>();
    if (step == 0) first = last;
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Starts at ~log(V) (V = 28: 3.33). Measured: 3.337 -> 0.049 after 200 steps with this
  // seed (seeds 1-5: 0.049-0.066), ~0.2 s; the bound 0.25 leaves about 4x margin.
  EXPECT_NEAR(first, std::log(double(v)), 0.1);
  EXPECT_LT(last, 0.25) << "after " << kSteps << " steps (" << seconds << " s)";

  // Greedy decoding from a prompt continues the text.
  gpt.eval();
  NoGradGuard g;
  std::vector<int64_t> ctx(ids.begin(), ids.begin() + 8);
  std::string generated;
  for (int i = 0; i < 30; ++i) {
    size_t from = ctx.size() > size_t(T) ? ctx.size() - size_t(T) : 0;
    std::vector<int64_t> window(ctx.begin() + long(from), ctx.end());
    Tensor logits = gpt(from_vector<int64_t>(window, Shape{1, int64_t(window.size())}));
    int64_t next = logits.select(1, int64_t(window.size()) - 1).argmax(-1).item<int64_t>();
    ctx.push_back(next);
    for (const auto& [c, id] : vocab)
      if (id == next) generated += c;
  }
  EXPECT_EQ(generated, corpus.substr(8, 30));
}

}  // namespace
}  // namespace loom::nn
