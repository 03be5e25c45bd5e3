// BatchPrefetcher: the fetch of one batch and the worker threads (Note [Worker prefetch]).
#include "data/prefetcher.h"

#include "data/rng.h"
#include "tensor/defaults.h"
#include "tensor/random.h"

namespace loom::data {
namespace {

// Seeds the thread's default generator for one batch and restores its state on scope exit
// (Note [Batch seeding]).
class BatchSeedScope {
 public:
  explicit BatchSeedScope(uint64_t seed) : gen_(default_generator()), saved_(gen_) {
    gen_.manual_seed(seed);
  }
  ~BatchSeedScope() { gen_ = saved_; }
  BatchSeedScope(const BatchSeedScope&) = delete;
  BatchSeedScope& operator=(const BatchSeedScope&) = delete;

 private:
  Generator& gen_;
  Generator saved_;
};

}  // namespace

BatchPrefetcher::BatchPrefetcher(PrefetchPlan plan) : plan_(std::move(plan)) {
  if (plan_.num_workers <= 0) return;
  capacity_ = int64_t(plan_.prefetch_factor) * plan_.num_workers;
  int workers = int(std::min<int64_t>(plan_.num_workers, num_batches()));
  workers_.reserve(size_t(workers));
  try {
    for (int w = 0; w < workers; ++w) workers_.emplace_back([this] { worker_loop(); });
  } catch (...) {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    consumed_.notify_all();
    for (std::thread& t : workers_) t.join();
    throw;
  }
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  consumed_.notify_all();
  for (std::thread& t : workers_) t.join();
}

Batch BatchPrefetcher::fetch(int64_t b) const {
  BatchSeedScope seed_scope(mix_seed(mix_seed(plan_.seed, uint64_t(plan_.epoch)), uint64_t(b)));
  const std::vector<int64_t>& indices = plan_.batches[size_t(b)];
  const int64_t n = plan_.dataset->size();
  std::vector<Example> examples;
  examples.reserve(indices.size());
  for (int64_t i : indices) {
    if (i < 0 || i >= n)
      throw ValueError(detail::concat("DataLoader: the sampler produced index ", i,
                                      " but the dataset has ", n,
                                      " examples; was the sampler built for another dataset?"));
    examples.push_back(plan_.dataset->get(i));
  }
  return plan_.collate(std::move(examples));
}

void BatchPrefetcher::worker_loop() {
  DefaultDTypeGuard dtype_guard(plan_.default_dtype);
  DefaultDeviceGuard device_guard(plan_.default_device);
  std::unique_lock lock(mutex_);
  for (;;) {
    consumed_.wait(lock, [&] {
      return stop_ || next_claim_ >= num_batches() || next_claim_ < next_consume_ + capacity_;
    });
    if (stop_ || next_claim_ >= num_batches()) return;
    const int64_t b = next_claim_++;
    lock.unlock();
    Slot slot;
    try {
      slot.batch = fetch(b);
    } catch (...) {
      slot.error = std::current_exception();
    }
    lock.lock();
    ready_.emplace(b, std::move(slot));
    produced_.notify_all();
  }
}

std::optional<Batch> BatchPrefetcher::next() {
  if (failed_) return std::nullopt;
  if (workers_.empty()) {
    if (next_consume_ >= num_batches()) return std::nullopt;
    try {
      return fetch(next_consume_++);
    } catch (...) {
      failed_ = true;
      throw;
    }
  }
  Slot slot;
  {
    std::unique_lock lock(mutex_);
    if (next_consume_ >= num_batches()) return std::nullopt;
    produced_.wait(lock, [&] { return ready_.count(next_consume_) != 0; });
    auto it = ready_.find(next_consume_);
    slot = std::move(it->second);
    ready_.erase(it);
    ++next_consume_;
  }
  consumed_.notify_all();
  if (slot.error) {
    failed_ = true;
    std::rethrow_exception(slot.error);
  }
  return std::move(slot.batch);
}

}  // namespace loom::data
