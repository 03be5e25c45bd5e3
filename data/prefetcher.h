// BatchPrefetcher: produces one epoch's batches, in order, on the caller or on worker threads.
//
// Note [Worker prefetch]: with num_workers = W > 0, W threads claim batch numbers in increasing
// order from a shared counter, fetch and collate them, and park the results in a map keyed by
// batch number; the consumer takes batch k only when k is there, so delivery is strictly in
// order whatever the thread timing. A worker may claim batch b only while
// b < next_to_consume + prefetch_factor * W, which bounds the batches held in memory. An
// exception while fetching batch b is parked in b's slot and rethrown (same type and message)
// when the consumer reaches b. Destroying the prefetcher (an abandoned loop) stops the
// workers: each finishes at most its current batch, and all are joined before the destructor
// returns, so nothing hangs or leaks.
//
// Note [Batch seeding]: before fetching batch b of epoch e the fetching thread's default
// generator is seeded with mix(seed, e, b), so random augmentation inside Dataset::get gives
// the same batches for any num_workers. On the consumer thread (num_workers = 0) the
// generator's state is saved and restored around the fetch, so user code is unaffected.
// Worker threads start with the consumer's default dtype and device (tensor/defaults.h, which
// are thread-local), captured when the epoch begins, so factories in Dataset::get behave alike
// on every thread.
// Deliberately not here: worker processes (threads share the address space; loom's kernels
// release no global lock, so threads are enough), pinned memory, and persistent workers.
#pragma once

#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "data/collate.h"

namespace loom::data {

struct PrefetchPlan {
  std::shared_ptr<Dataset> dataset;
  Collate collate;
  std::vector<std::vector<int64_t>> batches;  // the epoch's index lists, in delivery order
  int num_workers = 0;
  int prefetch_factor = 2;
  uint64_t seed = 0;
  int64_t epoch = 0;
  DType default_dtype = DType::f32;  // the consumer thread's, installed on the workers
  Device default_device = Device::cpu();
};

class BatchPrefetcher {
 public:
  explicit BatchPrefetcher(PrefetchPlan plan);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // The next batch in order, or nullopt when the epoch is over (or an earlier batch failed).
  std::optional<Batch> next();
  int64_t num_batches() const { return int64_t(plan_.batches.size()); }

 private:
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  Batch fetch(int64_t b) const;
  void worker_loop();

  PrefetchPlan plan_;
  int64_t capacity_ = 0;  // batches claimed but not yet consumed, at most

  std::mutex mutex_;
  std::condition_variable produced_;  // a slot was filled
  std::condition_variable consumed_;  // capacity freed, or stop
  std::map<int64_t, Slot> ready_;     // batch number -> result, guarded by mutex_
  int64_t next_claim_ = 0;            // guarded by mutex_
  int64_t next_consume_ = 0;          // guarded by mutex_ when workers run
  bool stop_ = false;                 // guarded by mutex_
  bool failed_ = false;               // consumer side only
  std::vector<std::thread> workers_;
};

}  // namespace loom::data
