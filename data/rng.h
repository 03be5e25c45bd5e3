// A tiny deterministic RNG for index permutations: SplitMix64 and a Fisher-Yates shuffle.
//
// Samplers must produce the same permutation for the same (seed, epoch) on every run, every
// rank and every thread count, independent of loom's global generators (which the user's
// model code also draws from). A self-contained 64-bit stream gives exactly that; this is
// deliberately not a general-purpose random library and not PyTorch's randperm stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <numeric>
#include <vector>

namespace loom::data {

// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state advanced by a Weyl increment and
// finalised with two multiply-xorshift rounds; passes BigCrush, one multiply-add per draw.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound) without modulo bias (rejects the short top range; bound > 0).
  uint64_t below(uint64_t bound) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
    uint64_t x;
    do x = next();
    while (x >= limit);
    return x % bound;
  }

 private:
  uint64_t state_;
};

// One 64-bit stream key from several values (seed, epoch, batch, ...): each is folded in
// through a full SplitMix64 round so that nearby inputs give unrelated streams.
inline uint64_t mix_seed(uint64_t a, uint64_t b) {
  SplitMix64 g(a ^ (b * 0xD1B54A32D192ED03ull));
  return g.next();
}

// A permutation of [0, n) that depends only on (seed, epoch): Fisher-Yates over SplitMix64.
inline std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> perm(size_t(n > 0 ? n : 0));
  std::iota(perm.begin(), perm.end(), int64_t(0));
  SplitMix64 g(mix_seed(seed, uint64_t(epoch)));
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[g.below(uint64_t(i) + 1)]);
  return perm;
}

}  // namespace loom::data
