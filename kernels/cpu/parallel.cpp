#include "kernels/cpu/parallel.h"

#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <new>
#include <pthread.h>
#include <string_view>
#include <thread>
#include <vector>

#include "core/error.h"  // header only: the error types (kernels link nothing of tensor/)

extern "C" void openblas_set_num_threads(int);

namespace loom {
namespace {

thread_local bool t_in_parallel = false;

// A fixed pool of workers that sleep until a job arrives. One job at a time: the caller
// takes chunk 0 and waits for the others.
class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { loop(i + 1); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int size() const { return int(threads_.size()) + 1; }

  void run(int chunks, const std::function<void(int)>& chunk_fn) {
    std::lock_guard<std::mutex> job_lock(job_mu_);  // one job at a time
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &chunk_fn;
      chunks_ = chunks;
      pending_ = chunks - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    run_chunk(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return pending_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_chunk(int c) {
    t_in_parallel = true;
    try {
      (*fn_)(c);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    t_in_parallel = false;
  }
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (id >= chunks_) continue;
      lock.unlock();
      run_chunk(id);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_, job_mu_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* fn_ = nullptr;
  int chunks_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

int cores() { return int(std::max(1u, std::thread::hardware_concurrency())); }

int initial_threads() { return num_threads_from_env().value_or(cores()); }

int g_num_threads = 0;
std::mutex g_pool_mu;
std::unique_ptr<Pool> g_pool;

// After fork() the child has the pool object but none of its threads: abandon it (its
// memory is the parent's copy, never joined) and build a fresh one on first use.
void forget_pool_in_child() {
  new (&g_pool_mu) std::mutex();
  (void)g_pool.release();
}

Pool& pool() {
  static bool registered = (pthread_atfork(nullptr, nullptr, forget_pool_in_child), true);
  (void)registered;
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (!g_pool) {
    if (g_num_threads == 0) g_num_threads = initial_threads();
    openblas_set_num_threads(g_num_threads);
    g_pool = std::make_unique<Pool>(g_num_threads - 1);
  }
  return *g_pool;
}

}  // namespace

std::optional<int> parse_num_threads(const char* value) {
  if (!value || !*value) return std::nullopt;
  std::string_view text(value);
  int n = 0;
  // Digits only: from_chars alone would take a leading '-' and stop at the first non-digit
  // ("3x" as 3). A count too large for an int is refused too.
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  bool digits_only = text.find_first_not_of("0123456789") == std::string_view::npos;
  if (!digits_only || ec != std::errc() || end != text.data() + text.size() || n <= 0)
    throw ValueError(detail::concat(
        "LOOM_NUM_THREADS='", text, "' is invalid: it must be a positive integer, the threads "
        "each process uses (e.g. LOOM_NUM_THREADS=", cores(), "); unset it to use every core (",
        cores(), " here, split between the ranks under DDP)"));
  return n;
}

std::optional<int> num_threads_from_env() {
  return parse_num_threads(std::getenv("LOOM_NUM_THREADS"));
}

int get_num_threads() { return pool().size(); }

void set_num_threads(int n) {
  n = std::max(1, n);
  std::lock_guard<std::mutex> lock(g_pool_mu);
  g_num_threads = n;
  openblas_set_num_threads(n);
  g_pool.reset();  // rebuilt lazily with the new size
}

namespace kernels {

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  int64_t n = end - begin;
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  if (t_in_parallel || n <= grain) return fn(begin, end);
  Pool& p = pool();
  int chunks = int(std::min<int64_t>(p.size(), (n + grain - 1) / grain));
  if (chunks <= 1) return fn(begin, end);
  int64_t per = (n + chunks - 1) / chunks;
  p.run(chunks, [&](int c) {
    int64_t b = begin + c * per, e = std::min(end, b + per);
    if (b < e) fn(b, e);
  });
}

}  // namespace kernels
}  // namespace loom
