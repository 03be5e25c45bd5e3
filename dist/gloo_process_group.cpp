// GlooProcessGroup: queueing, validation, Gloo calls and debug fingerprints; see the header.
#include "dist/gloo_process_group.h"

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/transport/tcp/device.h>

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <sstream>
#include <vector>

#include "dist/gloo_reduce_scatter.h"
#include "dist/gloo_store.h"
#include "dist/launcher_watch.h"
#include "dist/reduce_op.h"
#include "dist/shm_all_reduce.h"
#include "core/error.h"

namespace loom::dist {

namespace {

using ReduceFn = void (*)(void*, const void*, const void*, size_t);

std::string describe(const char* op, const Tensor& t, const std::string& arg) {
  std::ostringstream s;
  s << op << "(" << dtype_name(t.dtype()) << ", " << shape_str(t.sizes());
  if (!arg.empty()) s << ", " << arg;
  s << ")";
  return s.str();
}

void check_tensor(const Tensor& t, const char* op, const char* what) {
  LOOM_VALUE_CHECK(t.defined(), op, ": ", what, " is an undefined tensor");
  LOOM_VALUE_CHECK(t.is_cpu(), op, ": ", what, " is on ", t.device(),
                   " but the gloo backend only takes CPU tensors (move it with .to(\"cpu\"))");
  LOOM_VALUE_CHECK(t.is_contiguous(), op, ": ", what, " of shape ", shape_str(t.sizes()),
                   " with strides ", shape_str(t.strides()),
                   " is not contiguous; collectives work in place on contiguous memory, pass "
                   "t.contiguous() and copy the result back");
}

// Gloo's reduce function for element type T and `op` (avg reduces as sum, divided later).
template <class T>
ReduceFn reduce_fn(ReduceOp op) {
  if constexpr (std::is_same_v<T, bool>) {
    // bools are 0/1 bytes: logical or is max, logical and is min.
    return op == ReduceOp::min ? ReduceFn(&gloo::min<uint8_t>) : ReduceFn(&gloo::max<uint8_t>);
  } else {
    switch (op) {
      case ReduceOp::max: return &gloo::max<T>;
      case ReduceOp::min: return &gloo::min<T>;
      case ReduceOp::sum: case ReduceOp::avg: break;
    }
    return &gloo::sum<T>;
  }
}


template <class T>
void gloo_all_reduce(const std::shared_ptr<gloo::Context>& ctx, T* data, int64_t numel,
                     ReduceOp op, uint32_t tag, std::chrono::milliseconds timeout) {
  gloo::AllreduceOptions opts(ctx);
  opts.setOutput(data, size_t(numel));
  opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
  opts.setReduceFunction(reduce_fn<T>(op));
  opts.setTag(tag);
  opts.setTimeout(timeout);
  gloo::allreduce(opts);
}

// Half/BFloat16 <-> f32 for the widened reduction.
template <class H>
float widen(H h) {
  if constexpr (std::is_same_v<H, Half>) return f16_to_f32(h.bits);
  else return bf16_to_f32(h.bits);
}
template <class H>
H narrow(float f) {
  if constexpr (std::is_same_v<H, Half>) return Half{f32_to_f16(f)};
  else return BFloat16{f32_to_bf16(f)};
}
template <class H>
std::vector<float> widened(const H* p, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = widen(p[i]);
  return out;
}
template <class H>
void narrow_into(const std::vector<float>& wide, H* p) {
  for (size_t i = 0; i < wide.size(); ++i) p[i] = narrow<H>(wide[i]);
}

template <class T>
constexpr bool is_16bit_float = std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;

std::string key_prefix(const std::string& group_name) { return "pg/" + group_name; }

// Blocks SIGPIPE in the calling thread for its lifetime. Threads inherit the creating thread's
// mask, so Gloo's event-loop thread and the worker started under it write to a dead peer's
// socket with EPIPE (an exception) instead of the default SIGPIPE action, which would kill the
// surviving rank. A SIGPIPE raised by such a write stays pending on that thread, harmlessly.
class SigpipeBlock {
 public:
  SigpipeBlock() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &old_);
  }
  ~SigpipeBlock() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t old_;
};

// Gloo's TCP pair waits this many times the context's timeout for its first connection.
constexpr int kConnectWaitFactor = 5;

int64_t elapsed_ms(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

// Note [Call check over Gloo]: what a rank is about to call, exchanged before each collective
// that runs over Gloo's TCP pairs. Fixed size, so mismatched calls never reach Gloo with
// mismatched buffer sizes (Gloo's event-loop thread meets those with an uncaught
// gloo::EnforceNotMet, which terminates the process).
struct CallRecord {
  uint64_t seq;
  uint64_t hash;   // of the whole description (text may be truncated)
  char text[112];  // the description, NUL-terminated
};
static_assert(sizeof(CallRecord) == 128);

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

CallRecord make_record(uint64_t seq, const std::string& description) {
  CallRecord r{};
  r.seq = seq;
  r.hash = fnv1a(description);
  std::strncpy(r.text, description.c_str(), sizeof r.text - 1);
  return r;
}

std::string record_str(const CallRecord& r) {
  return std::string(r.text, strnlen(r.text, sizeof r.text));
}

GlooOptions make_options(std::chrono::milliseconds timeout) {
  GlooOptions options;
  options.timeout = timeout;
  return options;
}

}  // namespace

namespace {
// An on/off environment switch: unset or empty gives `fallback`; "0" and "false" (any case)
// turn it off, any other value on.
bool env_flag(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  std::string s(v);
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return !(s == "0" || s == "false");
}
}  // namespace

bool debug_collectives_from_env() { return env_flag("LOOM_DEBUG_COLLECTIVES", false); }

bool shared_memory_from_env() { return env_flag("LOOM_SHM", true); }

// A one-shot completion flag with the operation's error.
class GlooProcessGroup::GlooWork : public Work {
 public:
  void wait() override {
    // Small collectives finish within tens of microseconds: stay runnable (yielding) that
    // long before sleeping, so a loaded machine does not add a scheduler wake-up per call.
    auto spin_until = std::chrono::steady_clock::now() + kSpin;
    while (!done_.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < spin_until)
      std::this_thread::yield();
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return done_.load(std::memory_order_relaxed); });
    if (error_) std::rethrow_exception(error_);
  }
  bool is_completed() const override { return done_.load(std::memory_order_acquire); }
  void finish(std::exception_ptr error) {
    {
      std::lock_guard lock(mutex_);
      error_ = std::move(error);
      done_.store(true, std::memory_order_release);
    }
    cv_.notify_all();
  }

 private:
  static constexpr std::chrono::microseconds kSpin{200};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::atomic<bool> done_{false};
  std::exception_ptr error_;
};

GlooProcessGroup::GlooProcessGroup(int rank, int size, std::shared_ptr<TCPStore> store,
                                   std::chrono::milliseconds timeout)
    : GlooProcessGroup(rank, size, std::move(store), make_options(timeout)) {}

GlooProcessGroup::GlooProcessGroup(int rank, int size, std::shared_ptr<TCPStore> store,
                                   GlooOptions options)
    : rank_(rank),
      size_(size),
      store_(std::move(store)),
      group_name_(std::move(options.group_name)),
      address_(options.hostname),
      debug_(options.debug.value_or(debug_collectives_from_env())) {
  LOOM_VALUE_CHECK(size_ >= 1, "GlooProcessGroup: size must be >= 1, got ", size_);
  LOOM_VALUE_CHECK(rank_ >= 0 && rank_ < size_, "GlooProcessGroup: rank ", rank_,
                   " is outside [0, ", size_, ")");
  LOOM_VALUE_CHECK(store_ != nullptr, "GlooProcessGroup: the store is null");
  LOOM_VALUE_CHECK(options.timeout.count() > 0, "GlooProcessGroup: timeout must be positive, got ",
                   options.timeout.count(), " ms");
  timeout_ = options.timeout;

  SigpipeBlock sigpipe_block;  // for the threads started below, see SigpipeBlock
  gloo::transport::tcp::attr attr;
  attr.hostname = options.hostname;
  // Every wait of the rendezvous honours timeout_ (docs/design.md "Strategies"): the store
  // waits for the peers' addresses up to timeout_ whatever Gloo asks (GlooStore), and Gloo's
  // TCP pairs wait 5 x the context's timeout for their first connection
  // (gloo/transport/tcp/pair.h, waitUntil), so the context holds timeout_ / 5 while
  // connecting and timeout_ afterwards (the collectives pass theirs explicitly anyway).
  GlooStore gloo_store(store_, key_prefix(group_name_) + "/gloo", timeout_);
  const auto start = std::chrono::steady_clock::now();
  try {
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(rank_, size_);
    context->setTimeout(
        std::chrono::milliseconds((timeout_.count() + kConnectWaitFactor - 1) / kConnectWaitFactor));
    context->connectFullMesh(gloo_store, device);
    context->setTimeout(timeout_);
    context_ = std::move(context);
  } catch (const RuntimeError& e) {
    // The store's own message already says which key was missing and for how long.
    throw RuntimeError(detail::concat("GlooProcessGroup '", group_name_, "' rank ", rank_, "/",
                                      size_, ": rendezvous failed: ", e.what()));
  } catch (const std::exception& e) {
    throw RuntimeError(detail::concat(
        "GlooProcessGroup '", group_name_, "' rank ", rank_, "/", size_,
        ": connecting the full mesh failed after ", elapsed_ms(start), " ms (timeout ",
        timeout_.count(), " ms): ", e.what(),
        ". Check that every rank started with the same world size and group name, that none "
        "is stopped or stuck, and that the ranks can reach each other at hostname '",
        options.hostname, "'"));
  } catch (...) {
    throw RuntimeError(detail::concat("GlooProcessGroup '", group_name_, "' rank ", rank_, "/",
                                      size_, ": connecting the full mesh failed after ",
                                      elapsed_ms(start), " ms with an unknown exception"));
  }
  // Collective on every rank (the ranks that opt out say so, so all decide alike).
  const bool want_shm = options.shared_memory.value_or(shared_memory_from_env());
  topology_.nodes.assign(1, {});
  for (int r = 0; r < size_; ++r) topology_.nodes[0].push_back(r);
  topology_.local_rank = rank_;
  try {
    if (size_ > 1) {
      // Who shares a node: one exchange, then every rank decides alike (NodeTopology).
      const std::string key =
          want_shm ? options.node_key.value_or(local_node_key()) : std::string();
      topology_ = exchange_node_keys(rank_, size_, *store_, key_prefix(group_name_) + "/node",
                                     key, timeout_);
    }
    if (topology_.nodes.size() > 1 && topology_.all_keyed) {
      set_up_node_shared_memory();
    } else {
      shm_ = ShmAllReduce::try_create(rank_, size_, *store_, key_prefix(group_name_) + "/shm",
                                      timeout_, want_shm);
    }
  } catch (const RuntimeError& e) {
    throw RuntimeError(detail::concat("GlooProcessGroup '", group_name_, "' rank ", rank_, "/",
                                      size_, ": shared-memory setup failed: ", e.what()));
  }
  worker_ = std::thread([this] { worker_loop(); });
}

void GlooProcessGroup::set_up_node_shared_memory() {
  // A segment per node of several ranks; a node of one rank needs none. The group is
  // hierarchical only when every node succeeded, else every rank falls back to Gloo alone
  // (a split decision would pair shared-memory barriers with TCP messages).
  const int n_local = topology_.local_size();
  std::string why;
  if (n_local > 1) {
    node_shm_ = ShmAllReduce::try_create(
        topology_.local_rank, n_local, *store_,
        key_prefix(group_name_) + "/shm/node" + std::to_string(topology_.node), timeout_,
        /*wanted=*/true, &why);
  }
  const bool ok = n_local == 1 || node_shm_ != nullptr;
  const std::string base = key_prefix(group_name_) + "/hier/";
  std::vector<std::string> keys;
  for (int r = 0; r < size_; ++r) keys.push_back(base + std::to_string(r));
  store_->set(keys[size_t(rank_)], ok ? std::string("ok") : "no: " + why);
  store_->wait(keys, timeout_);
  bool all_ok = ok;
  for (int r = 0; r < size_ && all_ok; ++r)
    all_ok = r == rank_ || store_->get_string(keys[size_t(r)]) == "ok";
  bool some_shared = false;
  for (const auto& node : topology_.nodes) some_shared = some_shared || node.size() > 1;
  hierarchical_ = all_ok && some_shared;
  if (!hierarchical_) node_shm_.reset();
}

GlooProcessGroup::~GlooProcessGroup() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

bool GlooProcessGroup::reduces_in_shm(DType dtype, ReduceOp op) const {
  if (!shm_) return false;
  const bool widened = dtype == DType::f16 || dtype == DType::bf16;
  return ShmAllReduce::supports(widened ? DType::f32 : dtype, op);
}

std::shared_ptr<Work> GlooProcessGroup::enqueue(std::string description,
                                                std::function<void(uint32_t)> run,
                                                bool uses_shm) {
  auto work = std::make_shared<GlooWork>();
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(Task{std::move(description), std::move(run), work, uses_shm});
  }
  cv_.notify_one();
  return work;
}

void GlooProcessGroup::worker_loop() {
  uint64_t seq = 0;
  for (;;) {
    Task task;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    ++seq;
    run_task(task, seq);
  }
}

void GlooProcessGroup::run_task(Task& task, uint64_t seq) {
  std::exception_ptr error;
  const auto start = std::chrono::steady_clock::now();
  try {
    if (debug_) check_fingerprints(seq, task.description);
    std::string mismatch;
    try {
      // Every Gloo call below, on this worker thread, ends here as a loom error; Gloo's own
      // event-loop thread never sees mismatched sizes (Note [Call check over Gloo]).
      if (shm_) {
        // Note [Call check over Gloo], shared-memory form.
        if (task.uses_shm) shm_->set_call(seq, task.description);
        else if (!debug_) shm_->check_call(seq, task.description);
      } else if (!debug_) {
        mismatch = check_call_over_gloo(seq, task.description);
      }
      if (mismatch.empty()) task.run(uint32_t(seq));
    } catch (const ValueError&) {
      throw;
    } catch (const CallMismatch& e) {
      // Names both calls already; no rank died (Note [Call check over Gloo]).
      throw CallMismatch(detail::concat("GlooProcessGroup '", group_name_, "' rank ", rank_,
                                        "/", size_, ": ", e.what()));
    } catch (const std::exception& e) {
      // gloo::IoException (peer closed, timed out), gloo::Exception, EnforceNotMet, ...
      throw RuntimeError(detail::concat(
          "GlooProcessGroup '", group_name_, "' rank ", rank_, "/", size_, ": collective #", seq,
          " ", task.description, " failed after ", elapsed_ms(start), " ms (timeout ",
          timeout_.count(), " ms): ", e.what(),
          ". A rank may have died or called a different collective; check the other ranks' "
          "output, and set LOOM_DEBUG_COLLECTIVES=1 to compare what every rank called"));
    } catch (...) {
      throw RuntimeError(detail::concat("GlooProcessGroup '", group_name_, "' rank ", rank_,
                                        "/", size_, ": collective #", seq, " ",
                                        task.description, " failed after ", elapsed_ms(start),
                                        " ms with an unknown exception"));
    }
    if (!mismatch.empty()) throw CallMismatch(mismatch);
  } catch (const ValueError&) {
    error = std::current_exception();  // a bad argument: no peer is missing
  } catch (const std::exception& e) {
    // A peer may be gone. When it is the launcher of this rank, the rank ends here with the
    // one line that says so (launcher_watch.h); otherwise the error goes to the caller.
    stop_if_launcher_died(e.what());
    error = std::current_exception();
  } catch (...) {
    error = std::current_exception();
  }
  // Drop the task's tensors before signalling, so a waiter sees its buffers released.
  task.run = nullptr;
  task.work->finish(error);
}

std::string GlooProcessGroup::check_call_over_gloo(uint64_t seq, const std::string& description) {
  if (size_ == 1) return {};
  const CallRecord mine = make_record(seq, description);
  std::vector<CallRecord> all(static_cast<size_t>(size_));
  gloo::AllgatherOptions opts(context_);
  opts.setInput(const_cast<CallRecord*>(&mine), 1);
  opts.setOutput(all.data(), all.size());
  opts.setTag(kCallCheckTag);
  opts.setTimeout(timeout_);
  gloo::allgather(opts);
  int differing = -1;
  for (int r = 0; r < size_ && differing < 0; ++r) {
    const CallRecord& c = all[size_t(r)];
    if (c.seq != mine.seq || c.hash != mine.hash) differing = r;
  }
  if (differing < 0) return {};
  // Name rank 0's call against the first rank that differs from it, as debug mode does.
  const CallRecord& first = all[0];
  int other = -1;
  for (int r = 1; r < size_ && other < 0; ++r) {
    if (all[size_t(r)].seq != first.seq || all[size_t(r)].hash != first.hash) other = r;
  }
  if (other < 0) other = differing;  // rank 0 differs from this rank only
  std::ostringstream msg;
  msg << "GlooProcessGroup '" << group_name_ << "' rank " << rank_ << "/" << size_
      << ": collective #" << seq << " mismatch: rank 0 called " << record_str(first);
  if (first.seq != seq) msg << " (its collective #" << first.seq << ")";
  msg << " but rank " << other << " called " << record_str(all[size_t(other)]);
  if (all[size_t(other)].seq != seq) msg << " (its collective #" << all[size_t(other)].seq << ")";
  if (size_ > 2) {
    msg << " (every rank:";
    for (int r = 0; r < size_; ++r) msg << (r ? "; " : " ") << r << ": " << record_str(all[size_t(r)]);
    msg << ")";
  }
  msg << ". All ranks must issue the same collectives, with the same sizes, dtypes and ops, in "
         "the same order (a rank may have skipped or added one)";
  return msg.str();
}

void GlooProcessGroup::check_fingerprints(uint64_t seq, const std::string& description) {
  const std::string base = key_prefix(group_name_) + "/fp/" + std::to_string(seq) + "/";
  std::vector<std::string> keys;
  for (int r = 0; r < size_; ++r) keys.push_back(base + std::to_string(r));
  store_->set(keys[size_t(rank_)], description);
  try {
    store_->wait(keys, timeout_);
  } catch (const RuntimeError&) {
    std::string missing;
    int n_missing = 0;
    for (int r = 0; r < size_; ++r) {
      if (store_->check({keys[size_t(r)]})) continue;
      missing += (n_missing++ ? ", " : "") + std::to_string(r);
    }
    throw RuntimeError(detail::concat(
        "GlooProcessGroup '", group_name_, "' rank ", rank_, ": collective #", seq, " ",
        description, ": rank", n_missing == 1 ? " " : "s ", missing,
        " did not arrive within ", timeout_.count(),
        " ms (debug fingerprint exchange). They may have died, be stuck before this "
        "collective, or have issued fewer collectives than this rank"));
  }
  std::vector<std::string> seen(static_cast<size_t>(size_));
  for (int r = 0; r < size_; ++r)
    seen[size_t(r)] = r == rank_ ? description : store_->get_string(keys[size_t(r)]);
  // Every rank has published #seq, hence finished reading #seq-1: our old key can go.
  if (seq > 1) {
    store_->delete_key(key_prefix(group_name_) + "/fp/" + std::to_string(seq - 1) + "/" +
                       std::to_string(rank_));
  }
  int differing = -1;
  for (int r = 1; r < size_ && differing < 0; ++r) {
    if (seen[size_t(r)] != seen[0]) differing = r;
  }
  if (differing < 0) return;
  std::ostringstream msg;
  msg << "collective #" << seq << " mismatch: rank 0 called " << seen[0] << " but rank "
      << differing << " called " << seen[size_t(differing)];
  if (size_ > 2) {
    msg << " (every rank:";
    for (int r = 0; r < size_; ++r) msg << (r ? "; " : " ") << r << ": " << seen[size_t(r)];
    msg << ")";
  }
  msg << ". All ranks must issue the same collectives in the same order (GlooProcessGroup '"
      << group_name_ << "', seen from rank " << rank_ << ")";
  throw RuntimeError(msg.str());
}

template <class T>
void GlooProcessGroup::reduce_native(T* data, int64_t numel, ReduceOp op, uint32_t tag) {
  if (shm_ && ShmAllReduce::supports(dtype_of<T>(), op)) {
    shm_->run(data, numel, dtype_of<T>(), op);  // applies avg itself
    return;
  }
  if (hierarchical_ && ShmAllReduce::supports(dtype_of<T>(), op)) {
    run_hierarchical_all_reduce(data, numel, dtype_of<T>(), op, tag);
    return;
  }
  gloo_all_reduce(context_, data, numel, op, tag, timeout_);
  if (op == ReduceOp::avg) divide_by(data, numel, size_);
}

void GlooProcessGroup::run_all_reduce(void* data, int64_t numel, DType dtype, ReduceOp op,
                                      uint32_t tag) {
  if (numel == 0) return;
  visit_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    T* p = static_cast<T*>(data);
    if constexpr (is_16bit_float<T>) {
      // Widen once, reduce in f32, round once: no per-hop rounding error.
      std::vector<float> scratch = widened(p, numel);
      reduce_native(scratch.data(), numel, op, tag);
      narrow_into(scratch, p);
    } else if constexpr (std::is_same_v<T, bool>) {
      // 0/1 bytes: or is max, and is min (a byte sum would make true + true a 2).
      gloo_all_reduce(context_, reinterpret_cast<uint8_t*>(p), numel,
                      op == ReduceOp::min ? ReduceOp::min : ReduceOp::max, tag, timeout_);
    } else if constexpr (std::is_same_v<T, uint8_t>) {
      gloo_all_reduce(context_, p, numel, op, tag, timeout_);
      if (op == ReduceOp::avg) divide_by(p, numel, size_);
    } else {
      reduce_native(p, numel, op, tag);
    }
  });
}

void GlooProcessGroup::run_broadcast(void* data, int64_t nbytes, int src, uint32_t tag) {
  if (nbytes == 0) return;
  if (shm_) {
    shm_->broadcast(data, nbytes, src);
    return;
  }
  if (hierarchical_) {
    run_hierarchical_broadcast(data, nbytes, src, tag);
    return;
  }
  gloo::BroadcastOptions opts(context_);
  opts.setOutput(static_cast<char*>(data), size_t(nbytes));
  opts.setRoot(src);
  opts.setTag(tag);
  opts.setTimeout(timeout_);
  gloo::broadcast(opts);
}

void GlooProcessGroup::run_all_gather(void* out, const void* in, int64_t nbytes, uint32_t tag) {
  if (nbytes == 0) return;
  if (shm_) {
    shm_->all_gather(out, in, nbytes);
    return;
  }
  if (hierarchical_) {
    run_hierarchical_all_gather(out, in, nbytes, tag);
    return;
  }
  gloo::AllgatherOptions opts(context_);
  opts.setInput(const_cast<char*>(static_cast<const char*>(in)), size_t(nbytes));
  opts.setOutput(static_cast<char*>(out), size_t(nbytes) * size_t(size_));
  opts.setTag(tag);
  opts.setTimeout(timeout_);
  gloo::allgather(opts);
}

void GlooProcessGroup::run_barrier(uint32_t tag) {
  gloo::BarrierOptions opts(context_);
  opts.setTag(tag);
  opts.setTimeout(timeout_);
  gloo::barrier(opts);
}

std::shared_ptr<Work> GlooProcessGroup::all_reduce_async(const Tensor& t, ReduceOp op) {
  check_tensor(t, "all_reduce", "the tensor");
  LOOM_VALUE_CHECK(!(t.dtype() == DType::bool_ && op == ReduceOp::avg),
                   "all_reduce: avg is not defined for bool tensors; use sum (logical or), "
                   "max or min");
  void* data = t.raw_data_ptr();  // materialise on the caller's thread
  t.storage()->bump_version();
  return enqueue(
      describe("all_reduce", t, reduce_op_name(op)),
      [this, t, data, op](uint32_t tag) { run_all_reduce(data, t.numel(), t.dtype(), op, tag); },
      reduces_in_shm(t.dtype(), op));
}

std::shared_ptr<Work> GlooProcessGroup::all_reduce_coalesced_async(
    const Tensor& output, const std::vector<Tensor>& parts, ReduceOp op) {
  if (!shm_ || !ShmAllReduce::supports(output.dtype(), op))
    return ProcessGroup::all_reduce_coalesced_async(output, parts, op);
  check_coalesced(output, parts);
  std::vector<ShmAllReduce::Segment> segments;
  for (const Tensor& p : parts) segments.push_back({p.raw_data_ptr(), p.numel()});
  void* out = output.raw_data_ptr();
  output.storage()->bump_version();
  return enqueue(describe("all_reduce", output, reduce_op_name(op)),
                 [this, output, parts, segments, out, op](uint32_t) {
                   shm_->run(segments.data(), segments.size(), out, output.numel(),
                             output.dtype(), op);
                 },
                 /*uses_shm=*/true);
}

std::shared_ptr<Work> GlooProcessGroup::broadcast_async(const Tensor& t, int src) {
  check_tensor(t, "broadcast", "the tensor");
  LOOM_VALUE_CHECK(src >= 0 && src < size_, "broadcast: src ", src, " is not a rank of this ",
                   size_, "-rank group (valid: 0..", size_ - 1, ")");
  void* data = t.raw_data_ptr();
  if (rank_ != src) t.storage()->bump_version();
  return enqueue(describe("broadcast", t, "src=" + std::to_string(src)),
                 [this, t, data, src](uint32_t tag) {
                   run_broadcast(data, int64_t(t.nbytes()), src, tag);
                 },
                 shm_ != nullptr);
}

std::shared_ptr<Work> GlooProcessGroup::all_gather_async(const Tensor& out, const Tensor& t) {
  check_tensor(t, "all_gather", "the input");
  check_tensor(out, "all_gather", "the output");
  Shape expected{int64_t(size_)};
  expected.insert(expected.end(), t.sizes().begin(), t.sizes().end());
  LOOM_VALUE_CHECK(out.sizes() == expected, "all_gather: the output has shape ",
                   shape_str(out.sizes()), " but a ", size_, "-rank gather of input ",
                   shape_str(t.sizes()), " needs (size, *input.shape) = ", shape_str(expected));
  LOOM_VALUE_CHECK(out.dtype() == t.dtype(), "all_gather: the output is ", out.dtype(),
                   " but the input is ", t.dtype(), "; they must match");
  LOOM_VALUE_CHECK(out.storage() != t.storage(),
                   "all_gather: the output and the input share storage; pass a separate output");
  const void* in = t.raw_data_ptr();
  void* dst = out.raw_data_ptr();
  out.storage()->bump_version();
  return enqueue(
      describe("all_gather", t, ""),
      [this, t, out, in, dst](uint32_t tag) { run_all_gather(dst, in, int64_t(t.nbytes()), tag); },
      shm_ != nullptr);
}

std::shared_ptr<Work> GlooProcessGroup::reduce_scatter_async(const Tensor& out,
                                                             const Tensor& input, ReduceOp op) {
  check_tensor(input, "reduce_scatter", "the input");
  check_tensor(out, "reduce_scatter", "the output");
  LOOM_VALUE_CHECK(input.dim() >= 1 && input.size(0) % size_ == 0,
                   "reduce_scatter: the input's dim 0 must split evenly over ", size_,
                   " ranks, got shape ", shape_str(input.sizes()));
  Shape expected = input.sizes();
  expected[0] /= size_;
  LOOM_VALUE_CHECK(out.sizes() == expected, "reduce_scatter: the output has shape ",
                   shape_str(out.sizes()), " but input ", shape_str(input.sizes()), " over ",
                   size_, " ranks gives blocks of shape ", shape_str(expected));
  LOOM_VALUE_CHECK(out.dtype() == input.dtype(), "reduce_scatter: the output is ", out.dtype(),
                   " but the input is ", input.dtype(), "; they must match");
  LOOM_VALUE_CHECK(!(input.dtype() == DType::bool_ && op == ReduceOp::avg),
                   "reduce_scatter: avg is not defined for bool tensors");
  const void* in = input.raw_data_ptr();
  void* dst = out.raw_data_ptr();
  out.storage()->bump_version();
  return enqueue(
      describe("reduce_scatter", input, reduce_op_name(op)),
      [this, input, out, in, dst, op](uint32_t tag) {
        run_reduce_scatter(in, dst, out.numel(), input.dtype(), op, tag);
      },
      reduces_in_shm(input.dtype(), op));
}

void GlooProcessGroup::run_reduce_scatter(const void* in, void* out, int64_t block, DType dtype,
                                          ReduceOp op, uint32_t tag) {
  if (block == 0) return;
  if (shm_) {
    if (ShmAllReduce::supports(dtype, op)) {
      shm_->reduce_scatter(in, out, block, dtype, op);
      return;
    }
    bool done = false;
    visit_dtype(dtype, [&](auto zero) {
      using T = decltype(zero);
      if constexpr (is_16bit_float<T>) {  // as all_reduce: widen once, reduce in f32, round once
        std::vector<float> wide = widened(static_cast<const T*>(in), block * size_);
        std::vector<float> reduced(static_cast<size_t>(block));
        shm_->reduce_scatter(wide.data(), reduced.data(), block, DType::f32, op);
        narrow_into(reduced, static_cast<T*>(out));
        done = true;
      }
    });
    if (done) return;
  }
  // Over TCP (across hosts, or LOOM_SHM=0): the direct exchange of dist/gloo_reduce_scatter.h.
  gloo_reduce_scatter(*context_, in, out, block, dtype, op, tag, timeout_);
}

std::shared_ptr<Work> GlooProcessGroup::barrier_async() {
  return enqueue("barrier()", [this](uint32_t tag) { run_barrier(tag); });
}

}  // namespace loom::dist
