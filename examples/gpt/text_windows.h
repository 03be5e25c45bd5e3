// The training data of train_gpt: byte windows of a text file (header-only helper of
// examples/train_gpt.cpp).
//
// Bytes are the tokens (vocabulary 256), so any text trains without a tokenizer. Example i is a
// window of seq + 1 bytes split into input x = w[0..seq) and target y = w[1..seq]. Where a window
// starts depends only on (seed, first + i) for training, so the data of step s is the same in an
// uninterrupted run and in one resumed at s: `first` is the number of windows the steps before
// the resumed one used. Validation windows are evenly spaced over the text, the same every time.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "core/error.h"
#include "tensor/factories.h"

namespace gpt_example {

inline std::shared_ptr<const std::vector<uint8_t>> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw loom::ValueError("train_gpt: cannot read the corpus file '" + path +
                           "'; pass --data <folder holding devils_dictionary.train.txt and "
                           "devils_dictionary.val.txt>");
  auto bytes = std::make_shared<std::vector<uint8_t>>(std::istreambuf_iterator<char>(in),
                                                      std::istreambuf_iterator<char>());
  return bytes;
}

class TextWindows : public loom::data::Dataset {
 public:
  enum class Placement { random, evenly_spaced };

  TextWindows(std::shared_ptr<const std::vector<uint8_t>> text, int64_t seq, int64_t count,
              Placement placement, uint64_t seed = 0, int64_t first = 0)
      : text_(std::move(text)),
        seq_(seq),
        count_(count),
        placement_(placement),
        seed_(seed),
        first_(first) {
    if (int64_t(text_->size()) < seq_ + 2)
      throw loom::ValueError("train_gpt: a text of " + std::to_string(text_->size()) +
                             " bytes is too short for --seq " + std::to_string(seq_) +
                             "; use a shorter --seq or a longer text");
  }

  int64_t size() const override { return count_; }

  loom::data::Example get(int64_t index) const override {
    const uint64_t starts = uint64_t(text_->size()) - uint64_t(seq_) - 1;  // valid first bytes
    uint64_t start = placement_ == Placement::random
                         ? mix(seed_ ^ mix(uint64_t(first_ + index))) % starts
                         : uint64_t(index) * starts / uint64_t(count_);
    std::vector<int64_t> x(static_cast<size_t>(seq_)), y(static_cast<size_t>(seq_));
    for (int64_t t = 0; t < seq_; ++t) {
      x[size_t(t)] = (*text_)[start + uint64_t(t)];
      y[size_t(t)] = (*text_)[start + uint64_t(t) + 1];
    }
    return {loom::from_vector(x), loom::from_vector(y)};
  }

 private:
  // SplitMix64's finaliser: consecutive indices give unrelated starts.
  static uint64_t mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  std::shared_ptr<const std::vector<uint8_t>> text_;
  int64_t seq_, count_;
  Placement placement_;
  uint64_t seed_;
  int64_t first_;
};

}  // namespace gpt_example
