// CPU feature detection and the LOOM_CPU_CAPABILITY cap (kernels/cpu/capability.h).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "kernels/cpu/capability.h"
#include "core/error.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

TEST(CpuCapability, ParsesEveryLevelNameAndNothingElse) {
  EXPECT_EQ(parse_cpu_capability(nullptr), std::nullopt);
  EXPECT_EQ(parse_cpu_capability(""), std::nullopt);
  EXPECT_EQ(parse_cpu_capability("default"), CpuLevel::default_);
  EXPECT_EQ(parse_cpu_capability("avx2"), CpuLevel::avx2);
  EXPECT_EQ(parse_cpu_capability("avx512"), CpuLevel::avx512);
  EXPECT_EQ(parse_cpu_capability("avx512_bf16"), CpuLevel::avx512_bf16);
  EXPECT_EQ(parse_cpu_capability("amx"), CpuLevel::amx);
  for (const char* bad : {"AVX2", "avx512bf16", "sse", " avx2", "native"}) {
    try {
      parse_cpu_capability(bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const ValueError& e) {
      EXPECT_THAT(e.what(), HasSubstr("LOOM_CPU_CAPABILITY"));
      EXPECT_THAT(e.what(), HasSubstr(std::string("'") + bad + "'"));
      EXPECT_THAT(e.what(), HasSubstr("default, avx2, avx512, avx512_bf16, amx"));
    }
  }
}

TEST(CpuCapability, LevelFollowsTheFlags) {
  const CpuCapability cap = cpu_capability();
  const CpuFlags& f = cap.flags;
  EXPECT_LE(cap.level, cap.detected);
  const CpuLevel d = cap.detected;
  EXPECT_EQ(d >= CpuLevel::avx2, f.avx2 && f.fma && f.f16c);
  EXPECT_EQ(d >= CpuLevel::avx512,
            d >= CpuLevel::avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq);
  EXPECT_EQ(d >= CpuLevel::avx512_bf16, d >= CpuLevel::avx512 && f.avx512_bf16);
  EXPECT_EQ(d >= CpuLevel::amx, d >= CpuLevel::avx512_bf16 && f.amx_tile && f.amx_bf16);
}

// What cpuid reports agrees with the kernel's view (/proc/cpuinfo), where there is one.
TEST(CpuCapability, FlagsAgreeWithProcCpuinfo) {
  std::ifstream in("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) {
      flags = line + " ";
      break;
    }
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo";
  auto has = [&](const char* name) { return flags.find(std::string(" ") + name + " ") != std::string::npos; };
  const CpuFlags f = cpu_capability().flags;
  EXPECT_EQ(f.avx2, has("avx2"));
  EXPECT_EQ(f.fma, has("fma"));
  EXPECT_EQ(f.f16c, has("f16c"));
  EXPECT_EQ(f.avx512f, has("avx512f"));
  EXPECT_EQ(f.avx512bw, has("avx512bw"));
  EXPECT_EQ(f.avx512vl, has("avx512vl"));
  EXPECT_EQ(f.avx512_bf16, has("avx512_bf16"));
  EXPECT_EQ(f.amx_tile, has("amx_tile"));
}

TEST(CpuCapability, GuardCapsAndRestores) {
  const CpuLevel before = cpu_level();
  {
    CpuLevelGuard cap(CpuLevel::default_);
    EXPECT_EQ(cpu_level(), CpuLevel::default_);
    EXPECT_EQ(cpu_capability().level, CpuLevel::default_);
    {
      CpuLevelGuard up(CpuLevel::amx);  // never above what the process may use
      EXPECT_EQ(cpu_level(), CpuLevel(max_cpu_level_index()));
    }
    EXPECT_EQ(cpu_level(), CpuLevel::default_);
  }
  EXPECT_EQ(cpu_level(), before);
}

TEST(CpuCapability, PrintsOneLine) {
  std::ostringstream out;
  out << cpu_capability();
  EXPECT_THAT(out.str(), HasSubstr(to_string(cpu_level())));
  EXPECT_THAT(out.str(), HasSubstr("detected"));
  const std::string line = cpu_capability_description();
  EXPECT_THAT(line, HasSubstr("cpu: "));
  EXPECT_THAT(line, HasSubstr("gemm: "));
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

}  // namespace
}  // namespace loom
