// Optimizer tests: SGD / Adam / AdamW against f64 references written here from the published
// update rules (PyTorch docs pseudo-code, Adam and AdamW papers), over 10 steps on fixed
// parameters and gradients set with set_grad() (no backward involved); param groups,
// state_dict round trips, replace_parameters, zero_grad and error messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "optim/adam.h"
#include "optim/sgd.h"
#include "tensor/factories.h"
#include "tensor/native.h"

namespace loom::optim {
namespace {

using ::testing::HasSubstr;
using Vec = std::vector<double>;

constexpr int kSteps = 10;
constexpr int64_t kN = 7;  // elements per test parameter

Vec initial_values(int64_t n = kN, double shift = 0.0) {
  Vec v;
  for (int64_t i = 0; i < n; ++i) v.push_back(0.5 - 0.3 * double(i) + 0.05 * double(i * i) + shift);
  return v;
}

// The gradient at step t (1-based): varied in sign and size so every term of each rule
// matters (AMSGrad's max only differs from v when the gradients shrink, hence the decay).
Vec grad_at(int t, int64_t n = kN, double shift = 0.0) {
  Vec g;
  for (int64_t i = 0; i < n; ++i)
    g.push_back(std::sin(0.7 * double(i) + 1.3 * double(t) + shift) * (1.0 + 0.1 * double(i % 10)) *
                std::exp(-0.15 * double(t)));
  return g;
}

Tensor make_param(const Vec& values, DType dtype = DType::f64) {
  Tensor p = from_vector(values, Shape{int64_t(values.size())}, dtype);
  p.requires_grad_(true);
  return p;
}

void set_grad(Tensor& p, const Vec& g) { p.set_grad(from_vector(g, p.sizes(), p.dtype())); }

// ---- f64 references, written from the published pseudo-code ----

struct SgdRef {
  double lr, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
};

// PyTorch docs, torch.optim.SGD algorithm.
Vec sgd_reference(Vec p, const SgdRef& o, int steps, int first_step = 1, double shift = 0.0) {
  Vec b(p.size(), 0.0);
  for (int t = first_step; t < first_step + steps; ++t) {
    Vec g = grad_at(t, int64_t(p.size()), shift);
    for (size_t i = 0; i < p.size(); ++i) {
      double gi = g[i];
      if (o.weight_decay != 0) gi += o.weight_decay * p[i];
      if (o.momentum != 0) {
        b[i] = (t == first_step) ? gi : o.momentum * b[i] + (1 - o.dampening) * gi;
        gi = o.nesterov ? gi + o.momentum * b[i] : b[i];
      }
      p[i] -= o.lr * gi;
    }
  }
  return p;
}

struct AdamRef {
  double lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool amsgrad = false, decoupled = false;
};

// Kingma & Ba, Algorithm 1, with PyTorch's placement of eps (after the sqrt bias
// correction), L2 (Adam) or decoupled (AdamW, Loshchilov & Hutter Algorithm 2) decay, and
// AMSGrad's running max (Reddi et al.).
Vec adam_reference(Vec p, const AdamRef& o, int steps) {
  Vec m(p.size(), 0.0), v(p.size(), 0.0), vmax(p.size(), 0.0);
  for (int t = 1; t <= steps; ++t) {
    Vec g = grad_at(t, int64_t(p.size()));
    const double bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
    for (size_t i = 0; i < p.size(); ++i) {
      double gi = g[i];
      if (o.decoupled)
        p[i] *= 1 - o.lr * o.weight_decay;
      else
        gi += o.weight_decay * p[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * gi;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * gi * gi;
      vmax[i] = std::max(vmax[i], v[i]);
      const double vhat = o.amsgrad ? vmax[i] : v[i];
      p[i] -= (o.lr / bc1) * m[i] / (std::sqrt(vhat) / std::sqrt(bc2) + o.eps);
    }
  }
  return p;
}

// Runs `steps` steps of `opt` over `params`, setting step t's gradients first.
void run_steps(Optimizer& opt, std::vector<Tensor>& params, int steps, int first_step = 1) {
  for (int t = first_step; t < first_step + steps; ++t) {
    for (size_t k = 0; k < params.size(); ++k)
      set_grad(params[k], grad_at(t, params[k].numel(), double(k)));
    opt.step();
  }
}

void expect_near(const Vec& got, const Vec& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol) << "element " << i;  // first mismatch only
}

// |got - want| <= tol * max(1, |want|): bf16 keeps 8 significant bits.
void expect_near_rel(const Vec& got, const Vec& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * std::max(1.0, std::abs(want[i]))) << "element " << i;
}

double tolerance(DType d) { return d == DType::f64 ? 1e-12 : 1e-6; }

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "(no ValueError)";
}

// ---- SGD ----

struct SgdCase {
  const char* name;
  SgdRef ref;
};

const SgdCase kSgdCases[] = {
    {"plain", {0.1}},
    {"weight_decay", {0.1, 0, 0, 0.05}},
    {"momentum", {0.05, 0.9}},
    {"dampening", {0.05, 0.9, 0.3}},
    {"nesterov", {0.05, 0.9, 0, 0, true}},
    {"all", {0.05, 0.8, 0, 0.01, true}},
    {"momentum_dampening_decay", {0.07, 0.5, 0.5, 0.02}},
};

SGDOptions sgd_options(const SgdRef& r) {
  return {r.lr, r.momentum, r.dampening, r.weight_decay, r.nesterov};
}

TEST(SGD, MatchesReferenceOverTenSteps) {
  for (bool fused : {true, false}) {
    for (DType dtype : {DType::f64, DType::f32}) {
      for (const auto& c : kSgdCases) {
        SCOPED_TRACE(std::string(c.name) + " " + std::string(dtype_name(dtype)) +
                     (fused ? " fused" : " tensor-ops"));
        std::vector<Tensor> params{make_param(initial_values(), dtype)};
        SGD opt(params, c.ref.lr, sgd_options(c.ref));
        opt.set_fused(fused);
        run_steps(opt, params, kSteps);
        expect_near(params[0].to_vector<double>(), sgd_reference(initial_values(), c.ref, kSteps),
                    tolerance(dtype));
        EXPECT_EQ(opt.state(params[0])->step, kSteps);
      }
    }
  }
}

TEST(SGD, LowPrecisionParametersFollowTheReference) {
  for (DType dtype : {DType::f16, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const SgdRef ref{0.05, 0.9, 0, 0.01, true};
    std::vector<Tensor> params{make_param(initial_values(), dtype)};
    SGD opt(params, ref.lr, sgd_options(ref));
    run_steps(opt, params, kSteps);
    EXPECT_EQ(params[0].dtype(), dtype);
    EXPECT_EQ(opt.state(params[0])->buffers.at("momentum_buffer").dtype(), dtype);
    expect_near(params[0].to_vector<double>(), sgd_reference(initial_values(), ref, kSteps),
                dtype == DType::f16 ? 1e-2 : 5e-2);
  }
}

TEST(SGD, NonContiguousParameterTakesTheTensorOpPath) {
  // A (3, 2) parameter seen through its transpose: values in row-major order of the view.
  const SgdRef ref{0.05, 0.9, 0.1, 0.01};
  Tensor base = from_vector(initial_values(6), Shape{3, 2}, DType::f32);
  Tensor view = native::transpose(base, 0, 1);  // (2, 3), strides (1, 2)
  view.requires_grad_(true);
  ASSERT_FALSE(view.is_contiguous());
  std::vector<Tensor> params{view};
  SGD opt(params, ref.lr, sgd_options(ref));
  for (int t = 1; t <= kSteps; ++t) {
    params[0].set_grad(from_vector(grad_at(t, 6), Shape{2, 3}, DType::f32));
    opt.step();
  }
  Vec got = view.to_vector<double>();
  // The reference sees the view's row-major values at the start.
  Tensor fresh = native::transpose(from_vector(initial_values(6), Shape{3, 2}, DType::f64), 0, 1);
  expect_near(got, sgd_reference(fresh.to_vector<double>(), ref, kSteps), 1e-6);
}

TEST(SGD, ParamGroupsUseTheirOwnHyperParameters) {
  std::vector<Tensor> params{make_param(initial_values(kN, 0.0)),
                             make_param(initial_values(kN, 1.0))};
  SGD opt({ParamGroup({params[0]}), ParamGroup({params[1]}, {{"lr", 0.01}, {"momentum", 0.5}})},
          SGDOptions{.lr = 0.1, .momentum = 0.9});
  EXPECT_EQ(opt.param_groups().size(), 2u);
  EXPECT_EQ(opt.num_params(), 2);
  EXPECT_DOUBLE_EQ(opt.lr(0), 0.1);
  EXPECT_DOUBLE_EQ(opt.lr(1), 0.01);
  EXPECT_DOUBLE_EQ(opt.param_groups()[1].get("momentum"), 0.5);
  EXPECT_DOUBLE_EQ(opt.param_groups()[1].get("dampening"), 0.0);  // filled from defaults
  run_steps(opt, params, kSteps);
  expect_near(params[0].to_vector<double>(),
              sgd_reference(initial_values(kN, 0.0), {0.1, 0.9}, kSteps, 1, 0.0), 1e-12);
  expect_near(params[1].to_vector<double>(),
              sgd_reference(initial_values(kN, 1.0), {0.01, 0.5}, kSteps, 1, 1.0), 1e-12);
}

TEST(SGD, AddParamGroupAndLrSetters) {
  Tensor a = make_param(initial_values()), b = make_param(initial_values());
  SGD opt(std::vector<Tensor>{a}, 0.1);
  opt.add_param_group(ParamGroup({b}, {{"lr", 0.5}}));
  EXPECT_EQ(opt.num_params(), 2);
  EXPECT_DOUBLE_EQ(opt.lr(1), 0.5);
  opt.set_lr(0.2);
  EXPECT_DOUBLE_EQ(opt.lr(0), 0.2);
  EXPECT_DOUBLE_EQ(opt.lr(1), 0.2);
  opt.set_lr(1, 0.3);
  EXPECT_DOUBLE_EQ(opt.lr(1), 0.3);
  EXPECT_THAT(error_of([&] { opt.set_lr(0, -1.0); }), HasSubstr("invalid learning rate -1"));
  EXPECT_THAT(error_of([&] { (void)opt.lr(2); }), HasSubstr("group 2 out of range (2 groups)"));
  EXPECT_THAT(error_of([&] { opt.add_param_group(ParamGroup({a})); }),
              HasSubstr("appears more than once"));
}

TEST(SGD, SkipsParametersWithoutGradient) {
  std::vector<Tensor> params{make_param(initial_values()), make_param(initial_values())};
  SGD opt(params, 0.1, {.momentum = 0.9});
  set_grad(params[0], grad_at(1));
  opt.step();
  EXPECT_NE(opt.state(params[0]), nullptr);
  EXPECT_EQ(opt.state(params[1]), nullptr);
  EXPECT_EQ(params[1].to_vector<double>(), initial_values());
}

TEST(SGD, StepDoesNotRecordHistoryAndBumpsTheVersion) {
  std::vector<Tensor> params{make_param(initial_values())};
  SGD opt(params, 0.1);
  set_grad(params[0], grad_at(1));
  const uint64_t before = params[0].version();
  ASSERT_TRUE(GradMode::is_enabled());
  opt.step();
  EXPECT_TRUE(GradMode::is_enabled());
  EXPECT_TRUE(params[0].is_leaf());
  EXPECT_TRUE(params[0].requires_grad());
  EXPECT_GT(params[0].version(), before);
}

TEST(Optimizer, ZeroGrad) {
  std::vector<Tensor> params{make_param(initial_values())};
  SGD opt(params, 0.1);
  set_grad(params[0], grad_at(1));
  Tensor g = params[0].grad();
  opt.zero_grad(/*set_to_none=*/false);
  ASSERT_TRUE(params[0].grad().defined());
  EXPECT_TRUE(params[0].grad().is_same(g));  // zeroed in place
  EXPECT_EQ(g.to_vector<double>(), Vec(kN, 0.0));
  opt.zero_grad();
  EXPECT_FALSE(params[0].grad().defined());
  opt.zero_grad();  // nothing to do
}

// ---- Adam / AdamW ----

struct AdamCase {
  const char* name;
  AdamRef ref;
};

const AdamCase kAdamCases[] = {
    {"adam", {1e-2}},
    {"adam_weight_decay", {1e-2, 0.9, 0.999, 1e-8, 0.1}},
    {"adam_amsgrad", {1e-2, 0.8, 0.9, 1e-6, 0.0, true}},
    {"adam_betas_eps", {5e-2, 0.5, 0.9, 1e-3}},
    {"adamw", {1e-2, 0.9, 0.999, 1e-8, 0.1, false, true}},
    {"adamw_amsgrad", {1e-2, 0.8, 0.9, 1e-6, 0.3, true, true}},
};

std::unique_ptr<Optimizer> make_adam(std::vector<Tensor> params, const AdamRef& r) {
  if (r.decoupled)
    return std::make_unique<AdamW>(std::move(params), r.lr,
                                   AdamWOptions{r.lr, r.beta1, r.beta2, r.eps, r.weight_decay,
                                                r.amsgrad});
  return std::make_unique<Adam>(std::move(params), r.lr,
                                AdamOptions{r.lr, r.beta1, r.beta2, r.eps, r.weight_decay, r.amsgrad});
}

TEST(Adam, MatchesReferenceOverTenSteps) {
  for (bool fused : {true, false}) {
    for (DType dtype : {DType::f64, DType::f32}) {
      for (const auto& c : kAdamCases) {
        SCOPED_TRACE(std::string(c.name) + " " + std::string(dtype_name(dtype)) +
                     (fused ? " fused" : " tensor-ops"));
        std::vector<Tensor> params{make_param(initial_values(), dtype)};
        auto opt = make_adam(params, c.ref);
        opt->set_fused(fused);
        run_steps(*opt, params, kSteps);
        expect_near(params[0].to_vector<double>(), adam_reference(initial_values(), c.ref, kSteps),
                    tolerance(dtype));
        const ParamState* st = opt->state(params[0]);
        ASSERT_NE(st, nullptr);
        EXPECT_EQ(st->step, kSteps);
        EXPECT_EQ(st->buffers.count("max_exp_avg_sq"), c.ref.amsgrad ? 1u : 0u);
      }
    }
  }
}

TEST(Adam, AmsgradDiffersFromAdamOnShrinkingGradients) {
  // Guards the test itself: the fixed gradients must make the running max matter.
  AdamRef plain{1e-2, 0.8, 0.9, 1e-6}, ams = plain;  // as the amsgrad cases above
  ams.amsgrad = true;
  Vec a = adam_reference(initial_values(), plain, kSteps);
  Vec b = adam_reference(initial_values(), ams, kSteps);
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::abs(a[i] - b[i]));
  EXPECT_GT(diff, 1e-4);
}

TEST(Adam, LowPrecisionParametersFollowTheReference) {
  for (DType dtype : {DType::f16, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const AdamRef ref{1e-2, 0.9, 0.999, 1e-8, 0.1, false, true};
    std::vector<Tensor> params{make_param(initial_values(), dtype)};
    auto opt = make_adam(params, ref);
    run_steps(*opt, params, kSteps);
    EXPECT_EQ(params[0].dtype(), dtype);
    expect_near(params[0].to_vector<double>(), adam_reference(initial_values(), ref, kSteps),
                dtype == DType::f16 ? 1e-2 : 5e-2);
  }
}

TEST(Adam, DefaultsFollowPyTorch) {
  Tensor p = make_param(initial_values());
  Adam adam(std::vector<Tensor>{p}, 1e-3);
  AdamW adamw(std::vector<Tensor>{make_param(initial_values())}, 1e-3);
  EXPECT_EQ(adam.name(), "Adam");
  EXPECT_EQ(adamw.name(), "AdamW");
  EXPECT_DOUBLE_EQ(adam.defaults().at("weight_decay"), 0.0);
  EXPECT_DOUBLE_EQ(adamw.defaults().at("weight_decay"), 1e-2);
  EXPECT_DOUBLE_EQ(adam.defaults().at("beta1"), 0.9);
  EXPECT_DOUBLE_EQ(adam.defaults().at("beta2"), 0.999);
  EXPECT_DOUBLE_EQ(adam.defaults().at("eps"), 1e-8);
  EXPECT_DOUBLE_EQ(adam.defaults().at("amsgrad"), 0.0);
}

TEST(Optimizer, LargeParametersCrossBlockAndThreadBoundaries) {
  // More elements than one fused block (1024) and one parallel chunk (32768), with a ragged tail.
  const int64_t n = 3 * 32768 + 1029;
  const SgdRef sgd_ref{0.05, 0.9, 0, 0.01, true};
  const AdamRef adam_ref{1e-2, 0.8, 0.9, 1e-6, 0.3, true, true};
  Vec init(n);  // bounded, unlike initial_values(), so f32 resolves 1e-6
  for (int64_t i = 0; i < n; ++i) init[size_t(i)] = std::cos(0.37 * double(i));
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const double tol = dtype == DType::f32 ? 1e-6 : 3e-2;
    std::vector<Tensor> a{make_param(init, dtype)};
    SGD sgd(a, sgd_ref.lr, sgd_options(sgd_ref));
    run_steps(sgd, a, 3);
    expect_near_rel(a[0].to_vector<double>(), sgd_reference(init, sgd_ref, 3), tol);
    std::vector<Tensor> b{make_param(init, dtype)};
    auto adam = make_adam(b, adam_ref);
    run_steps(*adam, b, 3);
    expect_near_rel(b[0].to_vector<double>(), adam_reference(init, adam_ref, 3), tol);
  }
}

// ---- state_dict ----

// 10 straight steps vs 5 steps, save, load into a fresh optimizer over copies of the
// parameters, 5 more steps: identical (same operations in the same order).
template <class MakeOpt>
void check_round_trip(const MakeOpt& make_opt) {
  std::vector<Tensor> straight{make_param(initial_values(kN, 0.0), DType::f32),
                               make_param(initial_values(kN, 1.0), DType::f32)};
  auto opt = make_opt(straight);
  run_steps(*opt, straight, kSteps);

  std::vector<Tensor> first{make_param(initial_values(kN, 0.0), DType::f32),
                            make_param(initial_values(kN, 1.0), DType::f32)};
  auto opt1 = make_opt(first);
  run_steps(*opt1, first, 5);
  OptimizerStateDict saved = opt1->state_dict();
  // Fresh parameters holding the values at the save point (f32 -> f64 -> f32 is exact).
  std::vector<Tensor> resumed;
  for (const Tensor& p : first) resumed.push_back(make_param(p.to_vector<double>(), DType::f32));
  run_steps(*opt1, first, 1, 6);  // stepping on must not change the snapshot

  auto opt2 = make_opt(resumed);
  opt2->set_lr(123.0);  // overwritten by the loaded groups
  opt2->load_state_dict(saved);
  EXPECT_DOUBLE_EQ(opt2->lr(0), opt1->lr(0));
  run_steps(*opt2, resumed, 5, 6);
  for (size_t k = 0; k < resumed.size(); ++k)
    EXPECT_EQ(resumed[k].to_vector<float>(), straight[k].to_vector<float>()) << "param " << k;
  EXPECT_EQ(opt2->state(resumed[0])->step, kSteps);
}

TEST(Optimizer, StateDictRoundTripSGD) {
  check_round_trip([](std::vector<Tensor> p) {
    return std::make_unique<SGD>(std::vector<ParamGroup>{ParamGroup({p[0]}),
                                                         ParamGroup({p[1]}, {{"lr", 0.02}})},
                                 SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true});
  });
}

TEST(Optimizer, StateDictRoundTripAdamW) {
  check_round_trip([](std::vector<Tensor> p) {
    return std::make_unique<AdamW>(std::move(p), 1e-2, AdamWOptions{.amsgrad = true});
  });
}

TEST(Optimizer, StateDictLayout) {
  std::vector<Tensor> params{make_param(initial_values()), make_param(initial_values()),
                             make_param(initial_values())};
  Adam opt({ParamGroup({params[0], params[1]}), ParamGroup({params[2]}, {{"lr", 0.5}})},
           AdamOptions{.lr = 0.1});
  set_grad(params[0], grad_at(1));
  set_grad(params[2], grad_at(1));
  opt.step();
  OptimizerStateDict d = opt.state_dict();
  ASSERT_EQ(d.param_groups.size(), 2u);
  EXPECT_EQ(d.param_groups[0].params, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(d.param_groups[1].params, (std::vector<int64_t>{2}));
  EXPECT_DOUBLE_EQ(d.param_groups[1].options.at("lr"), 0.5);
  EXPECT_DOUBLE_EQ(d.param_groups[0].options.at("beta2"), 0.999);
  ASSERT_EQ(d.state.size(), 2u);  // params[1] had no gradient
  EXPECT_EQ(d.state.count(0), 1u);
  EXPECT_EQ(d.state.count(2), 1u);
  EXPECT_EQ(d.state.at(2).step, 1);
  const Tensor& saved = d.state.at(0).buffers.at("exp_avg");
  EXPECT_FALSE(saved.storage() == opt.state(params[0])->buffers.at("exp_avg").storage());
}

TEST(Optimizer, LoadStateDictConvertsToTheParameterDtype) {
  std::vector<Tensor> p64{make_param(initial_values(), DType::f64)};
  SGD opt64(p64, 0.1, {.momentum = 0.9});
  run_steps(opt64, p64, 2);
  std::vector<Tensor> p32{make_param(initial_values(), DType::f32)};
  SGD opt32(p32, 0.1, {.momentum = 0.9});
  opt32.load_state_dict(opt64.state_dict());
  const Tensor& buf = opt32.state(p32[0])->buffers.at("momentum_buffer");
  EXPECT_EQ(buf.dtype(), DType::f32);
  expect_near(buf.to_vector<double>(),
              opt64.state(p64[0])->buffers.at("momentum_buffer").to_vector<double>(), 1e-6);
}

TEST(Optimizer, LoadStateDictErrors) {
  std::vector<Tensor> params{make_param(initial_values()), make_param(initial_values())};
  SGD opt(params, 0.1, {.momentum = 0.9});
  run_steps(opt, params, 1);
  const OptimizerStateDict good = opt.state_dict();

  SGD two_groups({ParamGroup({make_param(initial_values())}), ParamGroup({make_param(initial_values())})},
                 SGDOptions{.lr = 0.1});
  EXPECT_THAT(error_of([&] { two_groups.load_state_dict(good); }),
              HasSubstr("SGD: load_state_dict: the state dict has 1 parameter groups but the "
                        "optimizer has 2"));

  SGD one_param(std::vector<Tensor>{make_param(initial_values())}, 0.1);
  EXPECT_THAT(error_of([&] { one_param.load_state_dict(good); }),
              HasSubstr("group 0 has 2 parameters in the state dict but 1 in the optimizer"));

  std::vector<Tensor> other_shapes{make_param(initial_values()), make_param(initial_values(3))};
  SGD shaped(other_shapes, 0.1, {.momentum = 0.9});
  EXPECT_THAT(error_of([&] { shaped.load_state_dict(good); }),
              HasSubstr("state 'momentum_buffer' of parameter 1 has shape [7] but the parameter "
                        "has shape [3]"));
  EXPECT_EQ(shaped.state(other_shapes[0]), nullptr);  // nothing was loaded

  OptimizerStateDict bad_key = good;
  bad_key.param_groups[0].options["betas"] = 0.9;
  EXPECT_THAT(error_of([&] { opt.load_state_dict(bad_key); }),
              HasSubstr("unknown hyper-parameter 'betas'"));

  OptimizerStateDict bad_index = good;
  bad_index.state.emplace(9, ParamState{});
  EXPECT_THAT(error_of([&] { opt.load_state_dict(bad_index); }),
              HasSubstr("state for parameter index 9 which no group lists"));

  OptimizerStateDict bad_lr = good;
  bad_lr.param_groups[0].options["lr"] = -0.5;
  EXPECT_THAT(error_of([&] { opt.load_state_dict(bad_lr); }),
              HasSubstr("invalid learning rate -0.5"));
}

// ---- replace_parameters ----

TEST(Optimizer, ReplaceParametersMovesStateAndContinues) {
  const AdamRef ref{1e-2, 0.9, 0.999, 1e-8, 0.1, true, true};
  std::vector<Tensor> params{make_param(initial_values())};
  auto opt = make_adam(params, ref);
  run_steps(*opt, params, 3);
  Tensor replacement = make_param(params[0].to_vector<double>());
  Tensor unrelated = make_param(initial_values());
  const int64_t n = opt->replace_parameters(
      {{params[0].impl(), replacement}, {unrelated.impl(), make_param(initial_values())}});
  EXPECT_EQ(n, 1);
  EXPECT_TRUE(opt->param_groups()[0].params[0].is_same(replacement));
  EXPECT_EQ(opt->state(params[0]), nullptr);
  ASSERT_NE(opt->state(replacement), nullptr);
  EXPECT_EQ(opt->state(replacement)->step, 3);
  std::vector<Tensor> now{replacement};
  run_steps(*opt, now, kSteps - 3, 4);
  expect_near(replacement.to_vector<double>(), adam_reference(initial_values(), ref, kSteps), 1e-12);
}

TEST(Optimizer, ReplaceParametersErrors) {
  std::vector<Tensor> params{make_param(initial_values())};
  SGD opt(params, 0.1, {.momentum = 0.9});
  run_steps(opt, params, 1);
  EXPECT_THAT(error_of([&] { opt.replace_parameters({{params[0].impl(), make_param(Vec(3, 0.0))}}); }),
              HasSubstr("already has optimizer state, which cannot move to a replacement of "
                        "shape [3]"));
  Tensor frozen = from_vector(initial_values(), Shape{kN}, DType::f64);
  EXPECT_THAT(error_of([&] { opt.replace_parameters({{params[0].impl(), frozen}}); }),
              HasSubstr("does not require grad"));
  EXPECT_TRUE(opt.param_groups()[0].params[0].is_same(params[0]));  // unchanged
}

// ---- construction errors ----

TEST(Optimizer, ConstructionErrors) {
  EXPECT_THAT(error_of([] { SGD(std::vector<Tensor>{}, 0.1); }),
              HasSubstr("SGD: got an empty parameter list"));
  EXPECT_THAT(error_of([] { Adam(std::vector<Tensor>{}, 0.1); }),
              HasSubstr("Adam: got an empty parameter list"));
  EXPECT_THAT(error_of([] { SGD(std::vector<Tensor>{make_param(initial_values())}, -0.1); }),
              HasSubstr("SGD: invalid learning rate -0.1 (must be >= 0)"));
  EXPECT_THAT(error_of([] { AdamW(std::vector<Tensor>{make_param(initial_values())}, -1.0); }),
              HasSubstr("AdamW: invalid learning rate -1"));
  EXPECT_THAT(error_of([] {
                SGD(std::vector<Tensor>{from_vector(initial_values(), Shape{kN}, DType::f64)}, 0.1);
              }),
              HasSubstr("SGD: add_param_group got a parameter of shape [7] that does not require "
                        "grad"));
  EXPECT_THAT(error_of([] {
                Tensor t = make_param(initial_values());
                t.impl()->grad_fn = std::make_shared<autograd::FunctionNode>("Fake", nullptr);
                SGD(std::vector<Tensor>{t}, 0.1);
              }),
              HasSubstr("non-leaf tensor of shape [7]"));
  EXPECT_THAT(error_of([] {
                SGD(std::vector<Tensor>{make_param(initial_values())}, 0.1, {.dampening = 0.1,
                                                                          .nesterov = true});
              }),
              HasSubstr("nesterov momentum needs momentum > 0 and dampening == 0"));
  EXPECT_THAT(error_of([] {
                Adam(std::vector<Tensor>{make_param(initial_values())}, 0.1, {.beta1 = 1.0});
              }),
              HasSubstr("Adam: invalid beta1 1 (must be in [0, 1))"));
  EXPECT_THAT(error_of([] {
                SGD({ParamGroup({make_param(initial_values())}, {{"momentun", 0.9}})});
              }),
              HasSubstr("unknown hyper-parameter 'momentun' in a parameter group; known: "
                        "dampening, lr, momentum, nesterov, weight_decay"));
  EXPECT_THAT(error_of([] {
                Tensor p = make_param(initial_values());
                SGD(std::vector<Tensor>{p, p}, 0.1);
              }),
              HasSubstr("appears more than once"));
}

}  // namespace
}  // namespace loom::optim
