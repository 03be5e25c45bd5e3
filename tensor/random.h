// Seeded random numbers: counter-based generators, so a fill is reproducible for a seed on
// every run, on any number of threads and with any instruction set, and each element's value
// depends only on (seed, offset + index). Uniform and normal fills draw from Philox4x32-10,
// vectorised (kernels/cpu/philox.h); randint and dropout masks from a SplitMix64 hash of
// (seed, position). A generator's offset counts the values drawn.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace loom {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  void manual_seed(uint64_t seed) {
    seed_ = seed;
    offset_ = 0;
  }
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_offset(uint64_t o) { offset_ = o; }
  // Reserves n consecutive counters and returns the first.
  uint64_t advance(uint64_t n) {
    uint64_t o = offset_;
    offset_ += n;
    return o;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

// The default generator (thread-local: every thread draws its own reproducible stream).
Generator& default_generator();
// Seeds the default generator of the calling thread.
void manual_seed(uint64_t seed);

// Fill t in place with uniform [lo, hi) / normal(mean, std) / integers in [lo, hi) values.
void fill_uniform(const Tensor& t, double lo, double hi, Generator& g = default_generator());
void fill_normal(const Tensor& t, double mean, double std, Generator& g = default_generator());
void fill_randint(const Tensor& t, int64_t lo, int64_t hi, Generator& g = default_generator());

}  // namespace loom
