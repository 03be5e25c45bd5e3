// Samplers: SequentialSampler, RandomSampler, DistributedSampler (PyTorch's padding and
// striding rule written out by hand), BatchSampler.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "data/batch_sampler.h"
#include "data/distributed_sampler.h"
#include "data/rng.h"
#include "data/sampler.h"
#include "core/error.h"

namespace loom::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Indices = std::vector<int64_t>;

template <class Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "(no ValueError)";
}

// PyTorch's rule, spelled out independently of the sampler: pad `order` to `total` by
// repeating it from the start, or cut it to `total`, then take every R-th from `rank`.
Indices reference_share(Indices order, int64_t total, int64_t replicas, int64_t rank) {
  Indices padded;
  while (int64_t(padded.size()) < total && !order.empty())
    for (int64_t i : order)
      if (int64_t(padded.size()) < total) padded.push_back(i);
  Indices out;
  for (int64_t i = rank; i < total; i += replicas) out.push_back(padded[size_t(i)]);
  return out;
}

TEST(SequentialSampler, VisitsInOrder) {
  SequentialSampler s(4);
  EXPECT_EQ(s.size(), 4);
  EXPECT_THAT(s.indices(), ElementsAre(0, 1, 2, 3));
  EXPECT_THAT(s.indices(), ElementsAre(0, 1, 2, 3));
  EXPECT_TRUE(SequentialSampler(0).indices().empty());
}

TEST(RandomSampler, IsAPermutationReproducibleForSeedAndEpoch) {
  RandomSampler a(50, 7), b(50, 7), c(50, 8);
  Indices e0 = a.indices();
  EXPECT_EQ(e0, b.indices());
  EXPECT_NE(e0, c.indices());
  Indices sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(sorted[size_t(i)], i);
  EXPECT_EQ(e0, seeded_permutation(50, 7, 0));  // depends on (seed, epoch) only
}

TEST(RandomSampler, ReshufflesEveryEpochAndSetEpochPinsIt) {
  RandomSampler s(30, 3);
  EXPECT_EQ(s.epoch(), 0);
  Indices e0 = s.indices();
  EXPECT_EQ(s.epoch(), 1);
  Indices e1 = s.indices();
  EXPECT_NE(e0, e1);
  s.set_epoch(0);
  EXPECT_EQ(s.indices(), e0);
  EXPECT_EQ(s.indices(), e1);
  RandomSampler fresh(30, 3);
  fresh.set_epoch(1);
  EXPECT_EQ(fresh.indices(), e1);
}

TEST(DistributedSampler, PadsByWrapAroundWithoutShuffle) {
  // N = 10, R = 4: total = ceil(10 / 4) * 4 = 12, order 0..9 then 0, 1 (wrapped).
  std::vector<Indices> expected = {{0, 4, 8}, {1, 5, 9}, {2, 6, 0}, {3, 7, 1}};
  for (int64_t r = 0; r < 4; ++r) {
    DistributedSampler s(10, 4, r, /*shuffle=*/false);
    EXPECT_EQ(s.size(), 3);
    EXPECT_EQ(s.total_size(), 12);
    EXPECT_EQ(s.indices(), expected[size_t(r)]) << "rank " << r;
  }
}

TEST(DistributedSampler, DropLastCutsTheTail) {
  // N = 10, R = 4, drop_last: total = floor(10 / 4) * 4 = 8; indices 8 and 9 are dropped.
  std::vector<Indices> expected = {{0, 4}, {1, 5}, {2, 6}, {3, 7}};
  for (int64_t r = 0; r < 4; ++r) {
    DistributedSampler s(10, 4, r, /*shuffle=*/false, 0, /*drop_last=*/true);
    EXPECT_EQ(s.size(), 2);
    EXPECT_EQ(s.indices(), expected[size_t(r)]) << "rank " << r;
  }
}

TEST(DistributedSampler, WrapsAroundRepeatedlyForTinyDatasets) {
  // N = 2, R = 5: total = 5, padded order 0 1 0 1 0 (the data wrapped twice).
  std::vector<Indices> expected = {{0}, {1}, {0}, {1}, {0}};
  for (int64_t r = 0; r < 5; ++r)
    EXPECT_EQ(DistributedSampler(2, 5, r, false).indices(), expected[size_t(r)]);
  // ... and with drop_last nobody gets anything (floor(2 / 5) = 0).
  for (int64_t r = 0; r < 5; ++r)
    EXPECT_TRUE(DistributedSampler(2, 5, r, false, 0, true).indices().empty());
  EXPECT_TRUE(DistributedSampler(0, 3, 1, true).indices().empty());
}

TEST(DistributedSampler, ShardsAreDisjointAndEqualSize) {
  for (bool shuffle : {false, true}) {
    for (bool drop_last : {false, true}) {
      const int64_t n = 23, replicas = 4;  // not divisible
      std::map<int64_t, int> seen;
      size_t share = 0;
      for (int64_t r = 0; r < replicas; ++r) {
        DistributedSampler s(n, replicas, r, shuffle, 5, drop_last);
        Indices mine = s.indices();
        if (r == 0) share = mine.size();
        EXPECT_EQ(mine.size(), share);
        EXPECT_EQ(int64_t(mine.size()), s.size());
        for (int64_t i : mine) seen[i]++;
      }
      if (drop_last) {
        EXPECT_EQ(share, 5u);         // floor(23 / 4)
        EXPECT_EQ(seen.size(), 20u);  // 20 distinct indices, each exactly once
        for (auto [i, count] : seen) EXPECT_EQ(count, 1) << i;
      } else {
        EXPECT_EQ(share, 6u);         // ceil(23 / 4)
        EXPECT_EQ(seen.size(), 23u);  // every example visited; one padded example twice
        int twice = 0;
        for (auto [i, count] : seen) twice += count == 2;
        EXPECT_EQ(twice, 1);
      }
    }
  }
}

TEST(DistributedSampler, ShuffleFollowsTheFormula) {
  const int64_t n = 10, replicas = 3;
  for (int64_t epoch : {0, 1, 4}) {
    Indices order = seeded_permutation(n, 42, epoch);  // the same on every rank
    for (int64_t r = 0; r < replicas; ++r) {
      DistributedSampler s(n, replicas, r, true, 42);
      s.set_epoch(epoch);
      EXPECT_EQ(s.indices(), reference_share(order, 12, replicas, r));
      DistributedSampler d(n, replicas, r, true, 42, true);
      d.set_epoch(epoch);
      EXPECT_EQ(d.indices(), reference_share(order, 9, replicas, r));
    }
  }
}

TEST(DistributedSampler, SetEpochChangesThePermutationOnEveryRankAlike) {
  DistributedSampler r0(16, 2, 0, true, 1), r1(16, 2, 1, true, 1);
  EXPECT_EQ(r0.epoch(), 0);
  EXPECT_FALSE(r0.epoch_set_explicitly());
  Indices a0 = r0.indices(), a1 = r1.indices();
  EXPECT_EQ(r0.indices(), a0);  // no automatic advance
  r0.set_epoch(1);
  r1.set_epoch(1);
  EXPECT_TRUE(r0.epoch_set_explicitly());
  EXPECT_EQ(r0.epoch(), 1);
  Indices b0 = r0.indices(), b1 = r1.indices();
  EXPECT_NE(a0, b0);
  // Same permutation on both ranks: the two shares still partition 0..15.
  std::set<int64_t> all(b0.begin(), b0.end());
  all.insert(b1.begin(), b1.end());
  EXPECT_EQ(all.size(), 16u);
  // An automatic advance (Fabric's) does not count as explicit.
  DistributedSampler auto_advanced(16, 2, 0, true, 1);
  auto_advanced.advance_epoch(1);
  EXPECT_FALSE(auto_advanced.epoch_set_explicitly());
  EXPECT_EQ(auto_advanced.indices(), b0);
}

TEST(DistributedSampler, RejectsBadRanks) {
  EXPECT_THAT(error_of([] { DistributedSampler(10, 2, 2); }),
              HasSubstr("invalid rank 2, rank should be in the interval [0, 1]"));
  EXPECT_THAT(error_of([] { DistributedSampler(10, 2, -1); }), HasSubstr("invalid rank -1"));
  EXPECT_THAT(error_of([] { DistributedSampler(10, 0, 0); }),
              HasSubstr("num_replicas must be >= 1, got 0"));
}

TEST(BatchSampler, KeepsOrDropsTheShortLastBatch) {
  auto seq = std::make_shared<SequentialSampler>(7);
  BatchSampler keep(seq, 3, false), drop(seq, 3, true);
  EXPECT_EQ(keep.size(), 3);
  EXPECT_EQ(drop.size(), 2);
  EXPECT_EQ(keep.batches(), (std::vector<Indices>{{0, 1, 2}, {3, 4, 5}, {6}}));
  EXPECT_EQ(drop.batches(), (std::vector<Indices>{{0, 1, 2}, {3, 4, 5}}));
  BatchSampler exact(std::make_shared<SequentialSampler>(6), 3, true);
  EXPECT_EQ(exact.size(), 2);
  EXPECT_EQ(exact.batches().size(), 2u);
}

TEST(BatchSampler, FollowsTheSamplersEpochs) {
  auto random = std::make_shared<RandomSampler>(10, 9);
  BatchSampler b(random, 4, false);
  auto e0 = b.batches(), e1 = b.batches();
  EXPECT_NE(e0, e1);
  b.set_epoch(0);
  EXPECT_EQ(b.batches(), e0);
  Indices order = seeded_permutation(10, 9, 0);
  EXPECT_EQ(e0[0], Indices(order.begin(), order.begin() + 4));
  EXPECT_EQ(e0[2], Indices(order.begin() + 8, order.end()));
}

TEST(BatchSampler, RejectsBadArguments) {
  auto seq = std::make_shared<SequentialSampler>(3);
  EXPECT_THAT(error_of([&] { BatchSampler(seq, 0, false); }),
              HasSubstr("batch_size should be a positive integer, got 0"));
  EXPECT_THAT(error_of([] { BatchSampler(nullptr, 2, false); }), HasSubstr("sampler is null"));
}

}  // namespace
}  // namespace loom::data
