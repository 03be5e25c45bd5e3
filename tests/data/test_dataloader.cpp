// DataLoader: batch values, shuffling, worker threads (order, early exit, errors),
// determinism, rebuild with another sampler (plain and subclass), and argument errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "data/dataloader.h"
#include "data/distributed_sampler.h"
#include "data/rng.h"
#include "tensor/defaults.h"
#include "tensor/factories.h"
#include "tensor/native.h"
#include "tensor/random.h"

namespace loom::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

template <class Fn>
std::string error_of(Fn fn) {
  try {
    fn();
  } catch (const ValueError& e) {
    return e.what();
  }
  return "(no ValueError)";
}

// x: (10, 2) f32 with x[i] = {2i, 2i + 1}; y: (10) i64 with y[i] = i.
std::shared_ptr<TensorDataset> make_xy(int64_t n = 10) {
  std::vector<float> xs;
  std::vector<int64_t> ys;
  for (int64_t i = 0; i < n; ++i) {
    xs.push_back(float(2 * i));
    xs.push_back(float(2 * i + 1));
    ys.push_back(i);
  }
  return std::make_shared<TensorDataset>(
      std::vector<Tensor>{from_vector(xs, Shape{n, 2}), from_vector(ys)});
}

// The label column of every batch of one epoch.
std::vector<std::vector<int64_t>> labels(DataLoader& loader) {
  std::vector<std::vector<int64_t>> out;
  for (Batch& batch : loader) out.push_back(batch.at(1).to_vector<int64_t>());
  return out;
}

// Example i = {i as f32}, counting calls; optionally slow, optionally failing at one index.
class CountingDataset : public Dataset {
 public:
  explicit CountingDataset(int64_t n, int sleep_ms = 0, int64_t fail_at = -1)
      : n_(n), sleep_ms_(sleep_ms), fail_at_(fail_at) {}
  int64_t size() const override { return n_; }
  Example get(int64_t index) const override {
    calls_.fetch_add(1);
    if (sleep_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms_));
    if (index == fail_at_)
      throw ValueError(detail::concat("CountingDataset: example ", index, " is corrupt"));
    return {scalar_tensor(double(index), DType::f32)};
  }
  int64_t calls() const { return calls_.load(); }

 private:
  int64_t n_;
  int sleep_ms_;
  int64_t fail_at_;
  mutable std::atomic<int64_t> calls_{0};
};

// Example i = {randn(3) drawn from the thread's generator, i}: random augmentation.
class AugmentingDataset : public Dataset {
 public:
  int64_t size() const override { return 12; }
  Example get(int64_t index) const override {
    return {randn({3}), scalar_tensor(double(index), DType::i64)};
  }
};

TEST(TensorDataset, RowsAreViews) {
  auto ds = make_xy();
  EXPECT_EQ(ds->size(), 10);
  Example e = ds->get(3);
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[0].sizes(), Shape({2}));
  EXPECT_THAT(e[0].to_vector<float>(), ElementsAre(6.f, 7.f));
  EXPECT_EQ(e[1].item<int64_t>(), 3);
  EXPECT_EQ(e[0].storage(), ds->tensors()[0].storage());  // a view, not a copy
}

TEST(TensorDataset, RejectsMismatchedSizesAndBadIndices) {
  EXPECT_THAT(error_of([] { TensorDataset({zeros({4, 2}), zeros({5})}); }),
              HasSubstr("size mismatch between tensors: tensor 1 has shape [5] but tensor 0 "
                        "has shape [4, 2]"));
  EXPECT_THAT(error_of([] { TensorDataset(std::vector<Tensor>{}); }),
              HasSubstr("at least one tensor"));
  EXPECT_THAT(error_of([] { TensorDataset({scalar_tensor(1.0)}); }), HasSubstr("0-dim"));
  EXPECT_THAT(error_of([] { make_xy()->get(10); }),
              HasSubstr("index 10 is out of range for 10 examples"));
}

TEST(DefaultCollate, StacksFieldsAndPromotes) {
  Batch b = default_collate({{tensor({1.0, 2.0}), scalar_tensor(3, DType::i64)},
                             {tensor({4.0, 5.0}, DType::f64), scalar_tensor(6, DType::i64)}});
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].sizes(), Shape({2, 2}));
  EXPECT_EQ(b[0].dtype(), DType::f64);
  EXPECT_THAT(b[0].to_vector<double>(), ElementsAre(1, 2, 4, 5));
  EXPECT_EQ(b[1].sizes(), Shape({2}));
  EXPECT_EQ(b[1].dtype(), DType::i64);
  EXPECT_THAT(b[1].to_vector<int64_t>(), ElementsAre(3, 6));
}

TEST(DefaultCollate, StacksNonContiguousAndMetaExamples) {
  Tensor m = from_vector(std::vector<float>{0, 1, 2, 3, 4, 5}, Shape{2, 3});
  Tensor col0 = native::select(m, 1, 0), col2 = native::select(m, 1, 2);  // strided
  Batch b = default_collate({{col0}, {col2}});
  EXPECT_THAT(b[0].to_vector<float>(), ElementsAre(0, 3, 2, 5));
  Batch meta = default_collate({{empty({4, 5}, DType::bf16, Device::meta())},
                                {empty({4, 5}, DType::bf16, Device::meta())}});
  EXPECT_TRUE(meta[0].is_meta());
  EXPECT_EQ(meta[0].sizes(), Shape({2, 4, 5}));
  EXPECT_EQ(meta[0].dtype(), DType::bf16);
}

TEST(DefaultCollate, ExplainsMismatches) {
  EXPECT_THAT(error_of([] { default_collate({{zeros({2})}, {zeros({3})}}); }),
              HasSubstr("cannot stack shape [3] (example 1) with shape [2] (example 0)"));
  EXPECT_THAT(error_of([] { default_collate({{zeros({2})}, {zeros({2}), zeros({2})}}); }),
              HasSubstr("example 1 has 2 fields but example 0 has 1"));
  EXPECT_THAT(error_of([] { default_collate({}); }), HasSubstr("no examples"));
}

TEST(DataLoader, BatchesInOrder) {
  DataLoader loader(make_xy(), {.batch_size = 4});
  EXPECT_EQ(loader.size(), 3);
  std::vector<Batch> batches;
  for (Batch& b : loader) batches.push_back(b);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0][0].sizes(), Shape({4, 2}));
  EXPECT_THAT(batches[0][0].to_vector<float>(), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  EXPECT_THAT(batches[0][1].to_vector<int64_t>(), ElementsAre(0, 1, 2, 3));
  EXPECT_EQ(batches[2][0].sizes(), Shape({2, 2}));  // the short last batch
  EXPECT_THAT(batches[2][0].to_vector<float>(), ElementsAre(16, 17, 18, 19));
  EXPECT_THAT(batches[2][1].to_vector<int64_t>(), ElementsAre(8, 9));
}

TEST(DataLoader, DropLastDropsTheShortBatch) {
  DataLoader loader(make_xy(), {.batch_size = 4, .drop_last = true});
  EXPECT_EQ(loader.size(), 2);
  EXPECT_EQ(labels(loader), (std::vector<std::vector<int64_t>>{{0, 1, 2, 3}, {4, 5, 6, 7}}));
}

TEST(DataLoader, ShuffleIsSeededAndReshufflesEachEpoch) {
  DataLoader a(make_xy(), {.batch_size = 3, .shuffle = true, .seed = 11});
  DataLoader b(make_xy(), {.batch_size = 3, .shuffle = true, .seed = 11});
  auto a0 = labels(a), a1 = labels(a);
  EXPECT_EQ(a.epochs_started(), 2);
  EXPECT_NE(a0, a1);  // a new epoch reshuffles
  EXPECT_EQ(labels(b), a0);  // same seed, same order
  EXPECT_EQ(labels(b), a1);
  // The first epoch is the seeded permutation of epoch 0.
  std::vector<int64_t> order = seeded_permutation(10, 11, 0);
  EXPECT_EQ(a0[0], std::vector<int64_t>(order.begin(), order.begin() + 3));
  std::vector<int64_t> flat;
  for (auto& batch : a0) flat.insert(flat.end(), batch.begin(), batch.end());
  EXPECT_EQ(flat, order);
}

TEST(DataLoader, CustomSamplerBatchSamplerAndCollate) {
  struct Reversed : Sampler {
    std::vector<int64_t> indices() override { return {9, 8, 7, 6, 5}; }
    int64_t size() const override { return 5; }
  };
  DataLoader by_sampler(make_xy(), {.batch_size = 2, .sampler = std::make_shared<Reversed>()});
  EXPECT_EQ(labels(by_sampler), (std::vector<std::vector<int64_t>>{{9, 8}, {7, 6}, {5}}));

  auto bs = std::make_shared<BatchSampler>(std::make_shared<Reversed>(), 3, true);
  DataLoader by_batch_sampler(make_xy(), {.batch_sampler = bs});
  EXPECT_EQ(by_batch_sampler.size(), 1);
  EXPECT_EQ(labels(by_batch_sampler), (std::vector<std::vector<int64_t>>{{9, 8, 7}}));

  // A collate that keeps only the labels' sum.
  Collate sum_labels = [](std::vector<Example> examples) {
    int64_t s = 0;
    for (Example& e : examples) s += e[1].item<int64_t>();
    return Batch{scalar_tensor(double(s), DType::i64)};
  };
  DataLoader summed(make_xy(), {.batch_size = 5, .collate = sum_labels});
  std::vector<int64_t> sums;
  for (Batch& b : summed) sums.push_back(b[0].item<int64_t>());
  EXPECT_THAT(sums, ElementsAre(10, 35));
}

TEST(DataLoader, WorkersDeliverTheSameOrderAsTheMainThread) {
  for (bool shuffle : {false, true}) {
    DataLoader serial(make_xy(37), {.batch_size = 3, .shuffle = shuffle, .seed = 5});
    auto expected0 = labels(serial), expected1 = labels(serial);
    for (int workers : {1, 2, 4}) {
      // A slow dataset makes workers finish out of order; delivery must not.
      DataLoader threaded(make_xy(37), {.batch_size = 3, .shuffle = shuffle, .num_workers = workers,
                                        .seed = 5, .prefetch_factor = 1});
      EXPECT_EQ(labels(threaded), expected0) << workers << " workers";
      EXPECT_EQ(labels(threaded), expected1) << workers << " workers";
    }
  }
  // Out-of-order completion: index 0 is slow, later ones fast.
  class SlowFirst : public CountingDataset {
   public:
    SlowFirst() : CountingDataset(8) {}
    Example get(int64_t i) const override {
      if (i == 0) std::this_thread::sleep_for(std::chrono::milliseconds(30));
      return CountingDataset::get(i);
    }
  };
  DataLoader slow(std::make_shared<SlowFirst>(), {.batch_size = 1, .num_workers = 3});
  std::vector<float> seen;
  for (Batch& b : slow) seen.push_back(b[0].at<float>({0}));
  EXPECT_THAT(seen, ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
}

TEST(DataLoader, RandomAugmentationIsDeterministicForAnyWorkerCount) {
  auto ds = std::make_shared<AugmentingDataset>();
  auto run = [&](int workers) {
    DataLoader loader(ds, {.batch_size = 5, .shuffle = true, .num_workers = workers, .seed = 3});
    std::vector<std::vector<float>> out;
    for (int epoch = 0; epoch < 2; ++epoch)
      for (Batch& b : loader) out.push_back(b[0].to_vector<float>());
    return out;
  };
  manual_seed(99);
  Tensor before = randn({4});
  manual_seed(99);
  auto serial = run(0);
  EXPECT_TRUE(randn({4}).equal(before));  // the main thread's generator is left as it was
  EXPECT_EQ(run(2), serial);
  EXPECT_EQ(run(3), serial);
  EXPECT_NE(serial[0], serial[3]);  // epochs differ (new order, new batch seeds)
}

TEST(DataLoader, WorkersSeeTheConsumersDefaultDType) {
  struct DefaultDtypeDataset : Dataset {
    int64_t size() const override { return 4; }
    Example get(int64_t) const override { return {zeros({1})}; }
  };
  DefaultDTypeGuard f64(DType::f64);
  DataLoader loader(std::make_shared<DefaultDtypeDataset>(), {.batch_size = 2, .num_workers = 2});
  for (Batch& b : loader) EXPECT_EQ(b[0].dtype(), DType::f64);
}

TEST(DataLoader, EarlyBreakStopsWorkersWithoutHangingOrLeaking) {
  auto ds = std::make_shared<CountingDataset>(1000, /*sleep_ms=*/2);
  {
    DataLoader loader(ds, {.batch_size = 4, .num_workers = 2, .prefetch_factor = 2});
    int seen = 0;
    for (Batch& b : loader) {
      EXPECT_EQ(b[0].sizes(), Shape({4}));
      if (++seen == 2) break;
    }
    // Only the consumer's share plus the bounded prefetch window was fetched:
    // at most 2 consumed + 2 * 2 in flight batches of 4 examples.
    EXPECT_LE(ds->calls(), (2 + 4) * 4);
    // The workers are joined and have released the dataset: the loader and the test hold it.
    EXPECT_EQ(ds.use_count(), 2);
    // A new epoch on the same loader works after the abandoned one.
    int64_t count = 0;
    for (Batch& b : loader) count += b[0].numel();
    EXPECT_EQ(count, 1000);
  }
  EXPECT_EQ(ds.use_count(), 1);
  // Abandoning an iterator that was never advanced (begin() only) also shuts down.
  DataLoader loader(ds, {.batch_size = 8, .num_workers = 3});
  { auto it = loader.begin(); }
  EXPECT_EQ(ds.use_count(), 2);
}

TEST(DataLoader, WorkerExceptionSurfacesInTheConsumer) {
  for (int workers : {0, 2}) {
    auto ds = std::make_shared<CountingDataset>(20, 0, /*fail_at=*/9);
    DataLoader loader(ds, {.batch_size = 4, .num_workers = workers});
    std::vector<float> firsts;
    std::string message;
    try {
      for (Batch& b : loader) firsts.push_back(b[0].at<float>({0}));
    } catch (const ValueError& e) {
      message = e.what();
    }
    EXPECT_THAT(message, HasSubstr("CountingDataset: example 9 is corrupt")) << workers;
    EXPECT_THAT(firsts, ElementsAre(0, 4)) << workers;  // batches before the failing one
    EXPECT_EQ(ds.use_count(), 2);
    // The loader is usable again afterwards (a new epoch fails at the same batch).
    EXPECT_THAT(error_of([&] { for (Batch& b : loader) (void)b; }), HasSubstr("example 9"));
  }
}

TEST(DataLoader, IteratorProtocol) {
  DataLoader loader(make_xy(4), {.batch_size = 2});
  auto it = loader.begin();
  EXPECT_TRUE(it != loader.end());
  EXPECT_EQ(it->size(), 2u);
  auto copy = it;
  EXPECT_TRUE(copy == it);
  ++it;
  EXPECT_THAT((*it)[1].to_vector<int64_t>(), ElementsAre(2, 3));
  ++it;
  EXPECT_TRUE(it == loader.end());
  ++it;  // stays at the end
  EXPECT_TRUE(it == loader.end());
  DataLoader empty_loader(make_xy(4), {.batch_size = 8, .drop_last = true});
  EXPECT_EQ(empty_loader.size(), 0);
  EXPECT_TRUE(empty_loader.begin() == empty_loader.end());
}

TEST(DataLoader, RejectsBadOptionsLikePyTorch) {
  auto ds = make_xy();
  EXPECT_THAT(error_of([&] { DataLoader(ds, {.batch_size = 0}); }),
              HasSubstr("batch_size should be a positive integer, got 0"));
  EXPECT_THAT(error_of([&] {
                DataLoader(ds, {.shuffle = true, .sampler = std::make_shared<SequentialSampler>(10)});
              }),
              HasSubstr("sampler option is mutually exclusive with shuffle"));
  auto bs = std::make_shared<BatchSampler>(std::make_shared<SequentialSampler>(10), 2, false);
  EXPECT_THAT(error_of([&] { DataLoader(ds, {.batch_size = 3, .batch_sampler = bs}); }),
              HasSubstr("batch_sampler option is mutually exclusive with batch_size, shuffle, "
                        "sampler, and drop_last"));
  EXPECT_THAT(error_of([&] { DataLoader(ds, {.num_workers = -1}); }),
              HasSubstr("num_workers option should be non-negative, got -1"));
  EXPECT_THAT(error_of([&] { DataLoader(ds, {.prefetch_factor = 0}); }),
              HasSubstr("prefetch_factor should be >= 1"));
  EXPECT_THAT(error_of([] { DataLoader(nullptr); }), HasSubstr("dataset is null"));
  // A sampler built for a bigger dataset is caught at fetch time with a hint.
  DataLoader wrong(ds, {.sampler = std::make_shared<SequentialSampler>(12)});
  EXPECT_THAT(error_of([&] { for (Batch& b : wrong) (void)b; }),
              HasSubstr("the sampler produced index 10 but the dataset has 10 examples"));
}

TEST(DataLoaderRebuild, KeepsOptionsAndSwapsTheSampler) {
  int collate_calls = 0;
  Collate counting = [&collate_calls](std::vector<Example> e) {
    ++collate_calls;
    return default_collate(std::move(e));
  };
  auto ds = make_xy();
  DataLoader original(ds, {.batch_size = 2, .shuffle = true, .drop_last = true, .num_workers = 0,
                           .collate = counting, .seed = 17, .prefetch_factor = 3});
  EXPECT_TRUE(original.options().shuffle);
  EXPECT_EQ(original.options().sampler, nullptr);  // as given, not as resolved
  EXPECT_NE(dynamic_cast<RandomSampler*>(original.sampler().get()), nullptr);

  auto shard = std::make_shared<DistributedSampler>(10, 3, 1, /*shuffle=*/false);  // 1, 4, 7, 0
  std::shared_ptr<DataLoader> rebuilt = original.rebuild(shard);
  const DataLoaderOptions& o = rebuilt->options();
  EXPECT_EQ(rebuilt->dataset(), ds);
  EXPECT_EQ(o.batch_size, 2);
  EXPECT_FALSE(o.shuffle);
  EXPECT_TRUE(o.drop_last);
  EXPECT_EQ(o.seed, 17u);
  EXPECT_EQ(o.prefetch_factor, 3);
  EXPECT_EQ(o.sampler, shard);
  EXPECT_EQ(rebuilt->sampler(), shard);
  EXPECT_EQ(labels(*rebuilt), (std::vector<std::vector<int64_t>>{{1, 4}, {7, 0}}));
  EXPECT_EQ(collate_calls, 2);  // the collate came along
}

TEST(DataLoaderRebuild, ReplacesTheSamplerInsideAGivenBatchSampler) {
  auto bs = std::make_shared<BatchSampler>(std::make_shared<SequentialSampler>(10), 3, true);
  DataLoader original(make_xy(), {.batch_sampler = bs});
  auto rebuilt = original.rebuild(std::make_shared<DistributedSampler>(10, 2, 0, false));  // 0 2 4 6 8
  ASSERT_NE(rebuilt->options().batch_sampler, nullptr);
  EXPECT_NE(rebuilt->options().batch_sampler, bs);
  EXPECT_EQ(rebuilt->batch_sampler()->batch_size(), 3);
  EXPECT_TRUE(rebuilt->batch_sampler()->drop_last());
  EXPECT_EQ(labels(*rebuilt), (std::vector<std::vector<int64_t>>{{0, 2, 4}}));
  EXPECT_THAT(error_of([&] { original.rebuild(nullptr); }), HasSubstr("new sampler is null"));
}

// A user loader with two extra constructor arguments: a tag, and a scale its collate applies.
class ScaledLoader : public RebuildableDataLoader<ScaledLoader, std::string, double> {
 public:
  ScaledLoader(std::shared_ptr<Dataset> dataset, DataLoaderOptions options, std::string tag,
               double scale)
      : RebuildableDataLoader(std::move(dataset), with_scaling(std::move(options), scale), tag,
                              scale),
        tag_(std::move(tag)),
        scale_(scale) {}
  const std::string& tag() const { return tag_; }
  double scale() const { return scale_; }

 private:
  static DataLoaderOptions with_scaling(DataLoaderOptions options, double scale) {
    options.collate = [scale](std::vector<Example> examples) {
      Batch b = default_collate(std::move(examples));
      float* x = b[0].data_ptr<float>();  // contiguous: default_collate allocates it
      for (int64_t i = 0; i < b[0].numel(); ++i) x[i] *= float(scale);
      return b;
    };
    return options;
  }
  std::string tag_;
  double scale_;
};

TEST(DataLoaderRebuild, SubclassKeepsItsConstructorArguments) {
  ScaledLoader original(make_xy(), {.batch_size = 2, .num_workers = 2}, "train", 10.0);
  std::shared_ptr<DataLoader> rebuilt =
      original.rebuild(std::make_shared<DistributedSampler>(10, 4, 3, false));  // 3, 7, 1
  auto scaled = std::dynamic_pointer_cast<ScaledLoader>(rebuilt);
  ASSERT_NE(scaled, nullptr);
  EXPECT_EQ(scaled->tag(), "train");
  EXPECT_EQ(scaled->scale(), 10.0);
  EXPECT_EQ(scaled->constructor_args(), std::make_tuple(std::string("train"), 10.0));
  EXPECT_EQ(scaled->options().num_workers, 2);
  std::vector<std::vector<float>> xs;
  for (Batch& b : *scaled) xs.push_back(b[0].to_vector<float>());
  ASSERT_EQ(xs.size(), 2u);
  EXPECT_THAT(xs[0], ElementsAre(60, 70, 140, 150));  // rows 3 and 7, times 10
  EXPECT_THAT(xs[1], ElementsAre(20, 30));             // row 1
  // Rebuilding the rebuilt one works too.
  auto again = std::dynamic_pointer_cast<ScaledLoader>(
      scaled->rebuild(std::make_shared<SequentialSampler>(10)));
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->tag(), "train");
  EXPECT_EQ(again->size(), 5);
}

TEST(DataLoaderRebuild, RefusesASubclassItCannotRecreate) {
  struct PlainSubclass : DataLoader {
    using DataLoader::DataLoader;
  };
  PlainSubclass loader(make_xy());
  EXPECT_THAT(error_of([&] { loader.rebuild(std::make_shared<SequentialSampler>(10)); }),
              HasSubstr("derive it from RebuildableDataLoader<"));
}

}  // namespace
}  // namespace loom::data
