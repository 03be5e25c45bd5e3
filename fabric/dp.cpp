#include "fabric/dp.h"

#include <exception>
#include <set>
#include <thread>

#include "autograd/grad_mode.h"
#include "tensor/autocast.h"
#include "tensor/defaults.h"
#include "tensor/ops.h"
#include "tensor/random.h"

namespace loom {
namespace {

uint64_t splitmix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The calling thread's thread-local state that a replica thread must see to compute what the
// caller would have: whether to record autograd history, mixed precision, and the dtype and
// device that factories default to inside forward.
struct ThreadState {
  bool grad_enabled;
  AutocastState autocast;
  DType dtype;
  Device device;

  static ThreadState capture() {
    return {GradMode::is_enabled(), autocast_state(), default_dtype(), default_device()};
  }
  void apply() const {
    GradMode::set_enabled(grad_enabled);
    set_default_dtype(dtype);
    set_default_device(device);
  }
};

}  // namespace

DataParallel::DataParallel(std::shared_ptr<nn::Module> module, int replicas)
    : WrapperModule(std::move(module), "DataParallel"), replicas_(replicas) {
  if (replicas_ < 1)
    throw ValueError(detail::concat("DataParallel: replicas must be >= 1, got ", replicas_));
}

Tensor DataParallel::forward(const Tensor& x) {
  if (x.dim() == 0)
    throw ValueError("DataParallel: the input is a scalar; it needs a batch dim (dim 0) to split");
  const int64_t batch = x.size(0);
  const int64_t n = std::min<int64_t>(replicas_, batch);
  if (n <= 1) return (*inner_)(x);

  // Balanced chunks: the first batch % n get one extra row. The narrowing is recorded here,
  // so an input that requires grad gets its gradient back through every chunk.
  std::vector<Tensor> inputs(static_cast<size_t>(n)), outputs(static_cast<size_t>(n));
  int64_t start = 0;
  for (int64_t c = 0; c < n; ++c) {
    int64_t len = batch / n + (c < batch % n ? 1 : 0);
    inputs[size_t(c)] = x.narrow(0, start, len);
    start += len;
  }

  // Each replica draws from its own stream: a seed derived from the caller's generator and
  // one counter reserved per forward, so the caller's stream advances by one per step.
  Generator& caller_gen = default_generator();
  const uint64_t seed = caller_gen.seed(), step = caller_gen.advance(1);
  const ThreadState state = ThreadState::capture();
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  auto run = [&](int64_t c) {
    try {
      state.apply();
      AutocastGuard autocast(state.autocast.enabled, state.autocast.dtype);
      default_generator().manual_seed(splitmix64(splitmix64(seed) ^ (step * uint64_t(n) + uint64_t(c))));
      outputs[size_t(c)] = (*inner_)(inputs[size_t(c)]);
    } catch (...) {
      errors[size_t(c)] = std::current_exception();
    }
  };
  {
    // Chunk 0 runs on this thread, the others on their own; all are joined before any error
    // is rethrown, so no replica outlives the tensors it uses.
    std::vector<std::jthread> workers;
    workers.reserve(size_t(n - 1));
    for (int64_t c = 1; c < n; ++c) workers.emplace_back(run, c);
    // run(0) reseeds this thread's generator for its chunk: put the caller's stream back.
    const Generator saved = caller_gen;
    run(0);
    caller_gen = saved;
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  return cat(outputs, 0);
}

Device DataParallelStrategy::root_device() const {
  return accelerator_->device(devices_.empty() ? 0 : devices_.front());
}

std::shared_ptr<nn::Module> DataParallelStrategy::setup_module(std::shared_ptr<nn::Module> module) {
  std::set<int> distinct(devices_.begin(), devices_.end());
  if (accelerator_->name() != "cpu" && distinct.size() > 1)
    throw ValueError(detail::concat(
        "dp: replicas on ", distinct.size(), " distinct ", accelerator_->name(),
        " devices need per-device copies of the parameters, which this build of loom cannot "
        "make; use strategy 'ddp' (one process per device) or a single device"));
  return std::make_shared<DataParallel>(std::move(module), int(std::max<size_t>(1, devices_.size())));
}

}  // namespace loom
