// Tests for fabric/loggers (CSV and TensorBoard loggers, versioned folders, hparams.yaml) and
// fabric/io/crc32c.h. The TensorBoard tests decode event files with their own small protobuf
// reader, checking every record's framing and both CRCs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "fabric/io/crc32c.h"
#include "fabric/loggers/csv_logger.h"
#include "fabric/loggers/event_file.h"
#include "fabric/loggers/tensorboard_logger.h"
#include "fabric_test_util.h"
#include "core/error.h"
#include "tests/fabric/ddp_harness.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

using fabric_test::TempDir;
const auto read_bytes = fabric_test::read_text;  // the whole file, bytes as they are

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

// ---------------------------------------------------------------------------------------------
// CRC-32C
// ---------------------------------------------------------------------------------------------

TEST(Crc32c, MatchesKnownVectors) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);  // the standard check value
  EXPECT_EQ(crc32c("", 0), 0u);
  // RFC 3720 (iSCSI) appendix B.4 test vectors.
  std::string zeros(32, '\0'), ones(32, '\xff');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
}

TEST(Crc32c, ResumesAcrossPieces) {
  const char* text = "The quick brown fox jumps over the lazy dog";
  size_t n = std::strlen(text);
  EXPECT_EQ(crc32c(text + 10, n - 10, crc32c(text, 10)), crc32c(text, n));
  EXPECT_EQ(mask_crc32c(0), 0xa282ead8u);
}

// ---------------------------------------------------------------------------------------------
// Versioned folders and hparams.yaml
// ---------------------------------------------------------------------------------------------

TEST(LogDir, ClaimsTheNextFreeVersionLazily) {
  TempDir root;
  LogDir a(root.str(), "exp", std::nullopt);
  EXPECT_FALSE(fs::exists(root / "exp")) << "nothing is created before first use";
  EXPECT_EQ(a.version(), 0);
  EXPECT_EQ(a.path(), (root / "exp/version_0").string());
  fs::create_directories(root / "exp/version_7");
  fs::create_directories(root / "exp/version_x");  // not a version folder: ignored
  LogDir b(root.str(), "exp", std::nullopt);
  EXPECT_EQ(b.version(), 8);
  LogDir pinned(root.str(), "exp", 3);
  EXPECT_EQ(pinned.path(), (root / "exp/version_3").string());
  EXPECT_TRUE(fs::is_directory(root / "exp/version_3"));
  LogDir unnamed(root.str(), "", std::nullopt);
  EXPECT_EQ(unnamed.path(), (root / "version_0").string());
  EXPECT_THROW(LogDir(root.str(), "exp", -1), ValueError);
}

TEST(LogDir, SharedVersionsClaimOneFolderOnceAndANewLogDirTakesTheNext) {
  TempDir root;
  LogDir csv(root.str(), "exp", std::nullopt), tb(root.str() + "/./", "exp", std::nullopt);
  ASSERT_TRUE(tb.same_parent(csv)) << "the same folder, spelled differently";
  tb.share_version_with(csv);
  EXPECT_TRUE(tb.shares_version_with(csv));
  EXPECT_FALSE(fs::exists(root / "exp")) << "sharing claims nothing";
  EXPECT_EQ(tb.version(), 0);
  EXPECT_EQ(csv.version(), 0) << "claimed once, for both";
  EXPECT_EQ(csv.path(), tb.path());
  LogDir next_run(root.str(), "exp", std::nullopt);
  EXPECT_EQ(next_run.version(), 1);
  EXPECT_EQ(files_in(root / "exp"), (std::vector<std::string>{"version_0", "version_1"}));
}

TEST(LogDir, SharingAdoptsTheVersionOneOfThemKnowsAndRefusesTwoDifferentOnes) {
  TempDir root;
  LogDir given(root.str(), "exp", 4), unset(root.str(), "exp", std::nullopt);
  given.share_version_with(unset);
  EXPECT_EQ(unset.known_version(), 4);
  EXPECT_EQ(unset.path(), (root / "exp/version_4").string());
  EXPECT_FALSE(fs::exists(root / "exp/version_0"));

  LogDir three(root.str(), "exp", 3), five(root.str(), "exp", 5), other(root.str(), "other", 3);
  EXPECT_THROW(three.share_version_with(five), ValueError);
  EXPECT_THROW(three.share_version_with(other), ValueError);
  EXPECT_FALSE(three.same_parent(other));
}

TEST(LogDir, APinnedVersionIsUsedWithoutClaimingAnother) {
  TempDir root;
  LogDir a(root.str(), "exp", std::nullopt), b(root.str(), "exp", std::nullopt);
  b.share_version_with(a);
  a.pin_version(2);  // another process claimed version_2 for this run
  EXPECT_EQ(b.version(), 2);
  EXPECT_EQ(a.path(), (root / "exp/version_2").string());
  EXPECT_EQ(files_in(root / "exp"), std::vector<std::string>{"version_2"});
  EXPECT_THROW(a.pin_version(-1), ValueError);
}

TEST(LogDir, WritesHparamsAsQuotedYaml) {
  TempDir root;
  write_hparams_yaml((root / "h.yaml").string(),
                     {{"lr", "0.001"}, {"model", "gpt \"small\""}, {"note", "a: b\nc"}});
  EXPECT_EQ(read_bytes(root / "h.yaml"),
            "\"lr\": \"0.001\"\n\"model\": \"gpt \\\"small\\\"\"\n\"note\": \"a: b\\nc\"\n");
}

// ---------------------------------------------------------------------------------------------
// CSVLogger
// ---------------------------------------------------------------------------------------------

TEST(CSVLogger, WritesOneRowPerCallAndWidensTheHeader) {
  TempDir root;
  CSVLogger logger(root.str());
  EXPECT_EQ(logger.name(), "loom_logs");
  logger.log_metrics({{"loss", 1.5}}, 0);
  logger.log_metrics({{"loss", 0.1}}, 1);
  EXPECT_EQ(logger.log_dir(), (root / "loom_logs/version_0").string());
  // Appends are flushed: the file is complete while the logger is still open.
  EXPECT_THAT(lines_of(read_bytes(logger.metrics_path())),
              ElementsAre("step,loss", "0,1.5", "1,0.1"));

  logger.log_metrics({{"acc", 0.75}, {"loss", 1e-300}}, 2);  // new key: header rewritten
  logger.log_metrics({{"acc", std::nan("")}}, 3);
  logger.finalize();
  auto lines = lines_of(read_bytes(logger.metrics_path()));
  EXPECT_THAT(lines, ElementsAre("step,loss,acc", "0,1.5,", "1,0.1,", "2,1e-300,0.75", "3,,nan"));
  // Parse the cells back as numbers: values round-trip exactly.
  std::vector<double> loss;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::string cell = lines[i].substr(lines[i].find(',') + 1);
    cell = cell.substr(0, cell.find(','));
    if (!cell.empty()) loss.push_back(std::stod(cell));
  }
  EXPECT_THAT(loss, ElementsAre(1.5, 0.1, 1e-300));
  EXPECT_EQ(files_in(logger.log_dir()), std::vector<std::string>{"metrics.csv"})
      << "no temp file is left after a rewrite";
}

TEST(CSVLogger, ResumingAVersionContinuesItsFile) {
  TempDir root;
  {
    CSVLogger first(root.str(), "run");
    first.log_metrics({{"loss", 2.0}}, 0);
  }
  // A crash in the middle of a row leaves a partial line; the resumed logger drops it.
  {
    std::ofstream out(root / "run/version_0/metrics.csv", std::ios::app);
    out << "1,1.";
  }
  CSVLogger resumed(root.str(), "run", 0);
  resumed.log_metrics({{"loss", 1.0}}, 1);
  resumed.log_metrics({{"lr", 0.5}}, 2);
  EXPECT_THAT(lines_of(read_bytes(resumed.metrics_path())),
              ElementsAre("step,loss,lr", "0,2,", "1,1,", "2,,0.5"));
  CSVLogger next(root.str(), "run");
  EXPECT_EQ(next.version(), 1);
}

TEST(CSVLogger, RefusesNamesThatAreNotColumns) {
  TempDir root;
  CSVLogger logger(root.str());
  for (const char* bad : {"a,b", "step", "", "say \"hi\"", "two\nlines"}) {
    try {
      logger.log_metrics({{bad, 1.0}}, 0);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const ValueError& e) {
      EXPECT_THAT(e.what(), HasSubstr("rename it"));
    }
  }
  EXPECT_FALSE(fs::exists(root / "loom_logs")) << "a refused call writes nothing";
}

TEST(CSVLogger, RefusesAForeignFile) {
  TempDir root;
  fs::create_directories(root / "loom_logs/version_0");
  std::ofstream(root / "loom_logs/version_0/metrics.csv") << "epoch,loss\n0,1\n";
  CSVLogger logger(root.str(), "loom_logs", 0);
  EXPECT_THROW(logger.log_metrics({{"loss", 1.0}}, 1), ValueError);
}

TEST(CSVLogger, MergesHyperparameters) {
  TempDir root;
  CSVLogger logger(root.str());
  logger.log_hyperparams({{"lr", "0.1"}, {"batch", "32"}});
  logger.log_hyperparams({{"lr", "0.2"}});
  EXPECT_EQ(read_bytes(fs::path(logger.log_dir()) / "hparams.yaml"),
            "\"batch\": \"32\"\n\"lr\": \"0.2\"\n");
}

// ---------------------------------------------------------------------------------------------
// TensorBoard event files
// ---------------------------------------------------------------------------------------------

// The fields of an Event this project writes, as decoded by the test.
struct DecodedEvent {
  std::optional<double> wall_time;
  int64_t step = 0;
  std::optional<std::string> file_version;
  std::vector<std::pair<std::string, float>> values;
};

// A minimal protobuf reader over one message, failing the test on anything unexpected.
class ProtoReader {
 public:
  explicit ProtoReader(std::string_view bytes) : rest_(bytes) {}
  bool done() const { return rest_.empty(); }
  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (rest_.empty()) throw std::runtime_error("varint runs past the message");
      auto byte = static_cast<uint8_t>(rest_[0]);
      rest_.remove_prefix(1);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return value;
    }
    throw std::runtime_error("varint longer than 10 bytes");
  }
  std::string_view take(size_t n) {
    if (n > rest_.size()) throw std::runtime_error("field runs past the message");
    auto out = rest_.substr(0, n);
    rest_.remove_prefix(n);
    return out;
  }
  template <class T>
  T fixed() {
    T value;
    std::memcpy(&value, take(sizeof(T)).data(), sizeof(T));
    return value;
  }

 private:
  std::string_view rest_;
};

DecodedEvent decode_event(std::string_view bytes) {
  DecodedEvent event;
  ProtoReader r(bytes);
  while (!r.done()) {
    uint64_t tag = r.varint();
    switch (tag) {
      case (1 << 3) | 1:
        event.wall_time = r.fixed<double>();
        break;
      case (2 << 3) | 0:
        event.step = static_cast<int64_t>(r.varint());
        break;
      case (3 << 3) | 2:
        event.file_version = std::string(r.take(r.varint()));
        break;
      case (5 << 3) | 2: {
        ProtoReader summary(r.take(r.varint()));
        while (!summary.done()) {
          EXPECT_EQ(summary.varint(), (1u << 3) | 2) << "Summary.value";
          ProtoReader value(summary.take(summary.varint()));
          std::pair<std::string, float> tv;
          while (!value.done()) {
            uint64_t vtag = value.varint();
            if (vtag == ((1 << 3) | 2)) {
              tv.first = value.take(value.varint());
            } else if (vtag == ((2 << 3) | 5)) {
              tv.second = value.fixed<float>();
            } else {
              ADD_FAILURE() << "unexpected Value tag " << vtag;
              return event;
            }
          }
          event.values.push_back(tv);
        }
        break;
      }
      default:
        ADD_FAILURE() << "unexpected Event tag " << tag;
        return event;
    }
  }
  return event;
}

// events.out.tfevents.<unix_seconds>.<hostname>.<this pid>.<counter>. Checked by hand: GCC 12's
// std::regex trips -Wmaybe-uninitialized under the sanitizers.
bool is_event_file_name(const std::string& name) {
  const std::string prefix = "events.out.tfevents.";
  auto all_digits = [](std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
  };
  if (name.compare(0, prefix.size(), prefix) != 0) return false;
  std::string rest = name.substr(prefix.size());
  size_t first_dot = rest.find('.'), last_dot = rest.rfind('.');
  if (first_dot == std::string::npos || last_dot == first_dot) return false;
  std::string middle = rest.substr(first_dot + 1, last_dot - first_dot - 1);  // host.pid
  std::string pid = "." + std::to_string(::getpid());
  return all_digits(std::string_view(rest).substr(0, first_dot)) &&
         all_digits(std::string_view(rest).substr(last_dot + 1)) && middle.size() > pid.size() &&
         middle.compare(middle.size() - pid.size(), pid.size(), pid) == 0;
}

// Splits an event file into records, checking each one's framing and both masked CRCs.
std::vector<std::string> read_records(const std::string& file) {
  std::vector<std::string> records;
  std::string_view rest = file;
  auto u32 = [](std::string_view b) {
    uint32_t v;
    std::memcpy(&v, b.data(), 4);
    return v;
  };
  while (!rest.empty()) {
    EXPECT_GE(rest.size(), 12u) << "truncated record header";
    if (rest.size() < 12) break;
    uint64_t length;
    std::memcpy(&length, rest.data(), 8);
    EXPECT_EQ(u32(rest.substr(8)), mask_crc32c(crc32c(rest.data(), 8))) << "length CRC";
    EXPECT_LE(12 + length + 4, rest.size()) << "truncated record";
    if (12 + length + 4 > rest.size()) break;
    std::string_view data = rest.substr(12, length);
    EXPECT_EQ(u32(rest.substr(12 + length)), mask_crc32c(crc32c(data.data(), data.size())))
        << "data CRC";
    records.emplace_back(data);
    rest.remove_prefix(12 + length + 4);
  }
  return records;
}

TEST(EventFile, EncodesAScalarEventByteForByte) {
  // Event{wall_time=1.0, step=5, summary={value {tag "a" simple_value 2.0}}}, hand-encoded:
  //   09 <1.0 as LE double>          field 1, fixed64
  //   10 05                          field 2, varint 5
  //   2A 0A                          field 5, 10 bytes: Summary
  //     0A 08                        Summary.value, 8 bytes: Value
  //       0A 01 'a'                  Value.tag
  //       15 <2.0f as LE float>      Value.simple_value, fixed32
  std::string expected(
      "\x09\x00\x00\x00\x00\x00\x00\xF0\x3F\x10\x05\x2A\x0A\x0A\x08\x0A\x01"
      "a\x15\x00\x00\x00\x40",
      23);
  EXPECT_EQ(encode_scalars_event(1.0, 5, {{"a", 2.0}}), expected);

  std::string version = encode_file_version_event(0.0);
  EXPECT_EQ(version.substr(9), std::string("\x1A\x0D") + "brain.Event:2");

  // Negative steps use the 10-byte two's-complement varint of an int64.
  auto event = decode_event(encode_scalars_event(0.0, -1, {}));
  EXPECT_EQ(event.step, -1);
}

TEST(EventFile, FramesRecords) {
  std::string record = frame_record("");
  ASSERT_EQ(record.size(), 16u);
  EXPECT_THAT(read_records(record), ElementsAre(""));
  std::string data(300, 'x');  // a length above 127 checks the uint64 length field
  EXPECT_THAT(read_records(frame_record(data) + frame_record("y")), ElementsAre(data, "y"));
}

TEST(TensorBoardLogger, WritesEventsTensorBoardCanRead) {
  TempDir root;
  TensorBoardLogger logger(root.str(), "tb");
  EXPECT_EQ(logger.event_file_path(), "");
  double before = wall_time_now();
  logger.log_metrics({{"train/loss", 2.5}, {"lr", 0.001}}, 0);
  logger.log_metrics({{"train/loss", 1.25}}, 10);
  logger.log_metrics({{"val/acc", 0.875}}, 1LL << 40);

  EXPECT_EQ(logger.log_dir(), (root / "tb/version_0").string());
  auto files = files_in(logger.log_dir());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_TRUE(is_event_file_name(files[0])) << files[0];
  EXPECT_EQ(fs::path(logger.event_file_path()).filename(), files[0]);

  // Read while the logger is still open: every record is already on disk.
  auto records = read_records(read_bytes(logger.event_file_path()));
  ASSERT_EQ(records.size(), 4u);
  auto header = decode_event(records[0]);
  EXPECT_EQ(header.file_version, "brain.Event:2");
  ASSERT_TRUE(header.wall_time.has_value());
  EXPECT_GE(*header.wall_time, before - 1);
  EXPECT_LE(*header.wall_time, wall_time_now() + 1);

  std::vector<DecodedEvent> events;
  for (size_t i = 1; i < records.size(); ++i) events.push_back(decode_event(records[i]));
  EXPECT_EQ(events[0].step, 0);
  using V = std::pair<std::string, float>;
  EXPECT_THAT(events[0].values, ElementsAre(V{"lr", 0.001f}, V{"train/loss", 2.5f}));
  EXPECT_EQ(events[1].step, 10);
  EXPECT_THAT(events[1].values, ElementsAre(V{"train/loss", 1.25f}));
  EXPECT_EQ(events[2].step, 1LL << 40);
  EXPECT_THAT(events[2].values, ElementsAre(V{"val/acc", 0.875f}));
  for (const auto& e : events) {
    EXPECT_FALSE(e.file_version.has_value());
    EXPECT_TRUE(e.wall_time.has_value());
  }

  logger.log_hyperparams({{"optimizer", "adamw"}});
  logger.finalize();
  EXPECT_EQ(logger.event_file_path(), "");
  logger.log_metrics({{"train/loss", 1.0}}, 11);     // after finalize: a new file, same folder
  EXPECT_EQ(files_in(logger.log_dir()).size(), 3u);  // two event files + hparams.yaml
  EXPECT_EQ(read_records(read_bytes(logger.event_file_path())).size(), 2u);
}

// ---------------------------------------------------------------------------------------------
// One run, one folder (Fabric links its loggers, ranks agree)
// ---------------------------------------------------------------------------------------------

struct RunLoggers {
  std::shared_ptr<CSVLogger> csv;
  std::shared_ptr<TensorBoardLogger> tb;
};

// One "run": a Fabric with a CSV and a TensorBoard logger under root/exp (no versions given)
// logging `steps` values of "loss" starting at `first`.
RunLoggers run_once(const std::string& root, int first, int steps,
                    std::optional<int> tb_version = std::nullopt) {
  RunLoggers run{std::make_shared<CSVLogger>(root, "exp"),
                 std::make_shared<TensorBoardLogger>(root, "exp", tb_version)};
  Fabric fabric({.accelerator = "cpu", .devices = 1, .loggers = {run.csv, run.tb}});
  fabric.launch();
  for (int s = 0; s < steps; ++s) fabric.log("loss", double(first + s), s);
  run.csv->finalize();
  run.tb->finalize();
  return run;
}

TEST(FabricLoggers, EachRunLogsToANewFolderSharedByItsCsvAndTensorBoardLoggers) {
  TempDir root;
  RunLoggers first = run_once(root.str(), 100, 2);
  RunLoggers second = run_once(root.str(), 200, 3);
  EXPECT_EQ(files_in(root / "exp"), (std::vector<std::string>{"version_0", "version_1"}));
  EXPECT_EQ(first.csv->log_dir(), (root / "exp/version_0").string());
  EXPECT_EQ(first.tb->log_dir(), first.csv->log_dir()) << "one run, one folder";
  EXPECT_EQ(second.csv->log_dir(), (root / "exp/version_1").string());
  EXPECT_EQ(second.tb->log_dir(), second.csv->log_dir());
  // Each metrics.csv holds only its own run's steps, next to that run's event file.
  EXPECT_THAT(lines_of(read_bytes(first.csv->metrics_path())),
              ElementsAre("step,loss", "0,100", "1,101"));
  EXPECT_THAT(lines_of(read_bytes(second.csv->metrics_path())),
              ElementsAre("step,loss", "0,200", "1,201", "2,202"));
  for (const RunLoggers* run : {&first, &second}) {
    auto files = files_in(run->csv->log_dir());
    ASSERT_EQ(files.size(), 2u);
    EXPECT_TRUE(is_event_file_name(files[0])) << files[0];
    EXPECT_EQ(files[1], "metrics.csv");
  }
}

TEST(FabricLoggers, AVersionGivenToOneLoggerOfARunIsTheRunsFolder) {
  TempDir root;
  RunLoggers run = run_once(root.str(), 1, 1, /*tb_version=*/7);
  EXPECT_EQ(run.csv->log_dir(), (root / "exp/version_7").string());
  EXPECT_EQ(run.tb->log_dir(), run.csv->log_dir());
  EXPECT_EQ(files_in(root / "exp"), std::vector<std::string>{"version_7"});
}

// Two ranks with a CSV and a TensorBoard logger each (every rank builds its loggers, rank 0
// alone logs): every rank's loggers name the folder rank 0 claimed, and no rank claims its own.
LOOM_DDP_SCENARIO(run_folders) {
  std::string root = ddptest::job_env("LOOM_LOG_ROOT");
  auto csv = std::make_shared<CSVLogger>(root, "exp");
  auto tb = std::make_shared<TensorBoardLogger>(root, "exp");
  Fabric fabric({.accelerator = "cpu", .strategy = "ddp", .devices = 2, .loggers = {csv, tb}});
  fabric.launch();
  int r = fabric.global_rank();
  ddptest::record_text(r, "csv_dir", csv->log_dir());
  ddptest::record_text(r, "tb_dir", tb->log_dir());
  fabric.log("loss", 0.5, 0);
  fabric.barrier();
}

TEST(FabricLoggers, EveryRankNamesTheFolderRankZeroClaimed) {
  TempDir root;
  fs::create_directories(root / "exp/version_0");  // an earlier run
  ddptest::Job job = ddptest::run_job("run_folders", {{"LOOM_LOG_ROOT", root.str()}}, 30s);
  ASSERT_TRUE(job.ok()) << job.describe();
  std::string expected = (root / "exp/version_1").string();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(job.rank(r).text("csv_dir"), expected) << "rank " << r << "\n" << job.describe();
    EXPECT_EQ(job.rank(r).text("tb_dir"), expected) << "rank " << r;
  }
  EXPECT_EQ(files_in(root / "exp"), (std::vector<std::string>{"version_0", "version_1"}));
  EXPECT_THAT(lines_of(read_bytes(root / "exp/version_1/metrics.csv")),
              ElementsAre("step,loss", "0,0.5"));
}

}  // namespace
}  // namespace loom
