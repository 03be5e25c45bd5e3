// Device (core/device.h): parsing the string forms, their errors, equality and printing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

#include "core/device.h"
#include "core/error.h"

namespace loom {
namespace {

using ::testing::HasSubstr;

TEST(Device, ParsesEveryValidForm) {
  EXPECT_EQ(Device::parse("cpu"), Device::cpu());
  EXPECT_EQ(Device::parse("meta"), Device::meta());
  EXPECT_EQ(Device::parse("cuda"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:0"), Device::cuda(0));
  EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
  EXPECT_EQ(Device::parse("cuda:17"), Device::cuda(17));
  EXPECT_EQ(Device::parse("gpu:2"), Device::cuda(2));
  EXPECT_EQ(Device::parse("gpu"), Device::cuda(0));
  // The implicit constructors parse too, so `Device d = "cuda:1"` reads like torch.device.
  Device d = "cuda:3";
  EXPECT_TRUE(d.is_cuda());
  EXPECT_EQ(d.index, 3);
  EXPECT_EQ(Device(std::string("meta")), Device::meta());
}

TEST(Device, Predicates) {
  EXPECT_TRUE(Device::cpu().is_cpu());
  EXPECT_FALSE(Device::cpu().is_cuda());
  EXPECT_TRUE(Device::meta().is_meta());
  EXPECT_TRUE(Device::cuda(1).is_cuda());
  EXPECT_FALSE(Device::cuda(1).is_meta());
  EXPECT_NE(Device::cuda(0), Device::cuda(1));
  EXPECT_NE(Device::cpu(), Device::meta());
  EXPECT_EQ(Device(), Device::cpu());
}

TEST(Device, InvalidFormsAreValueErrorsNamingTheValidOnes) {
  for (const char* bad : {"cuda:-1", "cuda:x", "tpu", "cuda:", "cuda:1x", "CPU", "", "cuda:1:2",
                          "gpu:-3", "cuda: 1", "cpu:0", "meta:1"}) {
    try {
      Device::parse(bad);
      FAIL() << "'" << bad << "' parsed";
    } catch (const ValueError& e) {
      EXPECT_THAT(e.what(), HasSubstr(std::string("invalid device '") + bad + "'"));
      EXPECT_THAT(e.what(), HasSubstr("'cpu', 'meta', 'cuda' or 'cuda:N'"));
    }
  }
  EXPECT_THROW((void)Device("cuda:-1"), ValueError);
  EXPECT_THROW(Device::parse("cuda:99999999999999999999"), ValueError);  // overflows int
}

TEST(Device, Printing) {
  EXPECT_EQ(Device::cpu().str(), "cpu");
  EXPECT_EQ(Device::meta().str(), "meta");
  EXPECT_EQ(Device::cuda().str(), "cuda:0");
  EXPECT_EQ(Device::parse("gpu:2").str(), "cuda:2");
  std::ostringstream os;
  os << Device::cuda(5) << ' ' << Device::cpu();
  EXPECT_EQ(os.str(), "cuda:5 cpu");
  // str() parses back to the same device.
  for (Device d : {Device::cpu(), Device::meta(), Device::cuda(0), Device::cuda(7)})
    EXPECT_EQ(Device::parse(d.str()), d);
}

}  // namespace
}  // namespace loom
