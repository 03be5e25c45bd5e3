// Tests for Fabric::init_module (fabric.cpp, strategy.cpp): the launch check, the stacked
// device / init-mode / precision contexts, their restoration on every exit path, and the
// proof that empty_init builds a billion-parameter model without touching parameter bytes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fabric_test_util.h"
#include "nn/init.h"
#include "tensor/allocator.h"
#include "tensor/defaults.h"

namespace loom {
namespace {

using ::testing::HasSubstr;
using namespace fabric_test;

TEST(InitModule, RefusesBeforeLaunchWhenTheStrategyNeedsProcesses) {
  Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .devices = 2});
  try {
    auto ctx = fabric.init_module();
    FAIL() << "init_module ran before launch()";
  } catch (const RuntimeError& e) {
    EXPECT_THAT(e.what(), HasSubstr("init_module: the 'ddp' strategy runs in several processes; "
                                    "call fabric.launch() first"));
  }
  EXPECT_EQ(default_dtype(), DType::f32) << "nothing was entered";
  EXPECT_EQ(&nn::init::current_init_table(), &nn::init::default_init_table());

  Fabric single(cpu_options());
  EXPECT_NO_THROW({ auto ctx = single.init_module(); }) << "single device needs no launch";
}

TEST(InitModule, StacksDeviceInitModeAndPrecisionAndRestoresThem) {
  Fabric fabric(cpu_options("bf16-true"));
  {
    auto ctx = fabric.init_module(/*empty_init=*/true);
    EXPECT_EQ(default_device(), fabric.device());
    EXPECT_EQ(default_dtype(), DType::bf16) << "the precision's dtype for new tensors";
    EXPECT_EQ(&nn::init::current_init_table(), &nn::init::empty_init_table());
    nn::Linear l(3, 2);
    EXPECT_EQ(l.weight.dtype(), DType::bf16);
    Tensor z = zeros({4}, DType::f32);
    Tensor same = nn::init::normal_(z, 0.0, 1.0);
    EXPECT_TRUE(same.is_same(z));
    EXPECT_EQ(z.to_double_vector(), std::vector<double>(4, 0.0)) << "init functions touch nothing";
    nn::init::kaiming_uniform_(z);
    EXPECT_EQ(z.to_double_vector(), std::vector<double>(4, 0.0));
  }
  Tensor z = zeros({4});
  nn::init::normal_(z, 0.0, 1.0);
  EXPECT_NE(z.to_double_vector(), std::vector<double>(4, 0.0)) << "outside, init runs again";
  EXPECT_EQ(default_dtype(), DType::f32);
  EXPECT_EQ(default_device(), Device::cpu());
  EXPECT_EQ(&nn::init::current_init_table(), &nn::init::default_init_table());

  for (std::optional<bool> e : {std::optional<bool>(false), std::optional<bool>()}) {
    auto ctx = fabric.init_module(e);
    EXPECT_EQ(&nn::init::current_init_table(), &nn::init::default_init_table())
        << "single device: empty_init false or unset initialises normally";
  }
}

TEST(InitModule, LeavingThroughAnExceptionRestoresEveryDefault) {
  Fabric fabric(cpu_options("16-true"));
  try {
    auto ctx = fabric.init_module(true);
    ASSERT_EQ(default_dtype(), DType::f16);
    throw std::runtime_error("model constructor failed");
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "model constructor failed");
  }
  EXPECT_EQ(default_dtype(), DType::f32);
  EXPECT_EQ(default_device(), Device::cpu());
  EXPECT_EQ(&nn::init::current_init_table(), &nn::init::default_init_table());
  EXPECT_EQ(nn::Linear(2, 2).weight.dtype(), DType::f32);
}

TEST(InitModule, EmptyInitBuildsABillionParametersWithoutAllocatingThem) {
  Fabric fabric(cpu_options());
  int64_t before = memory_stats(Device::cpu()).current_bytes;
  int64_t params = 0;
  {
    std::shared_ptr<nn::Sequential> model;
    {
      auto ctx = fabric.init_module(/*empty_init=*/true);
      model = std::make_shared<nn::Sequential>();
      for (int i = 0; i < 15; ++i) model->push_back(std::make_shared<nn::Linear>(8192, 8192));
    }
    params = model->num_parameters();
    EXPECT_EQ(memory_stats(Device::cpu()).current_bytes, before)
        << "no parameter byte was allocated (lazy storage, init skipped)";
    for (const Tensor& p : model->parameters()) EXPECT_FALSE(p.is_materialized());
    EXPECT_EQ(model->parameters().front().dtype(), DType::f32);
  }
  EXPECT_GE(params, int64_t(1e9));
  EXPECT_EQ(params, 15 * (8192LL * 8192 + 8192));
}

TEST(InitModule, NormalInitMatchesTheSameSeedOutsideTheContext) {
  Fabric fabric(cpu_options());
  auto outside = make_mlp(42);
  std::shared_ptr<nn::Sequential> inside;
  {
    auto ctx = fabric.init_module(/*empty_init=*/false);
    inside = make_mlp(42);
  }
  EXPECT_EQ(snapshot(*inside), snapshot(*outside));
}

}  // namespace
}  // namespace loom
