// DataLoader: iterates a Dataset in batches, optionally prefetching on worker threads.
//
// for (Batch& batch : loader) { ... }  visits one epoch; every new iteration is a new epoch (a
// RandomSampler reshuffles, Note [Sampler epochs]). The batches are the same for a given seed
// whatever num_workers is (Note [Worker prefetch], Note [Batch seeding]).
//
// Note [Rebuilding loaders]: a DataLoader keeps the options it was built with, untouched, so
// Fabric can rebuild it around another sampler (a DistributedSampler) via rebuild(). The
// default rebuild() makes a plain DataLoader and therefore refuses subclasses, which it cannot
// re-create; a subclass with extra constructor arguments derives from
// RebuildableDataLoader<Derived, Args...> instead, which stores those arguments and calls
// Derived's constructor again with them. Deliberately not here: iterable datasets, worker
// processes, pin_memory, timeouts and persistent workers.
#pragma once

#include <cstddef>
#include <iterator>
#include <memory>
#include <tuple>
#include <type_traits>

#include "data/batch_sampler.h"
#include "data/collate.h"
#include "data/dataset.h"
#include "data/sampler.h"

namespace loom::data {

class BatchPrefetcher;

struct DataLoaderOptions {
  int64_t batch_size = 1;
  bool shuffle = false;  // a RandomSampler(seed); exclusive with sampler and batch_sampler
  std::shared_ptr<Sampler> sampler = nullptr;             // exclusive with shuffle and batch_sampler
  std::shared_ptr<BatchSampler> batch_sampler = nullptr;  // exclusive with batch_size, shuffle, sampler, drop_last
  bool drop_last = false;
  int num_workers = 0;  // 0: fetch on the consuming thread
  Collate collate = nullptr;  // empty: default_collate
  uint64_t seed = 0;    // shuffling and per-batch generator seeding
  int prefetch_factor = 2;  // batches in flight per worker
};

class DataLoader {
 public:
  class Iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using pointer = Batch*;
    using reference = Batch&;

    Iterator() = default;  // the end sentinel
    Batch& operator*() const { return *current_; }
    Batch* operator->() const { return current_.get(); }
    Iterator& operator++();
    // Two iterators are equal when both are at the end, or share an epoch and a position.
    bool operator==(const Iterator& other) const;

   private:
    friend class DataLoader;
    explicit Iterator(std::shared_ptr<BatchPrefetcher> run);
    void advance();

    std::shared_ptr<BatchPrefetcher> run_;  // null at the end
    std::shared_ptr<Batch> current_;
    int64_t position_ = 0;
  };

  // Throws ValueError, as PyTorch does, for batch_size < 1, sampler or batch_sampler together
  // with shuffle, batch_sampler with batch_size/sampler/drop_last, negative num_workers and
  // prefetch_factor < 1.
  DataLoader(std::shared_ptr<Dataset> dataset, DataLoaderOptions options = {});
  virtual ~DataLoader() = default;

  // Starts a new epoch: draws the batch order and fetches the first batch.
  Iterator begin();
  Iterator end() { return Iterator(); }
  int64_t size() const { return batch_sampler_->size(); }  // batches per epoch

  // What it was built with (Note [Rebuilding loaders]).
  const DataLoaderOptions& options() const { return options_; }
  const std::shared_ptr<Dataset>& dataset() const { return dataset_; }
  // What it iterates with: the given sampler, or the one shuffle/batch_sampler implied.
  const std::shared_ptr<Sampler>& sampler() const { return batch_sampler_->sampler(); }
  const std::shared_ptr<BatchSampler>& batch_sampler() const { return batch_sampler_; }
  // Epochs started so far (begin() calls).
  int64_t epochs_started() const { return epochs_started_; }

  // A loader like this one that draws its indices from `sampler` (Note [Rebuilding loaders]).
  virtual std::shared_ptr<DataLoader> rebuild(std::shared_ptr<Sampler> sampler) const;

 protected:
  // These options with `sampler` in place of the order: shuffle cleared; a given batch_sampler
  // is replaced by a BatchSampler of the same batch_size and drop_last over `sampler`.
  DataLoaderOptions options_with_sampler(std::shared_ptr<Sampler> sampler) const;

 private:
  std::shared_ptr<Dataset> dataset_;
  DataLoaderOptions options_;
  std::shared_ptr<BatchSampler> batch_sampler_;
  int64_t epochs_started_ = 0;
};

// Base of a user DataLoader subclass whose constructor takes extra arguments after the
// dataset and the options: Derived(std::shared_ptr<Dataset>, DataLoaderOptions, Args...).
// rebuild() re-invokes that constructor with the stored arguments and the new options.
template <class Derived, class... Args>
class RebuildableDataLoader : public DataLoader {
 public:
  RebuildableDataLoader(std::shared_ptr<Dataset> dataset, DataLoaderOptions options, Args... args)
      : DataLoader(std::move(dataset), std::move(options)), args_(std::move(args)...) {}

  std::shared_ptr<DataLoader> rebuild(std::shared_ptr<Sampler> sampler) const override {
    static_assert(std::is_constructible_v<Derived, std::shared_ptr<Dataset>, DataLoaderOptions,
                                          const Args&...>,
                  "RebuildableDataLoader<Derived, Args...>: Derived needs a constructor "
                  "Derived(std::shared_ptr<Dataset>, DataLoaderOptions, Args...)");
    DataLoaderOptions options = options_with_sampler(std::move(sampler));
    return std::apply(
        [&](const Args&... args) -> std::shared_ptr<DataLoader> {
          return std::make_shared<Derived>(dataset(), options, args...);
        },
        args_);
  }
  // The extra constructor arguments, as given.
  const std::tuple<Args...>& constructor_args() const { return args_; }

 private:
  std::tuple<Args...> args_;
};

}  // namespace loom::data
