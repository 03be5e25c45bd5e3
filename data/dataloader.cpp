// DataLoader: option validation (PyTorch's rules and messages), epochs, iteration, rebuild.
#include "data/dataloader.h"

#include <cxxabi.h>

#include <cstdlib>
#include <typeinfo>

#include "data/prefetcher.h"
#include "tensor/defaults.h"

namespace loom::data {
namespace {

std::string type_name(const std::type_info& type) {
  int status = 0;
  char* name = abi::__cxa_demangle(type.name(), nullptr, nullptr, &status);
  std::string out = status == 0 && name ? name : type.name();
  std::free(name);
  return out;
}

}  // namespace

DataLoader::DataLoader(std::shared_ptr<Dataset> dataset, DataLoaderOptions options)
    : dataset_(std::move(dataset)), options_(std::move(options)) {
  const DataLoaderOptions& o = options_;
  LOOM_VALUE_CHECK(dataset_ != nullptr, "DataLoader: dataset is null");
  LOOM_VALUE_CHECK(o.batch_size >= 1, "DataLoader: batch_size should be a positive integer, got ",
                   o.batch_size);
  LOOM_VALUE_CHECK(o.num_workers >= 0,
                   "DataLoader: num_workers option should be non-negative, got ", o.num_workers,
                   "; use num_workers=0 to disable worker threads");
  LOOM_VALUE_CHECK(o.prefetch_factor >= 1, "DataLoader: prefetch_factor should be >= 1, got ",
                   o.prefetch_factor);
  if (o.batch_sampler) {
    LOOM_VALUE_CHECK(o.batch_size == 1 && !o.shuffle && !o.sampler && !o.drop_last,
                     "DataLoader: batch_sampler option is mutually exclusive with batch_size, "
                     "shuffle, sampler, and drop_last (got batch_size=",
                     o.batch_size, ", shuffle=", o.shuffle, ", sampler=", o.sampler != nullptr,
                     ", drop_last=", o.drop_last, "); set them on the BatchSampler instead");
    batch_sampler_ = o.batch_sampler;
    return;
  }
  LOOM_VALUE_CHECK(!(o.sampler && o.shuffle),
                   "DataLoader: sampler option is mutually exclusive with shuffle; the sampler "
                   "decides the order, so pass shuffle=false (or a RandomSampler)");
  std::shared_ptr<Sampler> sampler = o.sampler;
  if (!sampler) {
    if (o.shuffle)
      sampler = std::make_shared<RandomSampler>(dataset_->size(), o.seed);
    else
      sampler = std::make_shared<SequentialSampler>(dataset_->size());
  }
  batch_sampler_ = std::make_shared<BatchSampler>(std::move(sampler), o.batch_size, o.drop_last);
}

DataLoader::Iterator DataLoader::begin() {
  PrefetchPlan plan;
  plan.dataset = dataset_;
  plan.collate = options_.collate ? options_.collate : Collate(default_collate);
  plan.batches = batch_sampler_->batches();
  plan.num_workers = options_.num_workers;
  plan.prefetch_factor = options_.prefetch_factor;
  plan.seed = options_.seed;
  plan.epoch = epochs_started_++;
  plan.default_dtype = default_dtype();
  plan.default_device = default_device();
  Iterator it(std::make_shared<BatchPrefetcher>(std::move(plan)));
  it.advance();
  return it;
}

DataLoaderOptions DataLoader::options_with_sampler(std::shared_ptr<Sampler> sampler) const {
  LOOM_VALUE_CHECK(sampler != nullptr, "DataLoader::rebuild: the new sampler is null");
  DataLoaderOptions o = options_;
  o.shuffle = false;  // the sampler decides the order now
  if (o.batch_sampler) {
    o.batch_sampler = std::make_shared<BatchSampler>(std::move(sampler), o.batch_sampler->batch_size(),
                                                     o.batch_sampler->drop_last());
  } else {
    o.sampler = std::move(sampler);
  }
  return o;
}

std::shared_ptr<DataLoader> DataLoader::rebuild(std::shared_ptr<Sampler> sampler) const {
  if (typeid(*this) != typeid(DataLoader))
    throw ValueError(detail::concat(
        "DataLoader::rebuild: ", type_name(typeid(*this)),
        " is a DataLoader subclass that cannot be re-created from its options alone; derive it "
        "from RebuildableDataLoader<", type_name(typeid(*this)),
        ", ExtraArgs...> (or override rebuild()) so it can be rebuilt with another sampler"));
  return std::make_shared<DataLoader>(dataset_, options_with_sampler(std::move(sampler)));
}

DataLoader::Iterator::Iterator(std::shared_ptr<BatchPrefetcher> run) : run_(std::move(run)) {}

void DataLoader::Iterator::advance() {
  std::shared_ptr<BatchPrefetcher> run = run_;
  run_.reset();  // at the end unless a batch arrives (also after a rethrown worker error)
  current_.reset();
  std::optional<Batch> batch = run->next();
  if (!batch) return;
  current_ = std::make_shared<Batch>(std::move(*batch));
  run_ = std::move(run);
}

DataLoader::Iterator& DataLoader::Iterator::operator++() {
  if (run_) {
    ++position_;
    advance();
  }
  return *this;
}

bool DataLoader::Iterator::operator==(const Iterator& other) const {
  if (!run_ || !other.run_) return !run_ && !other.run_;
  return run_ == other.run_ && position_ == other.position_;
}

}  // namespace loom::data
