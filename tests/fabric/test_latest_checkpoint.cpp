// Tests of latest_checkpoint() (fabric/latest_checkpoint.h): the highest step among complete
// checkpoints wins; a killed save's temp file, a truncated file, a sharded directory without
// its index and files that are no checkpoint are skipped; ties and bad folders are refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "fabric/checkpoint.h"
#include "fabric/io/atomic_file.h"
#include "fabric/latest_checkpoint.h"
#include "fabric/sharded_checkpoint.h"
#include "fabric_test_util.h"
#include "tensor/factories.h"

namespace loom {
namespace {

using ::testing::HasSubstr;
using fabric_test::TempDir;
using fabric_test::read_text;
using fabric_test::value_error_of;
namespace fs = std::filesystem;

void save_small(const std::string& path) {
  CheckpointState state{{"model", fabric_test::make_mlp(1)}, {"step", int64_t{3}}};
  save_checkpoint(path, state);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(LatestCheckpoint, TheHighestStepAmongCompleteCheckpointsWins) {
  TempDir dir;
  EXPECT_EQ(latest_checkpoint(dir.str()), std::nullopt) << "an empty folder has none";
  save_small(dir.file("step-5.safetensors"));
  save_small(dir.file("step-10.safetensors"));
  EXPECT_EQ(latest_checkpoint(dir.str()), dir.file("step-10.safetensors"));

  // Incomplete or not checkpoints, all of higher steps:
  std::string whole = read_text(dir.file("step-10.safetensors"));
  // a save killed mid-write leaves its temp file (here even with every byte in it),
  write_bytes(atomic_temp_path(dir.file("step-30.safetensors"), 4242, 7), whole);
  // a file written in place and cut short, and one whose header is cut,
  write_bytes(dir.file("step-20.safetensors"), whole.substr(0, whole.size() - 1));
  write_bytes(dir.file("step-21.safetensors"), whole.substr(0, 20));
  // one with a byte too many,
  write_bytes(dir.file("step-22.safetensors"), whole + "x");
  // a sharded checkpoint whose save did not reach its index,
  fs::create_directory(dir / "step-40");
  save_small((dir / "step-40" / "shard-0-of-2-abc.safetensors").string());
  // and files that are no checkpoint (text, empty, no digits in the name).
  write_bytes(dir.file("metrics-50.csv"), "step,loss\n1,0.5\n");
  write_bytes(dir.file("step-60.safetensors"), "");
  save_small(dir.file("last.safetensors"));
  EXPECT_EQ(latest_checkpoint(dir.str()), dir.file("step-10.safetensors"));

  // A sharded directory counts once its index is there.
  write_bytes((dir / "step-40" / kShardedCheckpointIndex).string(), "{}");
  EXPECT_EQ(latest_checkpoint(dir.str()), (dir / "step-40").string());
}

TEST(LatestCheckpoint, TheStepIsTheLastNumberOfTheNameWithoutItsExtension) {
  TempDir dir;
  save_small(dir.file("epoch=3-step=99.safetensors"));
  save_small(dir.file("epoch=2-step=120.safetensors"));
  save_small(dir.file("ckpt_000101.v2"));  // extension digits are not the step
  EXPECT_EQ(latest_checkpoint(dir.str()), dir.file("epoch=2-step=120.safetensors"));
  save_small(dir.file("step-0000000121.safetensors"));
  EXPECT_EQ(latest_checkpoint(dir.str()), dir.file("step-0000000121.safetensors"));
}

TEST(LatestCheckpoint, TwoCompleteCheckpointsOfOneStepAreRefusedNamingBoth) {
  TempDir dir;
  save_small(dir.file("a-7.safetensors"));
  save_small(dir.file("b-007.safetensors"));
  std::string error = value_error_of([&] { latest_checkpoint(dir.str()); });
  EXPECT_THAT(error, HasSubstr(dir.file("a-7.safetensors")));
  EXPECT_THAT(error, HasSubstr(dir.file("b-007.safetensors")));
  EXPECT_THAT(error, HasSubstr("step 7"));
  // A later step settles it.
  save_small(dir.file("a-8.safetensors"));
  EXPECT_EQ(latest_checkpoint(dir.str()), dir.file("a-8.safetensors"));
}

TEST(LatestCheckpoint, AMissingFolderHasNoneAndAFileIsRefused) {
  TempDir dir;
  EXPECT_EQ(latest_checkpoint(dir.file("not-yet")), std::nullopt);
  save_small(dir.file("step-1.safetensors"));
  EXPECT_THAT(value_error_of([&] { latest_checkpoint(dir.file("step-1.safetensors")); }),
              HasSubstr("is not a directory"));
}

}  // namespace
}  // namespace loom
