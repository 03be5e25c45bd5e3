// Sampler: the order in which a DataLoader visits dataset indices, one epoch at a time.
//
// Note [Sampler epochs]: a permutation depends only on (seed, epoch), never on a global
// generator, so every run, every rank and every worker count sees the same order. How the
// epoch moves differs on purpose, following PyTorch:
//   - RandomSampler advances by itself: each indices() call draws the permutation of epoch()
//     and moves to the next epoch (as PyTorch's sampler consumes its generator), so every
//     DataLoader iteration reshuffles. set_epoch(e) pins the next draw to epoch e.
//   - DistributedSampler never advances by itself: all ranks must agree on the epoch, so the
//     caller sets it (set_epoch), and Fabric does so automatically unless the user already did.
// Deliberately not here: weighted or with-replacement sampling.
#pragma once

#include <cstdint>
#include <vector>

namespace loom::data {

class Sampler {
 public:
  virtual ~Sampler() = default;
  // The indices of one epoch, in visiting order (see Note [Sampler epochs]).
  virtual std::vector<int64_t> indices() = 0;
  // How many indices one epoch yields.
  virtual int64_t size() const = 0;
  virtual void set_epoch(int64_t epoch) {}
};

// 0, 1, ..., n-1 every epoch.
class SequentialSampler : public Sampler {
 public:
  explicit SequentialSampler(int64_t n);
  std::vector<int64_t> indices() override;
  int64_t size() const override { return n_; }

 private:
  int64_t n_;
};

// A fresh seeded permutation of [0, n) per epoch; reproducible for a given (seed, epoch).
class RandomSampler : public Sampler {
 public:
  explicit RandomSampler(int64_t n, uint64_t seed = 0);
  std::vector<int64_t> indices() override;  // permutation of epoch(), then epoch() += 1
  int64_t size() const override { return n_; }
  void set_epoch(int64_t epoch) override { epoch_ = epoch; }
  int64_t epoch() const { return epoch_; }  // the epoch the next indices() call draws
  uint64_t seed() const { return seed_; }

 private:
  int64_t n_;
  uint64_t seed_;
  int64_t epoch_ = 0;
};

}  // namespace loom::data
