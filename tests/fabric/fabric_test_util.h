// Shared helpers for the single-process Fabric tests: a temporary folder, a small MLP with
// deterministic data, and a CPU 32-true Fabric.
#pragma once

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "fabric/fabric.h"
#include "nn/activation.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace loom::fabric_test {

namespace fs = std::filesystem;

// A fresh folder under the system's temp dir, removed with everything in it (permissions
// restored first, for the tests that make it unwritable).
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "loom_fabric_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path_.string(); }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& rel) const { return path_ / rel; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  // Everything in the folder, sorted; a leftover temp file shows up here.
  std::vector<std::string> listing() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path_)) out.push_back(e.path().filename());
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  fs::path path_;
};

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// 4 -> 8 -> 2, seeded so two calls build the same weights.
inline std::shared_ptr<nn::Sequential> make_mlp(uint64_t seed = 0) {
  manual_seed(seed);
  return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(4, 8),
                                          std::make_shared<nn::ReLU>(),
                                          std::make_shared<nn::Linear>(8, 2));
}

inline FabricOptions cpu_options(std::string precision = "32-true") {
  return FabricOptions{.accelerator = "cpu", .devices = 1, .precision = std::move(precision)};
}

// Every parameter value, in order, as doubles (a model snapshot to compare bit for bit).
inline std::vector<std::vector<double>> snapshot(const nn::Module& m) {
  std::vector<std::vector<double>> out;
  for (const Tensor& p : m.parameters()) out.push_back(p.to_double_vector());
  return out;
}

// Runs `make` and returns the ValueError message it threw ("" when it did not throw).
template <class Fn>
std::string value_error_of(Fn make) {
  try {
    make();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "";
}

// Tokens and their next-token targets, each (batch, seq), drawn from Generator(seed) over a
// vocabulary of `vocab`: the language-model batches of the GPT tests.
inline std::pair<Tensor, Tensor> token_batch(uint64_t seed, int64_t batch, int64_t seq,
                                             int64_t vocab) {
  Generator g(seed);
  Tensor idx = empty({batch, seq + 1}, DType::i64);
  fill_randint(idx, 0, vocab, g);
  return {native::contiguous(native::slice(idx, 1, 0, seq, 1)),
          native::contiguous(native::slice(idx, 1, 1, seq + 1, 1))};
}

// Rows [begin, begin + n) of t, contiguous: one rank's part of a global batch.
inline Tensor rows(const Tensor& t, int64_t begin, int64_t n) {
  return native::contiguous(native::slice(t, 0, begin, begin + n, 1));
}

// Mean next-token cross-entropy of a model that maps (B, T) tokens to (B, T, vocab) logits.
inline Tensor lm_loss(nn::Module& m, const Tensor& idx, const Tensor& targets, int64_t vocab) {
  return cross_entropy(m(idx).reshape({-1, vocab}), targets.reshape({-1}));
}

}  // namespace loom::fabric_test
