// Tests for the precision plugins (fabric/precision.cpp) as Fabric uses them: parameter
// dtypes after setup, forward dtypes under the mixed precisions (low-precision matmuls, f32
// reductions, f32 outputs), convert_module, and the f16 GradScaler (loss scaling, unscale
// before clipping, skipped steps, growth, state through checkpoints).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "fabric_test_util.h"
#include "optim/sgd.h"
#include "tensor/autocast.h"
#include "tensor/defaults.h"

namespace loom {
namespace {

using namespace fabric_test;

struct PrecisionCase {
  const char* name;
  DType param;   // parameter dtype after setup
  DType output;  // dtype of a FabricModule's output for an f32 input
};

const PrecisionCase kCases[] = {
    {"64-true", DType::f64, DType::f64},     {"32-true", DType::f32, DType::f32},
    {"bf16-mixed", DType::f32, DType::f32},  {"16-mixed", DType::f32, DType::f32},
    {"bf16-true", DType::bf16, DType::bf16}, {"16-true", DType::f16, DType::f16},
};

TEST(Precision, ParameterAndOutputDtypesAfterSetup) {
  for (const auto& c : kCases) {
    Fabric fabric(cpu_options(c.name));
    auto model = fabric.setup(make_mlp());
    for (const auto& [n, p] : model->named_parameters())
      EXPECT_EQ(p.dtype(), c.param) << c.name << " " << n;
    Tensor y = (*model)(randn({3, 4}));
    EXPECT_EQ(y.dtype(), c.output) << c.name;
    EXPECT_EQ(y.sizes(), (Shape{3, 2}));
  }
}

// Linear -> softmax: records the dtype each stage produced.
struct Probe : nn::Module {
  std::shared_ptr<nn::Linear> fc;
  DType matmul_dtype = DType::f64, softmax_dtype = DType::f64, loss_dtype = DType::f64;
  Probe() { fc = register_module("fc", std::make_shared<nn::Linear>(4, 3)); }
  Tensor forward(const Tensor& x) override {
    Tensor h = (*fc)(x);
    Tensor s = h.softmax(-1);
    softmax_dtype = s.dtype();
    Tensor l = mse_loss(s, zeros({x.size(0), 3}));
    loss_dtype = l.dtype();
    return h;
  }
};

TEST(Precision, MixedRunsMatmulsLowAndReductionsInF32) {
  for (auto [name, low] : {std::pair{"bf16-mixed", DType::bf16}, std::pair{"16-mixed", DType::f16}}) {
    Fabric fabric(cpu_options(name));
    manual_seed(3);
    auto probe = std::make_shared<Probe>();
    probe->fc->register_forward_hook([&](nn::Module&, const Tensor& in, const Tensor& out) {
      probe->matmul_dtype = out.dtype();
      EXPECT_EQ(in.dtype(), DType::f32) << "the input reaches the Linear as given";
      return std::optional<Tensor>();
    });
    auto model = fabric.setup(probe);
    Tensor x = randn({2, 4});
    Tensor y = (*model)(x);
    EXPECT_EQ(probe->matmul_dtype, low) << name << ": the Linear's matmul runs in the low dtype";
    EXPECT_EQ(probe->softmax_dtype, DType::f32) << name;
    EXPECT_EQ(probe->loss_dtype, DType::f32) << name;
    EXPECT_EQ(y.dtype(), DType::f32) << name << ": module outputs come back f32";
    EXPECT_FALSE(autocast_state().enabled) << "autocast ends with the forward";

    // The values are the f32 computation within the low dtype's rounding (f16 storage on CPU,
    // f32 arithmetic).
    Tensor ref = linear(x, probe->fc->weight, probe->fc->bias);
    EXPECT_TRUE(y.allclose(ref, 2e-2, 2e-2)) << name << "\n" << y << "\n" << ref;
  }
}

TEST(Precision, AutocastContextOutsideTheModule) {
  Fabric fabric(cpu_options("bf16-mixed"));
  Tensor a = randn({2, 3}), b = randn({3, 2});
  {
    auto ctx = fabric.autocast();
    EXPECT_TRUE(autocast_state().enabled);
    Tensor c = a.matmul(b);
    EXPECT_EQ(c.dtype(), DType::bf16);
    EXPECT_EQ(c.sum().dtype(), DType::f32) << "reductions run in f32";
    EXPECT_EQ(c.log_softmax(-1).dtype(), DType::f32);
  }
  EXPECT_FALSE(autocast_state().enabled);
  EXPECT_EQ(a.matmul(b).dtype(), DType::f32);

  Fabric full(cpu_options("32-true"));
  auto ctx = full.autocast();
  EXPECT_FALSE(autocast_state().enabled) << "a true precision has no autocast";
}

// Parameters, a floating buffer and an integer buffer.
struct WithBuffers : nn::Module {
  Tensor w, running, count;
  WithBuffers() {
    w = register_parameter("w", ones({2}));
    running = register_buffer("running", full({2}, 0.5));
    count = register_buffer("count", zeros({1}, DType::i64));
  }
  Tensor forward(const Tensor& x) override { return x * w + running; }
};

TEST(Precision, TruePrecisionsConvertParametersAndFloatingBuffersOnly) {
  for (auto [name, dtype] : {std::pair{"64-true", DType::f64}, std::pair{"bf16-true", DType::bf16},
                             std::pair{"16-true", DType::f16}}) {
    Fabric fabric(cpu_options(name));
    auto m = std::make_shared<WithBuffers>();
    Tensor w_handle = m->w;
    auto fm = fabric.setup(m);
    EXPECT_EQ(m->w.dtype(), dtype) << name;
    EXPECT_TRUE(w_handle.is_same(m->named_parameters().at("w"))) << "identity kept";
    EXPECT_EQ(fm->named_buffers().at("running").dtype(), dtype) << name;
    EXPECT_EQ(fm->named_buffers().at("count").dtype(), DType::i64) << name << ": integers stay";
    EXPECT_EQ(fm->named_buffers().at("running").to_double_vector(), (std::vector<double>{0.5, 0.5}));
  }
  Fabric mixed(cpu_options("bf16-mixed"));
  auto m = std::make_shared<WithBuffers>();
  mixed.setup(m);
  EXPECT_EQ(m->w.dtype(), DType::f32) << "mixed keeps f32 master parameters";
}

// Linear(2, 1) without bias, weight [1, 2]: every value below is exact in f16.
std::shared_ptr<nn::Linear> exact_linear() {
  auto l = std::make_shared<nn::Linear>(2, 1, false);
  l->weight.detach().copy_(tensor({1.0, 2.0}).view({1, 2}));
  return l;
}

std::shared_ptr<MixedPrecision> small_scaler(double init_scale = 1024.0, int64_t growth_interval = 3) {
  return std::make_shared<MixedPrecision>(
      DType::f16, GradScaler::Options{.init_scale = init_scale, .growth_interval = growth_interval});
}

TEST(GradScaler, ScalesTheLossAndUnscalesBeforeTheStep) {
  auto precision = small_scaler();
  Fabric fabric({.accelerator = "cpu", .devices = 1, .plugins = {precision}});
  auto lin = exact_linear();
  auto [m, opt] = fabric.setup(lin, std::make_shared<optim::SGD>(lin->parameters(), 0.5));
  Tensor loss = (*m)(tensor({1.0, 1.0}).view({1, 2})).sum();
  EXPECT_EQ(loss.item<double>(), 3.0);
  fabric.backward(loss);
  EXPECT_EQ(lin->weight.grad().to_double_vector(), (std::vector<double>{1024.0, 1024.0}))
      << "backward sees the loss times the scale";
  opt->step();
  EXPECT_FALSE(opt->last_step_skipped());
  EXPECT_EQ(lin->weight.to_double_vector(), (std::vector<double>{0.5, 1.5}))
      << "the step used the unscaled gradient [1, 1]";
  EXPECT_EQ(precision->scaler()->get_scale(), 1024.0);
}

TEST(GradScaler, ClipGradientsSeesUnscaledGradientsAndTheStepDoesNotUnscaleTwice) {
  auto precision = small_scaler();
  Fabric fabric({.accelerator = "cpu", .devices = 1, .plugins = {precision}});
  auto lin = exact_linear();
  auto [m, opt] = fabric.setup(lin, std::make_shared<optim::SGD>(lin->parameters(), 1.0));
  fabric.backward((*m)(tensor({3.0, 4.0}).view({1, 2})).sum());  // true gradient [3, 4], norm 5
  Tensor norm = fabric.clip_gradients(*m, *opt, /*max_norm=*/1.0);
  EXPECT_NEAR(norm.item<double>(), 5.0, 1e-6);
  opt->step();
  auto w = lin->weight.to_double_vector();
  EXPECT_NEAR(w[0], 1.0 - 0.6, 1e-5);
  EXPECT_NEAR(w[1], 2.0 - 0.8, 1e-5);
}

TEST(GradScaler, SkipsANonFiniteStepAndShrinksTheScale) {
  auto precision = small_scaler();
  Fabric fabric({.accelerator = "cpu", .devices = 1, .plugins = {precision}});
  auto lin = exact_linear();
  auto [m, opt] = fabric.setup(lin, std::make_shared<optim::SGD>(lin->parameters(), 0.5));
  fabric.backward((*m)(tensor({1.0, 1.0}).view({1, 2})).sum());
  lin->weight.grad().fill_(std::numeric_limits<double>::infinity());
  opt->step();
  EXPECT_TRUE(opt->last_step_skipped());
  EXPECT_EQ(lin->weight.to_double_vector(), (std::vector<double>{1.0, 2.0})) << "unchanged";
  EXPECT_EQ(precision->scaler()->get_scale(), 512.0) << "halved";

  // A NaN loss is skipped the same way; the next clean step goes through.
  opt->zero_grad();
  fabric.backward((*m)(tensor({1.0, 1.0}).view({1, 2})).sum() * std::nan(""));
  opt->step();
  EXPECT_TRUE(opt->last_step_skipped());
  EXPECT_EQ(precision->scaler()->get_scale(), 256.0);
  opt->zero_grad();
  fabric.backward((*m)(tensor({1.0, 1.0}).view({1, 2})).sum());
  opt->step();
  EXPECT_FALSE(opt->last_step_skipped());
  EXPECT_EQ(lin->weight.to_double_vector(), (std::vector<double>{0.5, 1.5}));
}

TEST(GradScaler, GrowsAfterGrowthIntervalCleanSteps) {
  auto precision = small_scaler(1024.0, 3);
  Fabric fabric({.accelerator = "cpu", .devices = 1, .plugins = {precision}});
  auto lin = exact_linear();
  auto [m, opt] = fabric.setup(lin, std::make_shared<optim::SGD>(lin->parameters(), 1e-3));
  std::vector<double> scales;
  for (int i = 0; i < 7; ++i) {
    opt->zero_grad();
    fabric.backward((*m)(tensor({1.0, 1.0}).view({1, 2})).sum());
    opt->step();
    scales.push_back(precision->scaler()->get_scale());
  }
  EXPECT_EQ(scales, (std::vector<double>{1024, 1024, 2048, 2048, 2048, 4096, 4096}));
}

TEST(GradScaler, StateRoundTripsThroughCheckpoints) {
  TempDir dir;
  auto precision = small_scaler(1024.0, 3);
  Fabric fabric({.accelerator = "cpu", .devices = 1, .plugins = {precision}});
  auto lin = exact_linear();
  auto [m, opt] = fabric.setup(lin, std::make_shared<optim::SGD>(lin->parameters(), 1e-3));
  for (int i = 0; i < 4; ++i) {  // 3 clean steps grow to 2048, a 4th leaves the tracker at 1
    opt->zero_grad();
    fabric.backward((*m)(tensor({1.0, 1.0}).view({1, 2})).sum());
    opt->step();
  }
  auto saved = precision->scaler()->state_dict();
  EXPECT_EQ(saved.at("scale"), 2048.0);
  EXPECT_EQ(saved.at("growth_tracker"), 1.0);
  fabric.save(dir / "ckpt.safetensors", {{"model", m}});

  auto other = small_scaler(8.0, 100);
  Fabric fresh({.accelerator = "cpu", .devices = 1, .plugins = {other}});
  auto m2 = fresh.setup(exact_linear());
  CheckpointState state{{"model", std::shared_ptr<nn::Module>(m2)}};
  fresh.load(dir / "ckpt.safetensors", state);
  EXPECT_EQ(other->scaler()->state_dict(), saved);
  EXPECT_EQ(other->scaler()->get_scale(), 2048.0);
}

TEST(GradScaler, UnscalesEachOfSeveralOptimizersOnce) {
  auto precision = small_scaler(1024.0, 1);  // grows at every clean step
  Fabric fabric({.accelerator = "cpu", .devices = 1, .plugins = {precision}});
  auto a = exact_linear(), b = exact_linear();
  auto [ma, oa] = fabric.setup(a, std::make_shared<optim::SGD>(a->parameters(), 0.5));
  auto [mb, ob] = fabric.setup(b, std::make_shared<optim::SGD>(b->parameters(), 0.5));
  Tensor x = tensor({1.0, 1.0}).view({1, 2});
  fabric.backward((*ma)(x).sum() + (*mb)(x).sum());
  EXPECT_NEAR(fabric.clip_gradients(*ma, *oa, 100.0).item<double>(), std::sqrt(2.0), 1e-6);
  EXPECT_NEAR(fabric.clip_gradients(*mb, *ob, 100.0).item<double>(), std::sqrt(2.0), 1e-6)
      << "the second optimizer's gradients are unscaled too";
  oa->step();
  EXPECT_EQ(precision->scaler()->get_scale(), 2048.0);
  ob->step();  // its gradients were scaled by 1024, whatever the scale is now
  EXPECT_EQ(a->weight.to_double_vector(), (std::vector<double>{0.5, 1.5}));
  EXPECT_EQ(b->weight.to_double_vector(), (std::vector<double>{0.5, 1.5}));
}

}  // namespace
}  // namespace loom
