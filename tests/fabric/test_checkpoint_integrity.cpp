// Tests for what a checkpoint load checks before it changes anything (fabric/checkpoint.h):
// tensor and header checksums (every flipped bit of a small checkpoint is refused), and
// refusals of well-formed files whose content does not fit -- each naming the key and leaving
// every module, optimizer, scheduler and plain value byte-identical.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint_test_util.h"
#include "fabric/io/atomic_file.h"
#include "fabric/io/crc32c.h"
#include "fabric/io/safetensors.h"
#include "fabric_test_util.h"
#include "optim/adam.h"
#include "optim/lr_scheduler.h"
#include "optim/sgd.h"

namespace loom {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using checkpoint_test::state_bytes;
using fabric_test::read_text;
using fabric_test::TempDir;
using json = nlohmann::json;

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A model, AdamW with state, a StepLR and plain values, trained `steps` steps from `seed`.
struct Bundle {
  std::shared_ptr<nn::Sequential> model;
  std::shared_ptr<optim::AdamW> opt;
  std::shared_ptr<optim::StepLR> sched;
  CheckpointState state;
};

Bundle make_bundle(uint64_t seed, int steps, int hidden = 8) {
  Bundle b;
  manual_seed(seed);
  b.model = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(3, hidden),
                                             std::make_shared<nn::ReLU>(),
                                             std::make_shared<nn::Linear>(hidden, 2));
  b.opt = std::make_shared<optim::AdamW>(b.model->parameters(), 1e-2);
  b.sched = std::make_shared<optim::StepLR>(b.opt, 2, 0.5);
  Tensor x = randn({5, 3}), y = randn({5, 2});
  for (int i = 0; i < steps; ++i) {
    b.opt->zero_grad();
    mse_loss((*b.model)(x), y).backward();
    b.opt->step();
    b.sched->step();
  }
  b.state = {{"model", std::shared_ptr<nn::Module>(b.model)},
             {"opt", std::shared_ptr<optim::Optimizer>(b.opt)},
             {"sched", std::shared_ptr<optim::LRScheduler>(b.sched)},
             {"step", int64_t(steps)},
             {"loss", 0.25 * double(seed)},
             {"name", std::string("run-") + std::to_string(seed)},
             {"ema", randn({4})}};
  return b;
}

// Saved by one bundle, loaded into another (other seed, other step count).
struct Fixture {
  TempDir dir;
  std::string path = dir.file("ck.safetensors");
  Bundle saved = make_bundle(1, 3);
  std::string saved_bytes;
  Fixture() {
    save_checkpoint(path, saved.state);
    saved_bytes = state_bytes(saved.state);
  }
};

// Loads `file` into `target` and returns the refusal's message, checking that the refusal is
// a loom::ValueError and that nothing in the target changed. Fails the test if it loads.
std::string refusal(const std::string& file, CheckpointState& target, bool strict = true) {
  const std::string before = state_bytes(target);
  std::map<std::string, double> precision{{"untouched", 1.0}};
  try {
    load_checkpoint(file, target, strict, &precision);
  } catch (const ValueError& e) {
    EXPECT_EQ(state_bytes(target), before) << "a refused load changed the state: " << e.what();
    EXPECT_EQ(precision.size(), 1u) << "a refused load changed the precision state";
    return e.what();
  }
  ADD_FAILURE() << "load of '" << file << "' was not refused";
  return {};
}

// A checkpoint opened for editing: its tensors and its loom JSON, written back as a valid file
// (fresh tensor and header checksums) so that only the edit is wrong with it.
struct Editable {
  struct Raw {
    std::string dtype;
    std::vector<int64_t> shape;
    std::string bytes;
  };
  std::vector<std::pair<std::string, Raw>> tensors;
  json loom;

  explicit Editable(const std::string& path) {
    auto f = SafetensorsFile::open(path);
    for (const auto& n : f.names()) {
      auto d = f.data(n);
      tensors.push_back({n, {f.info(n).dtype, f.info(n).shape,
                             std::string(reinterpret_cast<const char*>(d.data()), d.size())}});
    }
    loom = json::parse(f.metadata().at("loom"));
  }
  Raw* find(const std::string& name) {
    for (auto& [n, r] : tensors)
      if (n == name) return &r;
    return nullptr;
  }
  void erase(const std::string& name) {
    std::erase_if(tensors, [&](const auto& t) { return t.first == name; });
  }
  void rename(const std::string& from, const std::string& to) {
    for (auto& [n, r] : tensors)
      if (n == from) n = to;
  }
  // `text_edit` may change the final JSON text (for what json cannot dump, such as 1e400).
  void write(const std::string& path,
             const std::function<std::string(std::string)>& text_edit = nullptr) {
    std::vector<SafetensorsEntry> entries;
    loom["crc32c"] = json::object();
    for (const auto& [n, r] : tensors) {
      entries.push_back({n, r.dtype, r.shape, r.bytes.data(), r.bytes.size()});
      loom["crc32c"][n] = crc32c(r.bytes.data(), r.bytes.size());
    }
    std::string text = loom.dump();
    if (text_edit) text = text_edit(text);
    write_safetensors(path, entries, {{"loom", text}}, {.header_checksum = true});
  }
};

std::string f32_bytes(std::vector<float> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// ---- checksums ----

TEST(CheckpointIntegrity, SavesAHeaderChecksumAndOneCrcPerTensor) {
  Fixture fx;
  auto f = SafetensorsFile::open(fx.path);
  EXPECT_TRUE(f.header_checksum_verified());
  EXPECT_EQ(f.metadata().count(kSafetensorsHeaderCrcKey), 0u) << "consumed by the reader";
  json loom = json::parse(f.metadata().at("loom"));
  EXPECT_EQ(loom["format"], 2);
  ASSERT_EQ(loom["crc32c"].size(), f.names().size());
  for (const auto& n : f.names()) {
    auto d = f.data(n);
    EXPECT_EQ(loom["crc32c"][n].get<uint32_t>(), crc32c(d.data(), d.size())) << n;
  }
  // The raw header carries the key first, as the reader expects.
  std::string raw = read_text(fx.path);
  EXPECT_EQ(raw.substr(8, 39), R"({"__metadata__":{"loom.header_crc32c":")");
}

TEST(CheckpointIntegrity, AFlippedDataByteIsRefusedNamingTheTensor) {
  Fixture fx;
  auto f = SafetensorsFile::open(fx.path);
  std::string raw = read_text(fx.path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, raw.data(), 8);
  const auto& info = f.info("model.0.weight");
  // The high exponent bit of the first weight: a float near 1 becomes ~1e38 (the issue's
  // 4.1e37), which loaded silently before checksums.
  raw[8 + header_len + info.offset + 3] ^= 0x40;
  std::string bad = fx.dir.file("flipped.safetensors");
  write_bytes(bad, raw);
  Bundle target = make_bundle(2, 1);
  EXPECT_THAT(refusal(bad, target.state),
              AllOf(HasSubstr("tensor 'model.0.weight' in checkpoint '" + bad + "' is corrupt"),
                    HasSubstr("CRC-32C")));
}

TEST(CheckpointIntegrity, AFlippedHeaderByteIsReportedAsCorruption) {
  Fixture fx;
  std::string raw = read_text(fx.path);
  // A digit of the saved "step" value: the JSON still parses, and says step 2 or 7 instead of 3.
  size_t at = raw.find("\\\"value\\\":3");
  ASSERT_NE(at, std::string::npos);
  raw[at + 10] ^= 0x01;
  std::string bad = fx.dir.file("flipped.safetensors");
  write_bytes(bad, raw);
  Bundle target = make_bundle(2, 1);
  EXPECT_THAT(refusal(bad, target.state),
              HasSubstr("the header of checkpoint '" + bad + "' is corrupt: its CRC-32C is"));

  // The checksum key itself damaged: the header parses, but a format 2 file without it is
  // corrupt, not "not written by Fabric::save".
  raw = read_text(fx.path);
  raw[8 + 20] ^= 0x01;  // inside "loom.header_crc32c"
  write_bytes(bad, raw);
  EXPECT_THAT(refusal(bad, target.state),
              AllOf(HasSubstr("the header of checkpoint '" + bad + "' is corrupt"),
                    HasSubstr("checksum key")));
}

// Every bit of the header and every bit of the data section, one at a time: each load is
// refused as corruption with the state unchanged (single-bit errors are exactly what CRC-32C
// always detects), or -- allowed, though none is expected -- restores exactly the saved state.
TEST(CheckpointIntegrity, EveryFlippedBitIsRefusedOrLoadsExactlyWhatWasSaved) {
  TempDir dir;
  std::string path = dir.file("small.safetensors");
  Bundle saved = make_bundle(1, 3, /*hidden=*/2);
  save_checkpoint(path, saved.state);
  const std::string saved_bytes = state_bytes(saved.state);
  const std::string raw = read_text(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, raw.data(), 8);
  ASSERT_LT(raw.size(), 4096u) << "keep this exhaustive test small";

  Bundle target = make_bundle(2, 1, /*hidden=*/2);
  std::string target_bytes = state_bytes(target.state);
  ASSERT_NE(target_bytes, saved_bytes);
  std::string bad = dir.file("bad.safetensors");
  int refused = 0, loaded = 0, header_not_corrupt = 0;
  for (size_t byte = 0; byte < raw.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = raw;
      flipped[byte] ^= static_cast<char>(1 << bit);
      write_bytes(bad, flipped);
      try {
        load_checkpoint(bad, target.state);
      } catch (const Error& e) {
        ++refused;
        ASSERT_EQ(state_bytes(target.state), target_bytes)
            << "byte " << byte << " bit " << bit << ": " << e.what();
        std::string msg = e.what();
        if (msg.find("corrupt") == std::string::npos) {
          ++header_not_corrupt;
          ADD_FAILURE() << "byte " << byte << " bit " << bit << " not reported as corruption: " << msg;
        }
        continue;
      }
      ++loaded;
      ASSERT_EQ(state_bytes(target.state), saved_bytes) << "byte " << byte << " bit " << bit;
      target = make_bundle(2, 1, /*hidden=*/2);  // back to the other state
    }
  }
  EXPECT_EQ(loaded, 0);
  EXPECT_EQ(refused, int(raw.size() * 8));
  EXPECT_EQ(header_not_corrupt, 0);
  load_checkpoint(path, target.state);
  EXPECT_EQ(state_bytes(target.state), saved_bytes) << "the intact file loads";
}

// ---- refusals of well-formed files, each naming the key and changing nothing ----

struct Defect {
  const char* name;
  std::function<void(Editable&)> edit;
  std::vector<std::string> message;  // substrings
  std::function<std::string(std::string)> text_edit = nullptr;
  bool strict = true;
};

class CheckpointRefusal : public ::testing::TestWithParam<Defect> {};

TEST_P(CheckpointRefusal, NamesTheKeyAndChangesNothing) {
  Fixture fx;
  Editable file(fx.path);
  GetParam().edit(file);
  std::string bad = fx.dir.file("bad.safetensors");
  file.write(bad, GetParam().text_edit);
  Bundle target = make_bundle(2, 1);
  std::string msg = refusal(bad, target.state, GetParam().strict);
  for (const auto& part : GetParam().message) EXPECT_THAT(msg, HasSubstr(part));
  // The same target takes the intact file completely.
  load_checkpoint(fx.path, target.state);
  EXPECT_EQ(state_bytes(target.state), fx.saved_bytes);
}

json& opt_entry(Editable& f) { return f.loom["entries"]["opt"]; }

const Defect kDefects[] = {
    {"OptimizerBufferOfAnotherShape",
     [](Editable& f) {
       auto* t = f.find("opt.state.0.exp_avg");
       t->shape = {3};
       t->bytes = f32_bytes({1, 2, 3});
     },
     {"optimizer 'opt'", "state 'exp_avg' of parameter 0 has shape [3]", "[8, 3]"}},
    {"NegativeLearningRate",
     [](Editable& f) { opt_entry(f)["param_groups"][0]["options"]["lr"] = -1.0; },
     {"optimizer 'opt'", "invalid learning rate -1"}},
    {"UnknownHyperParameter",
     [](Editable& f) { opt_entry(f)["param_groups"][0]["options"]["betas"] = 0.9; },
     {"optimizer 'opt'", "unknown hyper-parameter 'betas'"}},
    {"MissingHyperParameter",
     [](Editable& f) { opt_entry(f)["param_groups"][0]["options"].erase("eps"); },
     {"optimizer 'opt'", "no hyper-parameter 'eps'"}},
    {"HyperParameterOfAnotherType",
     [](Editable& f) { opt_entry(f)["param_groups"][0]["options"]["lr"] = "fast"; },
     {"entry 'opt'.param_groups[0].options.lr", "is a string, not a number"}},
    {"SchedulerWithoutLastEpoch",
     [](Editable& f) { f.loom["entries"]["sched"].erase("last_epoch"); },
     {"entry 'sched'", "has no \"last_epoch\""}},
    {"SchedulerWithANegativeBaseLr",
     [](Editable& f) { f.loom["entries"]["sched"]["base_lrs"][0] = -0.5; },
     {"scheduler 'sched'", "would set group 0's lr to -0.25", ">= 0"}},
    {"SchedulerEpochNotAnInteger",
     [](Editable& f) { f.loom["entries"]["sched"]["last_epoch"] = 2.5; },
     {"entry 'sched'.last_epoch", "not an integer"}},
    {"I32OptimizerBuffer",
     [](Editable& f) { f.find("opt.state.1.exp_avg_sq")->dtype = "I32"; },
     {"optimizer 'opt'", "state 'exp_avg_sq' of parameter 1 has dtype i32"}},
    {"MissingExpAvgSq",
     [](Editable& f) {
       f.erase("opt.state.2.exp_avg_sq");
       opt_entry(f)["state"]["2"]["buffers"] = {"exp_avg"};
     },
     {"optimizer 'opt'", "parameter 2 has state (step 3) without its 'exp_avg_sq' buffer"}},
    {"RenamedExpAvgSq",
     [](Editable& f) {
       f.rename("opt.state.2.exp_avg_sq", "opt.state.2.exp_avg_sqr");
       opt_entry(f)["state"]["2"]["buffers"] = {"exp_avg", "exp_avg_sqr"};
     },
     {"optimizer 'opt'", "unknown state buffer 'exp_avg_sqr'"}},
    {"NegativeStep",
     [](Editable& f) { opt_entry(f)["state"]["0"]["step"] = -1; },
     {"optimizer 'opt'", "parameter 0 has step -1"}},
    {"StateIndexNotAnIndex",
     [](Editable& f) { opt_entry(f)["state"]["x"] = opt_entry(f)["state"]["0"]; },
     {"entry 'opt'.state", "key 'x'"}},
    {"NumberOverflowingADouble",  // 1e400 once escaped as nlohmann::out_of_range
     [](Editable& f) { f.loom["entries"]["loss"]["value"] = 12345.5; },
     {"loom metadata", "is corrupt", "1e400", "at key 'entries.loss.value'"},
     [](std::string text) {
       text.replace(text.find("12345.5"), 7, "1e400");
       return text;
     }},
    {"IntegerOverflowingAnInt64",
     [](Editable& f) { f.loom["entries"]["step"]["value"] = uint64_t(1) << 63; },
     {"entry 'step'.value", "more than an int64 holds"}},
    {"FloatWhereAnIntBelongs",
     [](Editable& f) { f.loom["entries"]["step"]["value"] = 1e300; },
     {"entry 'step'.value", "not an integer"}},
    {"StringWhereADoubleBelongs",
     [](Editable& f) { f.loom["entries"]["loss"]["value"] = "0.5"; },
     {"entry 'loss'.value", "not a number"}},
    {"TensorEntryWithoutItsTensor",
     [](Editable& f) { f.erase("ema"); },
     {"entry 'ema'", "no tensor 'ema'"}},
    {"ModuleTensorListedButAbsent",
     [](Editable& f) { f.erase("model.2.bias"); },
     {"entry 'model'.tensors", "'2.bias'"}},
    {"ModuleTensorOfAnotherShape",
     [](Editable& f) {
       auto* t = f.find("model.2.bias");
       t->shape = {1};
       t->bytes = f32_bytes({0});
     },
     {"shape mismatch for 'model.2.bias'"}},
    {"UnknownKind",
     [](Editable& f) { f.loom["entries"]["name"]["kind"] = "blob"; },
     {"entry 'name'", "unknown kind 'blob'"}},
    {"ValueOfAnotherKind",
     [](Editable& f) { f.loom["entries"]["name"] = {{"kind", "int"}, {"value", 1}}; },
     {"entry 'name'", "is a int, but the state given to load() holds a string"}},
    {"MissingEntries",
     [](Editable& f) { f.loom.erase("entries"); },
     {"has no \"entries\""}},
    {"NewerFormat",
     [](Editable& f) { f.loom["format"] = 3; },
     {"format 3", "reads formats 1 and 2"}},
    {"ChecksumOfAnAbsentTensor",
     [](Editable& f) { f.loom["crc32c"]["ghost"] = 1; },
     {"\"crc32c\"", "tensor 'ghost'"},
     // write() recomputes "crc32c" from the tensors; add the extra one to the text.
     [](std::string text) {
       text.replace(text.find("\"crc32c\":{") + 10, 0, "\"ghost\":1,");
       return text;
     }},
    {"PrecisionStateMissingAKey",
     [](Editable& f) { f.loom["precision"] = {{"scale", 1024.0}}; },
     {"\"precision\"", "has no \"growth_factor\""}},
    {"NonStrictStillNeedsTheBuffersStepReads",
     [](Editable& f) {
       f.erase("opt.state.2.exp_avg_sq");
       opt_entry(f)["state"]["2"]["buffers"] = {"exp_avg"};
     },
     {"optimizer 'opt'", "without its 'exp_avg_sq' buffer"},
     nullptr,
     /*strict=*/false},
};

INSTANTIATE_TEST_SUITE_P(Defects, CheckpointRefusal, ::testing::ValuesIn(kDefects),
                         [](const auto& info) { return std::string(info.param.name); });

// Fabric hands load() FabricOptimizer wrappers, whose own check_options accepts anything: the
// checks must reach the wrapped optimizer, before the model is overwritten.
TEST(CheckpointIntegrity, ChecksReachTheOptimizerInsideFabricsWrapper) {
  Fixture fx;
  Editable file(fx.path);
  opt_entry(file)["param_groups"][0]["options"]["lr"] = -1.0;
  std::string bad = fx.dir.file("bad.safetensors");
  file.write(bad);

  Fabric fabric(fabric_test::cpu_options());
  Bundle target = make_bundle(2, 1);
  auto [m, o] = fabric.setup(target.model, target.opt);
  CheckpointState state{{"model", std::shared_ptr<nn::Module>(m)},
                        {"opt", std::shared_ptr<optim::Optimizer>(o)}};
  const std::string before = state_bytes(state);
  EXPECT_THAT([&] { fabric.load(bad, state); },
              ::testing::ThrowsMessage<ValueError>(
                  AllOf(HasSubstr("optimizer 'opt'"), HasSubstr("invalid learning rate -1"))));
  EXPECT_EQ(state_bytes(state), before);
  fabric.load(fx.path, state);
  EXPECT_EQ(state_bytes(state), state_bytes({{"model", fx.saved.state.at("model")},
                                             {"opt", fx.saved.state.at("opt")}}));
}

// ---- what loads ----

TEST(CheckpointIntegrity, NonStrictConvertsOptimizerBuffersToTheParameterDtype) {
  Fixture fx;
  Editable file(fx.path);
  auto* t = file.find("opt.state.0.exp_avg");
  std::vector<double> values;
  for (size_t i = 0; i < t->bytes.size() / 4; ++i) {
    float v;
    std::memcpy(&v, t->bytes.data() + 4 * i, 4);
    values.push_back(v);
  }
  t->dtype = "F64";
  t->bytes = std::string(reinterpret_cast<const char*>(values.data()), values.size() * 8);
  std::string f64 = fx.dir.file("f64.safetensors");
  file.write(f64);
  Bundle target = make_bundle(2, 1);
  EXPECT_THAT(refusal(f64, target.state), HasSubstr("has dtype f64"));
  load_checkpoint(f64, target.state, /*strict=*/false);
  EXPECT_EQ(state_bytes(target.state), fx.saved_bytes) << "f32 -> f64 -> f32 is exact";
}

TEST(CheckpointIntegrity, NonFiniteDoublesAndHyperParametersRoundTrip) {
  TempDir dir;
  std::string path = dir.file("inf.safetensors");
  const double inf = std::numeric_limits<double>::infinity();
  CheckpointState saved{{"best", inf}, {"worst", -inf}, {"nan", std::nan("")}};
  save_checkpoint(path, saved);
  CheckpointState state{{"best", 0.0}, {"worst", 0.0}, {"nan", 0.0}};
  load_checkpoint(path, state);
  EXPECT_EQ(std::get<double>(state["best"]), inf);
  EXPECT_EQ(std::get<double>(state["worst"]), -inf);
  EXPECT_TRUE(std::isnan(std::get<double>(state["nan"])));
}

// Format 2 lists each module's tensors, so a key that prefixes another entry's tensors
// ("model" and "model.ema") loads strictly; format 1 found tensors by prefix and refused it.
TEST(CheckpointIntegrity, AModuleKeyMayPrefixAnotherEntry) {
  TempDir dir;
  std::string path = dir.file("p.safetensors");
  Bundle saved = make_bundle(1, 0);
  save_checkpoint(path, {{"model", saved.state.at("model")}, {"model.ema", ones({3})}});
  Bundle target = make_bundle(2, 0);
  CheckpointState state{{"model", target.state.at("model")}, {"model.ema", Tensor()}};
  load_checkpoint(path, state);
  EXPECT_EQ(fabric_test::snapshot(*target.model), fabric_test::snapshot(*saved.model));
  EXPECT_TRUE(std::get<Tensor>(state["model.ema"]).equal(ones({3})));
}

// Checkpoints written before checksums (format 1) still load, as they did.
TEST(CheckpointIntegrity, Format1CheckpointsStillLoad) {
  Fixture fx;
  Editable file(fx.path);
  json& loom = file.loom;
  loom["format"] = 1;
  for (auto& [key, e] : loom["entries"].items()) {
    e.erase("tensors");
    if (e["kind"] == "optimizer") {
      json steps = json::object();
      for (auto& [idx, s] : e["state"].items()) steps[idx] = s["step"];
      e.erase("state");
      e["steps"] = steps;
    }
  }
  loom.erase("crc32c");
  std::vector<SafetensorsEntry> entries;
  for (const auto& [n, r] : file.tensors)
    entries.push_back({n, r.dtype, r.shape, r.bytes.data(), r.bytes.size()});
  std::string old = fx.dir.file("format1.safetensors");
  write_safetensors(old, entries, {{"loom", loom.dump()}});  // no header checksum either
  Bundle target = make_bundle(2, 1);
  load_checkpoint(old, target.state);
  EXPECT_EQ(state_bytes(target.state), fx.saved_bytes);
}

TEST(CheckpointIntegrity, FilesOfOtherToolsAreReadableButNotCheckpoints) {
  TempDir dir;
  std::string path = dir.file("other.safetensors");
  std::vector<float> w{1, 2, 3, 4};
  write_safetensors(path, {{"w", "F32", {2, 2}, w.data(), 16}}, {{"framework", "pt"}});
  auto f = SafetensorsFile::open(path);
  EXPECT_FALSE(f.header_checksum_verified());
  EXPECT_EQ(f.metadata().at("framework"), "pt");
  Bundle target = make_bundle(2, 1);
  EXPECT_THAT(refusal(path, target.state), HasSubstr("not written by Fabric::save"));
}

// Saves killed mid-write (the issue: twelve kill -9s left ten 491 MB temp files) leave temp
// files that the next save of the same checkpoint removes; a temp file whose writer still runs
// stays.
TEST(CheckpointIntegrity, ASaveRemovesTheTempFilesOfKilledSavesOnly) {
  TempDir dir;
  std::string path = dir.file("ck.safetensors");
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);  // `child` now names no process
  std::string stale = atomic_temp_path(path, child, 0x1234);
  std::string running = atomic_temp_path(path, ::getppid(), 0x5678);
  write_bytes(stale, std::string(1 << 16, 'x'));
  write_bytes(running, "being written");
  Bundle b = make_bundle(1, 1);
  save_checkpoint(path, b.state);
  EXPECT_FALSE(std::filesystem::exists(stale));
  EXPECT_TRUE(std::filesystem::exists(running));
  EXPECT_EQ(dir.listing().size(), 2u);  // the checkpoint and the live writer's temp file
  Bundle target = make_bundle(2, 0);
  load_checkpoint(path, target.state);
  EXPECT_EQ(state_bytes(target.state), state_bytes(b.state));
}

}  // namespace
}  // namespace loom
