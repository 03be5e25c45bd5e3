// Tests for Fabric's connector (fabric/connector.cpp): how FabricOptions resolve "auto" and
// aliases, accept objects in `plugins`, and refuse invalid or conflicting choices at
// construction with a loom::ValueError that lists the valid ones.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "dist/cluster_environment.h"
#include "fabric/ddp.h"
#include "fabric_test_util.h"

namespace loom {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace fabric_test;

const char* kValidAccelerators = "cpu, cuda, gpu, mps, tpu, auto";
const char* kValidStrategies =
    "valid: auto, single_device, dp, ddp, ddp_spawn, fsdp, deepspeed";
const char* kValidPrecisions = "64-true, 32-true, 16-mixed, bf16-mixed, 16-true, bf16-true";

TEST(Connector, AutoResolvesToTheVisibleHardware) {
  Fabric fabric;
  bool gpu = cuda_device_count() > 0;
  EXPECT_EQ(fabric.accelerator().name(), gpu ? "cuda" : "cpu");
  EXPECT_EQ(fabric.strategy().devices().size(), gpu ? size_t(cuda_device_count()) : size_t(1));
  EXPECT_EQ(fabric.strategy().name(), fabric.strategy().devices().size() > 1 ? "ddp" : "single_device");
  EXPECT_EQ(fabric.precision().name(), "32-true");
  EXPECT_EQ(fabric.world_size(), 1);
  EXPECT_EQ(fabric.global_rank(), 0);
}

TEST(Connector, OneDeviceIsSingleDeviceAndSeveralAreDdp) {
  Fabric one({.accelerator = "cpu", .devices = 1});
  EXPECT_EQ(one.strategy().name(), "single_device");
  EXPECT_EQ(one.device(), Device::cpu());

  Fabric two({.accelerator = "cpu", .devices = 2});
  EXPECT_EQ(two.strategy().name(), "ddp");
  EXPECT_EQ(two.strategy().devices().size(), 2u);
  EXPECT_FALSE(two.launched());

  Fabric nodes({.accelerator = "cpu", .devices = 1, .num_nodes = 2});
  EXPECT_EQ(nodes.strategy().name(), "ddp") << "several nodes need processes too";
  EXPECT_EQ(nodes.strategy().num_nodes(), 2);

  Fabric listed({.accelerator = "cpu", .devices = "0,0"});
  EXPECT_EQ(listed.strategy().devices(), (std::vector<int>{0, 0}));
  Fabric spawn({.accelerator = "cpu", .strategy = "ddp_spawn", .devices = 2});
  EXPECT_EQ(spawn.strategy().name(), "ddp_spawn");
}

TEST(Connector, GpuIsAnAliasOfCuda) {
  if (cuda_device_count() > 0) {
    Fabric fabric({.accelerator = "gpu", .devices = 1});
    EXPECT_EQ(fabric.accelerator().name(), "cuda");
    EXPECT_TRUE(fabric.device().is_cuda());
  } else {
    std::string gpu = value_error_of([] { Fabric f({.accelerator = "gpu"}); });
    std::string cuda = value_error_of([] { Fabric f({.accelerator = "cuda"}); });
    // The advice must be one that works: no CUDA backend exists yet, so no CMake flag helps.
    EXPECT_THAT(gpu, AllOf(HasSubstr("'cuda'"), HasSubstr("no CUDA device is available"),
                           HasSubstr("accelerator 'cpu'"), Not(HasSubstr("LOOM_CUDA"))));
    EXPECT_EQ(gpu, cuda) << "gpu must resolve exactly as cuda";
  }
}

TEST(Connector, PrecisionNamesAndAliases) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"64-true", "64-true"},       {"64", "64-true"},       {"32-true", "32-true"},
      {"32", "32-true"},            {"16-mixed", "16-mixed"}, {"16", "16-mixed"},
      {"bf16-mixed", "bf16-mixed"}, {"bf16", "bf16-mixed"},   {"bf16-true", "bf16-true"},
      {"16-true", "16-true"}};
  for (const auto& [given, resolved] : cases) {
    Fabric fabric(cpu_options(given));
    EXPECT_EQ(fabric.precision().name(), resolved) << given;
    EXPECT_EQ(&fabric.strategy().precision(), &fabric.precision()) << "the strategy shares it";
  }
  Fabric f16(cpu_options("16-mixed"));
  ASSERT_NE(dynamic_cast<MixedPrecision&>(f16.precision()).scaler(), nullptr);
  Fabric bf16(cpu_options("bf16-mixed"));
  EXPECT_EQ(dynamic_cast<MixedPrecision&>(bf16.precision()).scaler(), nullptr)
      << "bf16 has f32's range: no loss scaling";
}

TEST(Connector, AcceptsObjectsInPlugins) {
  auto precision = std::make_shared<MixedPrecision>(DType::bf16);
  auto strategy = std::make_shared<SingleDeviceStrategy>();
  auto accelerator = std::make_shared<CPUAccelerator>();
  Fabric fabric({.devices = 1, .plugins = {precision, strategy, accelerator}});
  EXPECT_EQ(&fabric.precision(), precision.get());
  EXPECT_EQ(&fabric.strategy(), strategy.get());
  EXPECT_EQ(&fabric.accelerator(), accelerator.get());
  EXPECT_EQ(&strategy->precision(), precision.get()) << "the connector configures the strategy";
  EXPECT_EQ(&strategy->accelerator(), accelerator.get());

  // A strategy object through `strategy`, and a cluster environment for it through plugins.
  auto ddp = std::make_shared<DDPStrategy>();
  auto env = std::make_shared<dist::LocalEnvironment>(dist::EnvMap{});
  Fabric with_env({.accelerator = "cpu", .strategy = ddp, .devices = 2, .plugins = {env}});
  EXPECT_EQ(&with_env.strategy(), ddp.get());
  EXPECT_EQ(with_env.strategy().devices().size(), 2u);
}

TEST(Connector, RefusesUnknownNamesListingTheValidOnes) {
  EXPECT_THAT(value_error_of([] { Fabric f({.accelerator = "xpu"}); }),
              AllOf(HasSubstr("unknown accelerator 'xpu'"), HasSubstr(kValidAccelerators)));
  EXPECT_THAT(value_error_of([] { Fabric f({.accelerator = "cpu", .strategy = "horovod"}); }),
              AllOf(HasSubstr("unknown strategy 'horovod'"), HasSubstr(kValidStrategies)));
  EXPECT_THAT(value_error_of([] { Fabric f(cpu_options("8-true")); }),
              AllOf(HasSubstr("precision '8-true' is not supported"), HasSubstr(kValidPrecisions),
                    HasSubstr("aliases: 64, 32, 16, bf16")));
}

TEST(Connector, RefusesMpsAndTpuOnThisBuild) {
  for (const char* name : {"mps", "tpu"})
    EXPECT_THAT(value_error_of([&] { Fabric f({.accelerator = name}); }),
                AllOf(HasSubstr(std::string("accelerator '") + name + "' is not available in this build"),
                      HasSubstr(kValidAccelerators)));
}

TEST(Connector, RefusesInvalidDeviceAndNodeCounts) {
  EXPECT_THAT(value_error_of([] { Fabric f({.accelerator = "cpu", .devices = 0}); }),
              HasSubstr("devices=0 is invalid; pass a positive count, a list of indices, -1 or \"auto\""));
  EXPECT_THAT(value_error_of([] { Fabric f({.accelerator = "cpu", .devices = -3}); }),
              HasSubstr("devices=-3 is invalid"));
  EXPECT_THAT(value_error_of([] { Fabric f({.accelerator = "cpu", .devices = std::vector<int>{}}); }),
              HasSubstr("devices=[] is invalid"));
  EXPECT_THAT(value_error_of([] { Fabric f({.accelerator = "cpu", .devices = "many"}); }),
              HasSubstr("devices=\"many\" is invalid; use a count, \"auto\", -1 or \"0,1\""));
  EXPECT_THAT(value_error_of([] { Fabric f({.accelerator = "cpu", .devices = "0,x"}); }),
              HasSubstr("devices=\"0,x\" is invalid; use a count, \"auto\", -1 or \"0,1\""));
  EXPECT_THAT(value_error_of([] { Fabric f({.accelerator = "cpu", .num_nodes = 0}); }),
              HasSubstr("num_nodes=0 is invalid; it must be >= 1"));
  EXPECT_THAT(value_error_of([] {
                Fabric f({.accelerator = "cpu", .strategy = "single_device", .devices = 2});
              }),
              HasSubstr("strategy 'single_device' runs on one device but devices=2; use "
                        "strategy='ddp' or devices=1"));
  Fabric minus_one({.accelerator = "cpu", .devices = -1});
  EXPECT_EQ(minus_one.strategy().devices().size(), 1u) << "-1 on cpu: the one cpu device";
}

TEST(Connector, DeepSpeedStageNamesAreStrategies) {
  // Every deepspeed stage name builds the deepspeed strategy; others are refused listing them
  // (tests/fabric/test_deepspeed.cpp has the rest).
  for (const char* name : {"deepspeed", "deepspeed_stage_1", "deepspeed_stage_3_offload"})
    EXPECT_EQ(Fabric({.accelerator = "cpu", .strategy = name}).strategy().name(), "deepspeed");
  EXPECT_THAT(value_error_of([&] { Fabric f({.accelerator = "cpu", .strategy = "deepspeed_stage_4"}); }),
              HasSubstr("unknown strategy 'deepspeed_stage_4'; the deepspeed strategies are"));
}

TEST(Connector, FsdpIsAStrategy) {
  Fabric fabric({.accelerator = "cpu", .strategy = "fsdp", .devices = 2});
  EXPECT_EQ(fabric.strategy().name(), "fsdp");
}

TEST(Connector, RefusesConflictingPlugins) {
  auto p1 = std::make_shared<TruePrecision>(DType::f32);
  auto p2 = std::make_shared<MixedPrecision>(DType::bf16);
  EXPECT_THAT(value_error_of([&] { Fabric f({.accelerator = "cpu", .plugins = {p1, p2}}); }),
              HasSubstr("plugins: two precision plugins were given; pass exactly one"));
  auto s1 = std::make_shared<SingleDeviceStrategy>();
  auto s2 = std::make_shared<SingleDeviceStrategy>();
  EXPECT_THAT(value_error_of([&] { Fabric f({.accelerator = "cpu", .plugins = {s1, s2}}); }),
              HasSubstr("plugins: two strategies were given; pass exactly one"));
  EXPECT_THAT(value_error_of([&] { Fabric f({.accelerator = "cpu", .strategy = s1, .plugins = {s2}}); }),
              HasSubstr("passed both as `strategy` and in `plugins`; pass it once"));
  auto a1 = std::make_shared<CPUAccelerator>();
  auto a2 = std::make_shared<CPUAccelerator>();
  EXPECT_THAT(value_error_of([&] { Fabric f({.plugins = {a1, a2}}); }),
              HasSubstr("plugins: two accelerators were given; pass exactly one"));
  EXPECT_THAT(value_error_of([&] {
                Fabric f({.accelerator = "cpu", .callbacks = {std::shared_ptr<Callback>()}});
              }),
              HasSubstr("callbacks: a callback is null"));
}

}  // namespace
}  // namespace loom
