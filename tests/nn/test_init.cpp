// nn::init: distributions (moments and bounds on 1e5 samples), fans and gains, the
// interception table (custom tables record calls, the empty table writes nothing), seeding,
// and the default initialisation of Linear.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "nn/nn.h"
#include "tensor/factories.h"
#include "tensor/random.h"

namespace loom::nn {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct Moments {
  double mean = 0, std = 0, min = INFINITY, max = -INFINITY;
};

Moments moments(const Tensor& t) {
  std::vector<double> v = t.to_double_vector();
  Moments m;
  for (double x : v) {
    m.mean += x;
    m.min = std::min(m.min, x);
    m.max = std::max(m.max, x);
  }
  m.mean /= double(v.size());
  for (double x : v) m.std += (x - m.mean) * (x - m.mean);
  m.std = std::sqrt(m.std / double(v.size() - 1));
  return m;
}

// With n = 1e5 samples the standard error of the mean is std / 316 and that of the std
// about std / 447; the tolerances below are 5 of those or more.
constexpr int64_t kRows = 200, kCols = 500;  // 1e5 samples; fan_in 500, fan_out 200

TEST(Init, Uniform) {
  manual_seed(1);
  Tensor t = empty({kRows, kCols});
  init::uniform_(t, -2.0, 3.0);
  Moments m = moments(t);
  EXPECT_NEAR(m.mean, 0.5, 0.03);
  EXPECT_NEAR(m.std, 5.0 / std::sqrt(12.0), 0.02);
  EXPECT_GE(m.min, -2.0);
  EXPECT_LT(m.max, 3.0);
  EXPECT_LT(m.min, -1.99);
  EXPECT_GT(m.max, 2.99);
}

TEST(Init, Normal) {
  manual_seed(2);
  Tensor t = empty({kRows, kCols}, DType::f64);
  init::normal_(t, 1.5, 0.5);
  Moments m = moments(t);
  EXPECT_NEAR(m.mean, 1.5, 0.01);
  EXPECT_NEAR(m.std, 0.5, 0.01);
}

TEST(Init, TruncNormal) {
  manual_seed(3);
  Tensor t = empty({kRows, kCols});
  init::trunc_normal_(t, 0.0, 1.0, -2.0, 2.0);
  Moments m = moments(t);
  // A standard normal truncated to [-a, a]: var = 1 - 2 a phi(a) / (Phi(a) - Phi(-a)).
  double a = 2.0, phi = std::exp(-a * a / 2) / std::sqrt(2 * M_PI), mass = std::erf(a / std::sqrt(2.0));
  EXPECT_NEAR(m.mean, 0.0, 0.02);
  EXPECT_NEAR(m.std, std::sqrt(1 - 2 * a * phi / mass), 0.01);
  EXPECT_GE(m.min, -2.0);
  EXPECT_LE(m.max, 2.0);
  EXPECT_LT(m.min, -1.95);
  EXPECT_GT(m.max, 1.95);
  // Shifted and scaled, with asymmetric bounds: everything lands inside [a, b].
  Tensor s = empty({1000});
  init::trunc_normal_(s, 5.0, 0.02, 4.99, 5.04);
  Moments ms = moments(s);
  EXPECT_GE(ms.min, 4.99f);
  EXPECT_LE(ms.max, 5.04f);
}

TEST(Init, FanInAndFanOut) {
  EXPECT_EQ(init::calculate_fan_in_and_fan_out(empty({3, 5})), (std::pair<int64_t, int64_t>{5, 3}));
  // Conv-like weight (out, in, kh, kw): receptive field 3 * 5 multiplies both.
  EXPECT_EQ(init::calculate_fan_in_and_fan_out(empty({8, 4, 3, 5})),
            (std::pair<int64_t, int64_t>{60, 120}));
  EXPECT_THAT([] {
    try {
      init::calculate_fan_in_and_fan_out(empty({7}));
    } catch (const ValueError& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), HasSubstr(">= 2 dims"));
}

TEST(Init, CalculateGain) {
  EXPECT_EQ(init::calculate_gain("linear"), 1.0);
  EXPECT_EQ(init::calculate_gain("conv2d"), 1.0);
  EXPECT_EQ(init::calculate_gain("sigmoid"), 1.0);
  EXPECT_DOUBLE_EQ(init::calculate_gain("tanh"), 5.0 / 3.0);
  EXPECT_DOUBLE_EQ(init::calculate_gain("relu"), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(init::calculate_gain("leaky_relu"), std::sqrt(2.0 / (1 + 0.01 * 0.01)));
  EXPECT_DOUBLE_EQ(init::calculate_gain("leaky_relu", std::sqrt(5.0)), std::sqrt(1.0 / 3.0));
  EXPECT_EQ(init::calculate_gain("selu"), 0.75);
  EXPECT_THROW(init::calculate_gain("swish"), ValueError);
}

TEST(Init, XavierUniformAndNormal) {
  manual_seed(4);
  Tensor u = empty({kRows, kCols});
  init::xavier_uniform_(u, 2.0);
  double r = 2.0 * std::sqrt(6.0 / double(kRows + kCols));
  Moments mu = moments(u);
  EXPECT_NEAR(mu.mean, 0.0, 5 * r / std::sqrt(3.0) / 316);
  EXPECT_NEAR(mu.std, r / std::sqrt(3.0), 0.01 * r);
  EXPECT_LE(mu.max, r);
  EXPECT_GE(mu.min, -r);
  EXPECT_GT(mu.max, 0.99 * r);

  Tensor n = empty({kRows, kCols});
  init::xavier_normal_(n);
  double s = std::sqrt(2.0 / double(kRows + kCols));
  Moments mn = moments(n);
  EXPECT_NEAR(mn.mean, 0.0, 5 * s / 316);
  EXPECT_NEAR(mn.std, s, 0.012 * s);
}

TEST(Init, KaimingUniformAndNormalWithFanModes) {
  manual_seed(5);
  Tensor u = empty({kRows, kCols});
  init::kaiming_uniform_(u, 0.0, init::FanMode::fan_in, "relu");
  double r = std::sqrt(2.0) * std::sqrt(3.0 / double(kCols));
  Moments mu = moments(u);
  EXPECT_NEAR(mu.std, r / std::sqrt(3.0), 0.01 * r);
  EXPECT_LE(mu.max, r);
  EXPECT_GT(mu.max, 0.99 * r);

  Tensor uo = empty({kRows, kCols});
  init::kaiming_uniform_(uo, 0.0, init::FanMode::fan_out, "relu");
  double ro = std::sqrt(2.0) * std::sqrt(3.0 / double(kRows));
  EXPECT_NEAR(moments(uo).std, ro / std::sqrt(3.0), 0.01 * ro);

  Tensor n = empty({kRows, kCols});
  init::kaiming_normal_(n, 0.0, init::FanMode::fan_out, "tanh");
  double s = (5.0 / 3.0) / std::sqrt(double(kRows));
  Moments mn = moments(n);
  EXPECT_NEAR(mn.mean, 0.0, 5 * s / 316);
  EXPECT_NEAR(mn.std, s, 0.012 * s);

  // Defaults: leaky_relu with a = 0, fan_in; a conv-like shape's fan includes the kernel.
  Tensor c = empty({50, 40, 5, 10});  // fan_in 2000
  init::kaiming_normal_(c);
  EXPECT_NEAR(moments(c).std, std::sqrt(2.0) / std::sqrt(2000.0), 0.012 * std::sqrt(2.0 / 2000));
}

TEST(Init, ConstantsAndDtypes) {
  Tensor t = empty({3}, DType::bf16);
  init::constant_(t, 0.25);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0.25f, 0.25f, 0.25f}));
  init::ones_(t);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{1, 1, 1}));
  init::zeros_(t);
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 0, 0}));
  // A parameter that requires grad is initialised in place without tripping the in-place guard.
  Tensor p = empty({4}).requires_grad_();
  EXPECT_NO_THROW(init::normal_(p));
  Tensor out = init::uniform_(p, 0.0, 1.0);
  EXPECT_TRUE(out.is_same(p));
  EXPECT_TRUE(p.is_leaf());
  // Meta tensors are left alone (no data to write) and no error is raised.
  Tensor m = empty({2, 2}, DType::f32, Device::meta());
  EXPECT_NO_THROW(init::kaiming_uniform_(m));
  EXPECT_NO_THROW(init::trunc_normal_(m));
}

// ---------------------------------------------------------------- interception

std::vector<std::string>& recorded() {
  static std::vector<std::string> calls;
  return calls;
}

const init::InitTable& recording_table() {
  static const init::InitTable table = [] {
    init::InitTable t = init::default_init_table();
    t.uniform_ = [](const Tensor& x, double a, double b) {
      recorded().push_back(detail::concat("uniform ", shape_str(x.sizes()), " ", a, " ", b));
      return init::default_init_table().uniform_(x, a, b);
    };
    t.normal_ = [](const Tensor& x, double mean, double std) {
      recorded().push_back(detail::concat("normal ", shape_str(x.sizes()), " ", mean, " ", std));
      return x;
    };
    t.constant_ = [](const Tensor& x, double v) {
      recorded().push_back(detail::concat("constant ", shape_str(x.sizes()), " ", v));
      return x;
    };
    t.kaiming_uniform_ = [](const Tensor& x, double, init::FanMode, const std::string& nl) {
      recorded().push_back("kaiming_uniform " + shape_str(x.sizes()) + " " + nl);
      return x;
    };
    return t;
  }();
  return table;
}

TEST(InitTable, CustomTableInterceptsLayerInitialisation) {
  recorded().clear();
  {
    init::InitTableGuard g(recording_table());
    EXPECT_EQ(&init::current_init_table(), &recording_table());
    Linear lin(4, 3);
    LayerNorm ln(5);
    Embedding emb(10, 2);
  }
  EXPECT_EQ(&init::current_init_table(), &init::default_init_table());
  EXPECT_THAT(recorded(), ElementsAre("kaiming_uniform [3, 4] leaky_relu", "uniform [3] -0.5 0.5",
                                      "constant [5] 1", "constant [5] 0", "normal [10, 2] 0 1"));
  // Guards nest and restore.
  recorded().clear();
  {
    init::InitTableGuard outer(recording_table());
    {
      init::InitTableGuard inner(init::default_init_table());
      Linear lin(2, 2);
    }
    init::zeros_(empty({1}));
  }
  EXPECT_THAT(recorded(), ElementsAre("constant [1] 0"));
}

TEST(InitTable, EmptyTableLeavesTensorsUntouched) {
  Tensor t = full({4, 6}, 7.0);
  uint64_t version = t.version();
  {
    init::InitTableGuard g(init::empty_init_table());
    init::uniform_(t);
    init::normal_(t);
    init::trunc_normal_(t);
    init::constant_(t, 1.0);
    init::zeros_(t);
    init::ones_(t);
    init::xavier_uniform_(t);
    init::xavier_normal_(t);
    init::kaiming_uniform_(t);
    init::kaiming_normal_(t);
  }
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(24, 7.0f));
  EXPECT_EQ(t.version(), version);  // nothing wrote to it
}

TEST(InitTable, SameSeedSameLinear) {
  manual_seed(42);
  Linear a(16, 8);
  manual_seed(42);
  Linear b(16, 8);
  EXPECT_TRUE(a.weight.equal(b.weight));
  EXPECT_TRUE(a.bias.equal(b.bias));
  Linear c(16, 8);  // the stream moved on
  EXPECT_FALSE(a.weight.equal(c.weight));
}

TEST(InitTable, LinearDefaultInitBounds) {
  manual_seed(7);
  Linear lin(400, 300);
  double bound = 1.0 / std::sqrt(400.0);
  Moments w = moments(lin.weight), b = moments(lin.bias);
  EXPECT_LE(std::max(w.max, -w.min), bound);
  EXPECT_GT(std::max(w.max, -w.min), 0.99 * bound);
  EXPECT_NEAR(w.std, bound / std::sqrt(3.0), 0.01 * bound);  // U(+-bound)
  EXPECT_NEAR(w.mean, 0.0, 0.01 * bound);
  EXPECT_LE(std::max(b.max, -b.min), bound);
}

}  // namespace
}  // namespace loom::nn
