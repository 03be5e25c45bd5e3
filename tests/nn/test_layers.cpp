// Layer forwards against hand computations: Linear, Embedding, LayerNorm, GELU (both forms),
// ReLU/Tanh, Dropout (train/eval, scaling), the containers, causal self-attention's
// causality, and the GPT's output shape and initial loss.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/grad_mode.h"
#include "nn/nn.h"
#include "tensor/allocator.h"
#include "tensor/autocast.h"
#include "tensor/defaults.h"
#include "tensor/factories.h"
#include "tensor/random.h"

namespace loom::nn {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

void set(Tensor p, const std::vector<float>& values) {  // p: a handle to the parameter
  NoGradGuard g;
  p.copy_(from_vector<float>(values, p.sizes()));
}

void expect_near(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "at " << i;
}

TEST(Layers, LinearForward) {
  Linear lin(3, 2);
  EXPECT_EQ(lin.weight.sizes(), (Shape{2, 3}));
  EXPECT_EQ(lin.bias.sizes(), (Shape{2}));
  set(lin.weight, {1, 2, 3, -1, 0, 1});
  set(lin.bias, {0.5, -0.5});
  // y = x W^T + b:  row (1, 1, 1) -> (6.5, -0.5);  row (2, 0, -1) -> (-0.5, -3.5).
  Tensor x = from_vector<float>({1, 1, 1, 2, 0, -1}, Shape{2, 3});
  EXPECT_EQ(lin(x).to_vector<float>(), (std::vector<float>{6.5, -0.5, -0.5, -3.5}));
  // Leading dims pass through.
  Tensor y = lin(from_vector<float>({1, 1, 1, 2, 0, -1}, Shape{2, 1, 3}));
  EXPECT_EQ(y.sizes(), (Shape{2, 1, 2}));
  EXPECT_EQ(y.to_vector<float>(), (std::vector<float>{6.5, -0.5, -0.5, -3.5}));
  Linear nob(3, 2, false);
  EXPECT_FALSE(nob.bias.defined());
  EXPECT_THAT(nob.named_parameters().keys(), ElementsAre("weight"));
  EXPECT_THROW(Linear(0, 2), ValueError);
}

TEST(Layers, EmbeddingForward) {
  Embedding emb(4, 2);
  set(emb.weight, {0, 1, 10, 11, 20, 21, 30, 31});
  Tensor idx = from_vector<int64_t>({3, 0, 3, 1}, Shape{2, 2});
  Tensor out = emb(idx);
  EXPECT_EQ(out.sizes(), (Shape{2, 2, 2}));
  EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{30, 31, 0, 1, 30, 31, 10, 11}));
  EXPECT_THROW(Embedding(0, 3), ValueError);
}

TEST(Layers, LayerNormForward) {
  LayerNorm ln(4);
  EXPECT_EQ(ln.weight.to_vector<float>(), (std::vector<float>{1, 1, 1, 1}));
  EXPECT_EQ(ln.bias.to_vector<float>(), (std::vector<float>{0, 0, 0, 0}));
  std::vector<float> xs{1, 2, 3, 6, -1, -1, 1, 1};
  Tensor x = from_vector<float>(xs, Shape{2, 4});
  set(ln.weight, {1, 2, 0.5, -1});
  set(ln.bias, {0, 1, 0, 0.25});
  std::vector<double> want;
  std::vector<double> w{1, 2, 0.5, -1}, b{0, 1, 0, 0.25};
  for (int r = 0; r < 2; ++r) {
    double mean = 0, var = 0;
    for (int j = 0; j < 4; ++j) mean += xs[size_t(r * 4 + j)] / 4.0;
    for (int j = 0; j < 4; ++j) var += std::pow(xs[size_t(r * 4 + j)] - mean, 2) / 4.0;  // biased
    for (int j = 0; j < 4; ++j)
      want.push_back((xs[size_t(r * 4 + j)] - mean) / std::sqrt(var + 1e-5) * w[size_t(j)] +
                     b[size_t(j)]);
  }
  expect_near(ln(x).to_vector<float>(), want, 1e-5);
  // Without affine parameters.
  LayerNorm plain(Shape{4}, 1e-5, /*elementwise_affine=*/false);
  EXPECT_TRUE(plain.parameters().empty());
  std::vector<float> y = plain(x).to_vector<float>();
  EXPECT_NEAR(y[0] + y[1] + y[2] + y[3], 0.0, 1e-5);
  // Two normalised dims.
  LayerNorm ln2(Shape{2, 2});
  EXPECT_EQ(ln2.weight.sizes(), (Shape{2, 2}));
  expect_near(ln2(from_vector<float>({1, 2, 3, 4}, Shape{1, 2, 2})).to_vector<float>(),
              {-1.3416355, -0.4472118, 0.4472118, 1.3416355}, 1e-5);
}

TEST(Layers, GeluBothFormsAndOtherActivations) {
  std::vector<float> xs{-3, -1, -0.5, 0, 0.5, 1, 2, 4};
  Tensor x = from_vector<float>(xs);
  std::vector<double> erf_form, tanh_form, relu_form, tanh_act;
  for (float v : xs) {
    double d = v;
    erf_form.push_back(0.5 * d * (1 + std::erf(d / std::sqrt(2.0))));
    tanh_form.push_back(0.5 * d * (1 + std::tanh(std::sqrt(2 / M_PI) * (d + 0.044715 * d * d * d))));
    relu_form.push_back(std::max(d, 0.0));
    tanh_act.push_back(std::tanh(d));
  }
  expect_near(GELU()(x).to_vector<float>(), erf_form, 1e-6);
  expect_near(GELU("tanh")(x).to_vector<float>(), tanh_form, 1e-6);
  expect_near(ReLU()(x).to_vector<float>(), relu_form, 0);
  expect_near(Tanh()(x).to_vector<float>(), tanh_act, 1e-6);
  // The two forms differ (by up to ~1e-3 around |x| ~ 2), so each is really used.
  EXPECT_GT(std::abs(GELU()(x).to_vector<float>()[6] - GELU("tanh")(x).to_vector<float>()[6]), 1e-5);
  EXPECT_THAT(
      [] {
        try {
          GELU g("fast");
        } catch (const ValueError& e) {
          return std::string(e.what());
        }
        return std::string();
      }(),
      HasSubstr("'fast'"));
}

TEST(Layers, DropoutTrainEvalAndScaling) {
  Dropout drop(0.25);
  manual_seed(11);
  Tensor x = full({100, 100}, 2.0);
  std::vector<float> y = drop(x).to_vector<float>();
  int64_t zeros = 0;
  for (float v : y) {
    ASSERT_TRUE(v == 0.0f || std::abs(v - 2.0f / 0.75f) < 1e-6) << v;
    zeros += v == 0.0f;
  }
  // 1e4 Bernoulli(0.25) draws: sd of the fraction ~ 0.0043.
  EXPECT_NEAR(double(zeros) / 1e4, 0.25, 0.02);
  // The expectation is preserved.
  double mean = 0;
  for (float v : y) mean += v / 1e4;
  EXPECT_NEAR(mean, 2.0, 0.06);
  drop.eval();
  EXPECT_TRUE(drop(x).equal(x));
  drop.train();
  Dropout none(0.0);
  EXPECT_TRUE(none(x).equal(x));
  Dropout all(1.0);
  for (float v : all(x).to_vector<float>()) ASSERT_EQ(v, 0.0f);
  EXPECT_THROW(Dropout(1.5), ValueError);
  EXPECT_THROW(Dropout(-0.1), ValueError);
}

TEST(Layers, SequentialChainsAndNames) {
  auto l1 = std::make_shared<Linear>(2, 2, false);
  auto l2 = std::make_shared<Linear>(2, 1);
  set(l1->weight, {1, -1, 2, 1});
  set(l2->weight, {1, 3});
  set(l2->bias, {0.5});
  Sequential seq(l1, std::make_shared<ReLU>(), l2);
  EXPECT_EQ(seq.size(), 3u);
  EXPECT_EQ(seq.at<Linear>(0), l1);
  EXPECT_EQ(seq.at<Linear>(1), nullptr);  // a ReLU
  EXPECT_EQ(seq[2], l2);
  EXPECT_THAT(seq.named_parameters().keys(), ElementsAre("0.weight", "2.weight", "2.bias"));
  // x = (1, 2): l1 -> (-1, 4) -> relu (0, 4) -> 0*1 + 4*3 + 0.5 = 12.5
  EXPECT_EQ(seq(from_vector<float>({1, 2}, Shape{1, 2})).to_vector<float>(), (std::vector<float>{12.5}));
  Sequential grown;
  grown.push_back(l1);
  grown.push_back(std::make_shared<ReLU>());
  EXPECT_EQ(grown(from_vector<float>({1, 2}, Shape{1, 2})).to_vector<float>(),
            (std::vector<float>{0, 4}));
}

TEST(Layers, ModuleListAndModuleDict) {
  ModuleList list{std::make_shared<Linear>(2, 3), std::make_shared<ReLU>()};
  list.push_back(std::make_shared<Linear>(3, 1));
  EXPECT_EQ(list.size(), 3u);
  EXPECT_THAT(list.named_parameters().keys(),
              ElementsAre("0.weight", "0.bias", "2.weight", "2.bias"));
  int n = 0;
  for (const auto& m : list) n += m != nullptr;
  EXPECT_EQ(n, 3);
  EXPECT_NE(list.at<Linear>(2), nullptr);
  Tensor h = from_vector<float>({1, -1}, Shape{1, 2});
  for (const auto& m : list) h = (*m)(h);
  EXPECT_EQ(h.sizes(), (Shape{1, 1}));

  ModuleDict dict;
  dict.insert("encoder", std::make_shared<Linear>(4, 2));
  dict.insert("act", std::make_shared<GELU>());
  EXPECT_EQ(dict.size(), 2u);
  EXPECT_TRUE(dict.contains("act"));
  EXPECT_FALSE(dict.contains("decoder"));
  EXPECT_THAT(dict.named_parameters().keys(), ElementsAre("encoder.weight", "encoder.bias"));
  EXPECT_EQ((*dict["encoder"])(ones({3, 4})).sizes(), (Shape{3, 2}));
  EXPECT_THROW(dict["decoder"], ValueError);
  EXPECT_THROW(dict.insert("act", std::make_shared<ReLU>()), ValueError);
}

TEST(Layers, CausalSelfAttentionIsCausal) {
  manual_seed(5);
  CausalSelfAttention attn(16, 4);
  attn.eval();
  const int64_t B = 2, T = 6, C = 16;
  Tensor x = randn({B, T, C});
  Tensor y1 = attn(x);
  EXPECT_EQ(y1.sizes(), (Shape{B, T, C}));
  // Change the token at t = 4: outputs at t < 4 stay, outputs at t >= 4 move.
  Tensor x2 = x.clone();
  native::copy_(native::select(x2, 1, 4), randn({B, C}));
  Tensor y2 = attn(x2);
  for (int64_t t = 0; t < T; ++t) {
    Tensor a = y1.select(1, t), b = y2.select(1, t);
    if (t < 4)
      EXPECT_TRUE(a.equal(b)) << "t = " << t;
    else
      EXPECT_FALSE(a.allclose(b, 1e-4, 1e-4)) << "t = " << t;
  }
  // The first position attends only to itself: y_0 = proj(v_0), whatever follows it.
  Tensor one = attn(x.slice(1, 0, 1));
  EXPECT_TRUE(one.select(1, 0).allclose(y1.select(1, 0), 1e-5, 1e-6));
  EXPECT_THROW(CausalSelfAttention(10, 3), ValueError);
}

TEST(Layers, GPTShapeAndInitialLoss) {
  manual_seed(9);
  GPTConfig cfg;
  cfg.vocab_size = 64;
  cfg.block_size = 16;
  cfg.n_layer = 2;
  cfg.n_head = 2;
  cfg.n_embd = 32;
  GPT gpt(cfg);
  EXPECT_THAT(gpt.named_parameters().keys(),
              ::testing::Contains("blocks.1.attn.qkv.weight"));
  EXPECT_THAT(gpt.named_parameters().keys(), ::testing::Contains("lm_head.weight"));
  EXPECT_FALSE(gpt.named_parameters().contains("lm_head.bias"));
  Tensor idx = randint(0, 64, {3, 16});
  Tensor logits = gpt(idx);
  EXPECT_EQ(logits.sizes(), (Shape{3, 16, 64}));
  EXPECT_EQ(logits.dtype(), DType::f32);
  // GPT-2 init (N(0, 0.02)) makes the logits nearly uniform: the loss starts at ~log(V).
  double loss = gpt.loss(idx, randint(0, 64, {3, 16})).item<double>();
  EXPECT_NEAR(loss, std::log(64.0), 0.05);
  EXPECT_THAT(
      [&] {
        try {
          gpt(randint(0, 64, {1, 17}));
        } catch (const ValueError& e) {
          return std::string(e.what());
        }
        return std::string();
      }(),
      HasSubstr("block_size"));
  // Every parameter gets a gradient.
  gpt.loss(idx, idx).backward();
  for (const auto& [name, p] : gpt.named_parameters()) EXPECT_TRUE(p.grad().defined()) << name;
}

TEST(Layers, GPTOnMetaInfersShapes) {
  GPTConfig cfg;
  cfg.vocab_size = 1000;
  cfg.block_size = 32;
  cfg.n_embd = 64;
  int64_t before = memory_stats().current_bytes;
  DefaultDeviceGuard meta(Device::meta());
  GPT gpt(cfg);
  Tensor idx = empty({2, 32}, DType::i64);
  EXPECT_TRUE(idx.is_meta());
  Tensor logits = gpt(idx);
  EXPECT_TRUE(logits.is_meta());
  EXPECT_EQ(logits.sizes(), (Shape{2, 32, 1000}));
  Tensor loss = gpt.loss(idx, idx);
  EXPECT_TRUE(loss.is_meta());
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_EQ(memory_stats().current_bytes, before);
}

TEST(Layers, GPTUnderAutocastKeepsF32Gradients) {
  manual_seed(3);
  GPTConfig cfg;
  cfg.vocab_size = 32;
  cfg.block_size = 8;
  cfg.n_embd = 32;
  GPT gpt(cfg);
  Tensor idx = randint(0, 32, {2, 8}), tgt = randint(0, 32, {2, 8});
  double f32_loss = gpt.loss(idx, tgt).item<double>();
  Tensor loss;
  {
    AutocastGuard ac(true, DType::bf16);
    loss = gpt.loss(idx, tgt);
  }
  EXPECT_EQ(loss.dtype(), DType::f32);
  EXPECT_NEAR(loss.item<double>(), f32_loss, 0.02);
  loss.backward();
  for (const auto& [name, p] : gpt.named_parameters()) {
    ASSERT_TRUE(p.grad().defined()) << name;
    EXPECT_EQ(p.grad().dtype(), DType::f32) << name;
  }
}

}  // namespace
}  // namespace loom::nn
