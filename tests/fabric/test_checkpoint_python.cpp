// A loom checkpoint read from Python (docs/checkpoint_format.md): tools/check_safetensors_python.py
// reads the file with plain json + struct, checks the header checksum and every tensor's
// CRC-32C, and, where the `safetensors` package is installed, reads it with that too. The test
// compares what Python read with what was saved, and checks that the script refuses a file
// with one flipped data byte. Skipped when there is no python3.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/wait.h>

#include "fabric_test_util.h"
#include "loom.h"

using namespace loom;
using loom::fabric_test::TempDir;

namespace {

namespace fs = std::filesystem;

struct CommandResult {
  int status = -1;
  std::string output;  // stdout and stderr
};

CommandResult run_command(const std::string& command) {
  CommandResult r;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.output.append(buf, n);
  int s = ::pclose(p);
  r.status = WIFEXITED(s) ? WEXITSTATUS(s) : -1;
  return r;
}

std::string python() {
  for (const char* candidate : {"/usr/bin/python3", "/usr/local/bin/python3"})
    if (fs::exists(candidate)) return candidate;
  return "";
}

std::string script() {
  // This file is tests/fabric/test_checkpoint_python.cpp; the script is tools/ at the root.
  return (fs::path(__FILE__).parent_path().parent_path().parent_path() / "tools" /
          "check_safetensors_python.py").string();
}

// The "tensor NAME DTYPE SHAPE SUM" lines of the script's output, by name.
std::map<std::string, std::vector<std::string>> tensor_lines(const std::string& output) {
  std::map<std::string, std::vector<std::string>> out;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string tag, name, dtype, shape, sum;
    if (words >> tag >> name >> dtype >> shape >> sum && tag == "tensor") out[name] = {dtype, shape, sum};
  }
  return out;
}

double sum_of(const Tensor& t) { return t.to(DType::f64).sum().item<double>(); }

TEST(CheckpointPython, PythonReadsWhatFabricSaved) {
  std::string py = python();
  if (py.empty()) GTEST_SKIP() << "no python3: the Python reader of checkpoints is not checked";
  ASSERT_TRUE(fs::exists(script())) << script();
  TempDir dir;
  manual_seed(3);
  auto model = std::make_shared<nn::Linear>(3, 2);
  auto opt = std::make_shared<optim::AdamW>(model->parameters(), 1e-2);
  Tensor loss = (*model)(randn({4, 3})).sum();
  loss.backward();
  opt->step();
  Tensor half = randn({5}).to(DType::bf16);
  Fabric fabric({.accelerator = "cpu", .devices = 1});
  fabric.launch();
  std::string path = dir.file("ckpt.safetensors");
  fabric.save(path, {{"model", model}, {"optimizer", opt}, {"half", half}, {"step", int64_t(7)},
                     {"note", std::string("spiral")}});

  CommandResult r = run_command(py + " " + script() + " " + path);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("\nok\n"), std::string::npos) << r.output;
  auto lines = tensor_lines(r.output);
  std::map<std::string, Tensor> expected = {{"model.weight", model->weight},
                                            {"model.bias", model->bias},
                                            {"half", half}};
  for (const auto& [name, t] : expected) {
    ASSERT_TRUE(lines.count(name)) << name << " missing in:\n" << r.output;
    EXPECT_EQ(lines[name][0], t.dtype() == DType::bf16 ? "BF16" : "F32") << name;
    EXPECT_NEAR(std::stod(lines[name][2]), sum_of(t), 1e-5) << name;
  }
  EXPECT_EQ(lines["model.weight"][1], "2,3");
  // AdamW's state for parameter 0 (the weight): two buffers of its shape.
  ASSERT_TRUE(lines.count("optimizer.state.0.exp_avg")) << r.output;
  EXPECT_EQ(lines["optimizer.state.0.exp_avg_sq"][1], "2,3");
  for (const char* entry : {"entry model module", "entry optimizer optimizer", "entry half tensor",
                            "entry step int", "entry note string"})
    EXPECT_NE(r.output.find(entry), std::string::npos) << entry << " missing in:\n" << r.output;
}

TEST(CheckpointPython, PythonRefusesAFlippedDataByte) {
  std::string py = python();
  if (py.empty()) GTEST_SKIP() << "no python3: the Python reader of checkpoints is not checked";
  TempDir dir;
  auto model = std::make_shared<nn::Linear>(3, 2);
  Fabric fabric({.accelerator = "cpu", .devices = 1});
  fabric.launch();
  std::string path = dir.file("ckpt.safetensors");
  fabric.save(path, {{"model", model}});
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(-1, std::ios::end);  // the last byte of the data section
    char c = 0;
    f.read(&c, 1);
    f.seekp(-1, std::ios::end);
    c = char(c ^ 0x01);
    f.write(&c, 1);
  }
  CommandResult r = run_command(py + " " + script() + " " + path);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("is corrupt: CRC-32C"), std::string::npos) << r.output;
}

}  // namespace
