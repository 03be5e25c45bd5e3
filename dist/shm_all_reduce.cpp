// ShmAllReduce: segment setup, the chunked reduction and the cross-process barrier; see the
// header for the protocol and the layout.
#include "dist/shm_all_reduce.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <new>
#include <random>
#include <sstream>
#include <type_traits>
#include <vector>

#include "dist/elementwise_reduce.h"
#include "dist/reduce_op.h"
#include "core/error.h"

namespace loom::dist {

namespace {

constexpr size_t kCacheLine = 64;
constexpr size_t kPage = 4096;
constexpr uint64_t kMagic = 0x6c6f6f6d2d73686dULL;  // "loom-shm"

static_assert(std::atomic<uint32_t>::is_always_lock_free && sizeof(std::atomic<uint32_t>) == 4,
              "the futex word must be a plain lock-free 32-bit atomic");
static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "cross-process atomics must be lock-free (no hidden process-local lock)");

size_t round_up(size_t n, size_t multiple) { return (n + multiple - 1) / multiple * multiple; }

std::string ranks_str(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

// What /proc says about a process: whether it is running (not gone, not a zombie) and when it
// started (clock ticks after boot), which tells a reused pid from the original process.
struct ProcessInfo {
  bool running = false;
  uint64_t start_ticks = 0;
};

ProcessInfo process_info(const std::string& stat_path) {
  std::ifstream in(stat_path);
  std::string line;
  if (!in || !std::getline(in, line)) return {};
  // "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so parse after the last
  // ')'. Field 3 is the state, field 22 the start time.
  const size_t close = line.rfind(')');
  if (close == std::string::npos) return {};
  std::istringstream fields(line.substr(close + 1));
  std::string state, skip;
  fields >> state;
  for (int f = 4; f < 22; ++f) fields >> skip;
  ProcessInfo info;
  fields >> info.start_ticks;
  if (!fields) return {};
  info.running = !(state == "Z" || state == "X" || state == "x");
  return info;
}

long futex(std::atomic<uint32_t>* word, int op, uint32_t value, const timespec* timeout) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, value, timeout, nullptr, 0);
}

void cpu_relax() { __builtin_ia32_pause(); }

// out = fold of op over srcs[0..n_src) in order; out is private memory, srcs are slots, so
// the restrict pointers hold and both loops compile to packed SIMD.
template <class T, class Op>
void reduce_into(T* __restrict out, const T* const* srcs, int n_src, int64_t n, Op op) {
  const T* __restrict a = srcs[0];
  const T* __restrict b = srcs[1];
  for (int64_t i = 0; i < n; ++i) out[i] = op(a[i], b[i]);
  for (int s = 2; s < n_src; ++s) {
    const T* __restrict c = srcs[s];
    for (int64_t i = 0; i < n; ++i) out[i] = op(out[i], c[i]);
  }
}

// Calls fn(T{}) for the dtypes the reductions take (supports()); nothing for the others.
template <class Fn>
void visit_reduced_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::f32: return fn(float{});
    case DType::f64: return fn(double{});
    case DType::i64: return fn(int64_t{});
    case DType::i32: return fn(int32_t{});
    default: return;
  }
}

// reduce_into with op's combination; avg is the sum, then divided by n_src as divide_by does.
template <class T>
void reduce_by_op(T* out, const T* const* srcs, int n_src, int64_t n, ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::avg:
      reduce_into(out, srcs, n_src, n, Sum<T>{});
      break;
    case ReduceOp::max:
      reduce_into(out, srcs, n_src, n, Max<T>{});
      break;
    case ReduceOp::min:
      reduce_into(out, srcs, n_src, n, Min<T>{});
      break;
  }
  if (op == ReduceOp::avg) divide_by(out, n, n_src);
}

}  // namespace

// Shared control block at offset 0 of the segment. Counter and futex word sit on separate
// cache lines: every arrival writes the counter, every waiter polls the generation.
struct ShmAllReduce::Control {
  uint64_t magic;
  std::atomic<uint64_t> token;  // written last by rank 0: a reader seeing it sees the rest
  uint32_t size;
  uint32_t slot_bytes;
  alignas(kCacheLine) std::atomic<uint32_t> count;       // arrivals at the current barrier
  alignas(kCacheLine) std::atomic<uint32_t> generation;  // futex word: completed barriers
  std::atomic<uint32_t> sleepers;                        // ranks inside FUTEX_WAIT
};

// Cache lines of one rank, written only by that rank.
struct alignas(kCacheLine) ShmAllReduce::PeerState {
  std::atomic<uint64_t> arrived;  // barriers entered, for the timeout message
  // The call in progress, indexed by call parity: a rank that finished call c may write
  // call c + 1's while a slower one still reads call c's (Note in check_same_call).
  struct Call {
    int64_t numel;
    uint8_t dtype;
    uint32_t op;   // a ReduceOp, or kBroadcastOpBase + root
    uint64_t seq;  // the caller's sequence number of the call (set_call), 0 if none
    char what[kCallTextBytes];  // the caller's description of the call, NUL-terminated
  } call[2];
  int32_t pid;
  uint64_t start_ticks;  // ProcessInfo::start_ticks of this rank, 0 if unknown
};

// An mmap'ed range, unmapped on destruction. Unmapping does not affect the other processes.
class ShmAllReduce::Mapping {
 public:
  Mapping(void* base, size_t bytes) : base_(base), bytes_(bytes) {}
  ~Mapping() { munmap(base_, bytes_); }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  unsigned char* base() const { return static_cast<unsigned char*>(base_); }

 private:
  void* base_;
  size_t bytes_;
};

size_t ShmAllReduce::header_bytes(int size) {
  return round_up(sizeof(Control) + sizeof(PeerState) * size_t(size), kPage);
}

size_t ShmAllReduce::segment_bytes(int size) {
  return header_bytes(size) + 2 * size_t(size) * kSlotBytes;
}

ShmAllReduce::Control& ShmAllReduce::control() const {
  return *reinterpret_cast<Control*>(mapping_->base());
}

ShmAllReduce::PeerState& ShmAllReduce::peer(int r) const {
  return reinterpret_cast<PeerState*>(mapping_->base() + sizeof(Control))[r];
}

unsigned char* ShmAllReduce::slot(int set, int r) const {
  return mapping_->base() + header_bytes(size_) +
         (size_t(set) * size_t(size_) + size_t(r)) * kSlotBytes;
}

namespace {

std::string errno_str(int err) { return std::strerror(err); }

// Maps `fd` (segment_bytes long) shared, pages populated up front.
void* map_segment(int fd, size_t bytes, std::string& why_not) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) {
    why_not = "mmap of " + std::to_string(bytes) + " bytes failed: " + errno_str(errno);
    return nullptr;
  }
  return p;
}

uint64_t random_u64() {
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ uint64_t(rd());
}

}  // namespace

std::unique_ptr<ShmAllReduce> ShmAllReduce::try_create(int rank, int size, TCPStore& store,
                                                       const std::string& key_prefix,
                                                       std::chrono::milliseconds timeout,
                                                       bool wanted, std::string* why_not) {
  if (size <= 1) {
    if (why_not) *why_not = "a 1-rank group has nothing to reduce";
    return nullptr;
  }
  static_assert(sizeof(Control) % kCacheLine == 0 && sizeof(PeerState) % kCacheLine == 0,
                "PeerStates follow Control, each on cache lines of its own");
  const size_t bytes = segment_bytes(size);
  const std::string segment_key = key_prefix + "/segment";
  std::string reason;  // empty while this rank is fine
  std::string name;
  uint64_t token = 0;
  std::unique_ptr<Mapping> mapping;

  // Rank 0 unlinks the name on every way out of this function, exceptions included, once the
  // others are done opening it (after the status exchange) or have failed.
  struct Unlinker {
    std::string name;
    ~Unlinker() {
      if (!name.empty()) shm_unlink(name.c_str());
    }
  } unlinker;

  if (rank == 0) {
    if (!wanted) reason = "disabled on rank 0 (shared_memory = false or LOOM_SHM=0)";
    if (reason.empty()) {
      name = "/loom-" + std::to_string(getpid()) + "-" + std::to_string(random_u64());
      const int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
      if (fd < 0) {
        reason = "shm_open(" + name + ") failed: " + errno_str(errno);
      } else {
        unlinker.name = name;
        // posix_fallocate returns the error; it reserves every page now, so a /dev/shm too
        // small for the segment fails here instead of SIGBUS on first touch.
        int err = ftruncate(fd, off_t(bytes)) != 0 ? errno : posix_fallocate(fd, 0, off_t(bytes));
        if (err != 0) {
          reason = "reserving " + std::to_string(bytes) +
                   " bytes in /dev/shm failed: " + errno_str(err) +
                   " (is /dev/shm too small? docker: --shm-size)";
        } else if (void* p = map_segment(fd, bytes, reason)) {
          mapping = std::make_unique<Mapping>(p, bytes);
          auto* c = new (p) Control{};
          c->magic = kMagic;
          c->size = uint32_t(size);
          c->slot_bytes = uint32_t(kSlotBytes);
          token = random_u64() | 1;  // never 0, the value of a fresh segment
          c->token.store(token, std::memory_order_release);
        }
        close(fd);
      }
    }
    store.set(segment_key,
              reason.empty() ? "ok " + name + " " + std::to_string(token) : "fail " + reason);
  } else {
    store.wait({segment_key}, timeout);
    std::istringstream published(store.get_string(segment_key));
    std::string verdict;
    published >> verdict;
    if (verdict != "ok") {
      reason = "rank 0 could not create the segment";
    } else if (!wanted) {
      reason =
          "disabled on rank " + std::to_string(rank) + " (shared_memory = false or LOOM_SHM=0)";
    } else {
      published >> name >> token;
      const int fd = shm_open(name.c_str(), O_RDWR, 0);
      struct stat st {};
      if (fd < 0) {
        reason = "shm_open(" + name + ") failed: " + errno_str(errno) +
                 " (rank 0 is on another host or /dev/shm)";
      } else if (fstat(fd, &st) != 0 || size_t(st.st_size) != bytes) {
        reason = name + " is not the expected " + std::to_string(bytes) + " bytes";
      } else if (void* p = map_segment(fd, bytes, reason)) {
        mapping = std::make_unique<Mapping>(p, bytes);
        const auto* c = static_cast<const Control*>(p);
        if (c->token.load(std::memory_order_acquire) != token || c->magic != kMagic ||
            c->size != uint32_t(size) || c->slot_bytes != uint32_t(kSlotBytes)) {
          reason = name + " holds another segment (token mismatch: another host's /dev/shm?)";
        }
      }
      if (fd >= 0) close(fd);
    }
  }

  std::unique_ptr<ShmAllReduce> self;
  if (reason.empty()) {
    self.reset(new ShmAllReduce(rank, size, std::move(mapping), name, timeout));
    PeerState& me = self->peer(rank);
    me.pid = int32_t(getpid());
    me.start_ticks = process_info("/proc/self/stat").start_ticks;
  }

  // Every rank learns every rank's outcome and so decides the same.
  std::vector<std::string> keys;
  for (int r = 0; r < size; ++r) keys.push_back(key_prefix + "/status/" + std::to_string(r));
  store.set(keys[size_t(rank)], reason.empty() ? std::string("ok") : reason);
  store.wait(keys, timeout);
  std::string first_failure;
  for (int r = 0; r < size && first_failure.empty(); ++r) {
    std::string status =
        r == rank ? (reason.empty() ? "ok" : reason) : store.get_string(keys[size_t(r)]);
    if (status != "ok") first_failure = "rank " + std::to_string(r) + ": " + status;
  }
  if (!first_failure.empty()) {
    if (why_not) *why_not = first_failure;
    return nullptr;
  }
  // A peer's pid is watched only when /proc shows the very process that wrote it (same pid
  // namespace, same start time); the others are covered by the timeout alone.
  self->watched_.assign(size_t(size), false);
  for (int r = 0; r < size; ++r) {
    const PeerState& p = self->peer(r);
    self->watched_[size_t(r)] =
        r != rank && p.start_ticks != 0 &&
        process_info("/proc/" + std::to_string(p.pid) + "/stat").start_ticks == p.start_ticks;
  }
  return self;
}

ShmAllReduce::ShmAllReduce(int rank, int size, std::unique_ptr<Mapping> mapping, std::string name,
                           std::chrono::milliseconds timeout)
    : rank_(rank),
      size_(size),
      mapping_(std::move(mapping)),
      name_(std::move(name)),
      timeout_(timeout) {}

ShmAllReduce::~ShmAllReduce() = default;

bool ShmAllReduce::supports(DType dtype, ReduceOp op) {
  const bool dtype_ok =
      dtype == DType::f32 || dtype == DType::f64 || dtype == DType::i64 || dtype == DType::i32;
  return dtype_ok &&
         (op == ReduceOp::sum || op == ReduceOp::avg || op == ReduceOp::max || op == ReduceOp::min);
}

void ShmAllReduce::run(void* data, int64_t numel, DType dtype, ReduceOp op) {
  const Segment whole{data, numel};
  run(&whole, 1, data, numel, dtype, op);
}

void ShmAllReduce::run(const Segment* parts, size_t n_parts, void* out, int64_t numel,
                       DType dtype, ReduceOp op) {
  LOOM_CHECK(supports(dtype, op), "ShmAllReduce::run: ", dtype_name(dtype), " ", reduce_op_name(op),
             " is not supported; check supports() first");
  if (numel == 0) return;
  visit_reduced_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    run_typed(parts, n_parts, static_cast<T*>(out), numel, op);
  });
}

template <class T>
void ShmAllReduce::run_typed(const Segment* parts, size_t n_parts, T* data, int64_t numel,
                             ReduceOp op) {
  begin_call(numel, dtype_of<T>(), uint32_t(op));

  constexpr int64_t kChunk = int64_t(kSlotBytes / sizeof(T));
  // Parts start on cache-line boundaries: ranks writing neighbouring parts of the outputs
  // never share a line in the slots, and each part's loop starts aligned.
  constexpr int64_t kAlign = int64_t(kCacheLine / sizeof(T));
  std::vector<const T*> src(
      static_cast<size_t>(size_));  // every rank's slot, from the part's start
  // The input is read in order, chunk by chunk: the segment and the offset in it where the
  // next chunk starts. A segment aliasing `data` at its own offset is read here, in step 1,
  // before steps 2 and 3 of the same chunk overwrite it.
  size_t seg = 0;
  int64_t seg_off = 0;
  auto gather_input = [&](T* dst, int64_t n) {
    while (n > 0) {
      LOOM_CHECK(seg < n_parts, "ShmAllReduce: the parts hold fewer elements than numel");
      const int64_t take = std::min(n, parts[seg].numel - seg_off);
      if (take > 0)  // an empty part may have no data pointer at all
        std::memcpy(dst, static_cast<const T*>(parts[seg].data) + seg_off, size_t(take) * sizeof(T));
      dst += take, n -= take, seg_off += take;
      if (seg_off == parts[seg].numel) ++seg, seg_off = 0;
    }
  };
  for (int64_t off = 0; off < numel; off += kChunk) {
    const int64_t n = std::min(kChunk, numel - off);
    const int set = int(chunks_ & 1);
    // 1. our chunk into our slot.
    gather_input(reinterpret_cast<T*>(slot(set, rank_)), n);
    barrier();
    if (off == 0) check_same_call();
    // 2. reduce our part, in rank order, into our output; publish it in our slot.
    const int64_t part = int64_t(round_up(size_t((n + size_ - 1) / size_), size_t(kAlign)));
    auto part_range = [&](int r) {
      const int64_t lo = std::min(n, part * r);
      return std::pair<int64_t, int64_t>{lo, std::min(n, lo + part)};
    };
    const auto [lo, hi] = part_range(rank_);
    if (hi > lo) {
      for (int r = 0; r < size_; ++r)
        src[size_t(r)] = reinterpret_cast<const T*>(slot(set, r)) + lo;
      T* out = data + off + lo;
      reduce_by_op(out, src.data(), size_, hi - lo, op);
      std::memcpy(reinterpret_cast<T*>(slot(set, rank_)) + lo, out, size_t(hi - lo) * sizeof(T));
    }
    barrier();
    // 3. everyone else's parts.
    for (int r = 0; r < size_; ++r) {
      const auto [plo, phi] = part_range(r);
      if (r == rank_ || phi <= plo) continue;
      std::memcpy(data + off + plo, reinterpret_cast<const T*>(slot(set, r)) + plo,
                  size_t(phi - plo) * sizeof(T));
    }
    ++chunks_;
  }
}

void ShmAllReduce::broadcast(void* data, int64_t nbytes, int root) {
  LOOM_CHECK(root >= 0 && root < size_, "ShmAllReduce::broadcast: root ", root, " out of range");
  if (nbytes == 0) return;
  begin_call(nbytes, DType::u8, uint32_t(kBroadcastOpBase + root));
  // One barrier per chunk: root fills its slot of set k, everyone else copies it out. Root
  // writes set k again two chunks later, after the next chunk's barrier, which the others
  // reach only once done reading (the same argument as all_reduce's two slot sets).
  auto* bytes = static_cast<unsigned char*>(data);
  for (int64_t off = 0; off < nbytes; off += int64_t(kSlotBytes)) {
    const size_t n = size_t(std::min<int64_t>(int64_t(kSlotBytes), nbytes - off));
    const int set = int(chunks_ & 1);
    if (rank_ == root) std::memcpy(slot(set, root), bytes + off, n);
    barrier();
    if (off == 0) check_same_call();
    if (rank_ != root) std::memcpy(bytes + off, slot(set, root), n);
    ++chunks_;
  }
}

void ShmAllReduce::all_gather(void* out, const void* in, int64_t nbytes) {
  if (nbytes == 0) return;
  begin_call(nbytes, DType::u8, uint32_t(kAllGatherOp));
  // One barrier per chunk, as in broadcast: a rank writes set k again two chunks later,
  // after the next chunk's barrier, which every rank reaches only once done reading set k.
  auto* dst = static_cast<unsigned char*>(out);
  const auto* src = static_cast<const unsigned char*>(in);
  for (int64_t off = 0; off < nbytes; off += int64_t(kSlotBytes)) {
    const size_t n = size_t(std::min<int64_t>(int64_t(kSlotBytes), nbytes - off));
    const int set = int(chunks_ & 1);
    std::memcpy(slot(set, rank_), src + off, n);
    barrier();
    if (off == 0) check_same_call();
    for (int r = 0; r < size_; ++r) std::memcpy(dst + r * nbytes + off, slot(set, r), n);
    ++chunks_;
  }
}

void ShmAllReduce::reduce_scatter(const void* in, void* out, int64_t block, DType dtype,
                                  ReduceOp op) {
  LOOM_CHECK(supports(dtype, op), "ShmAllReduce::reduce_scatter: unsupported ", dtype, " ",
             reduce_op_name(op));
  if (block == 0) return;
  visit_reduced_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    reduce_scatter_typed(static_cast<const T*>(in), static_cast<T*>(out), block, op);
  });
}

template <class T>
void ShmAllReduce::reduce_scatter_typed(const T* in, T* out, int64_t block, ReduceOp op) {
  begin_call(block, dtype_of<T>(), uint32_t(kReduceScatterOpBase + int(op)));
  // A slot holds one slice per destination rank, each `per` elements and cache-line aligned.
  constexpr int64_t kAlign = int64_t(kCacheLine / sizeof(T));
  const int64_t per = int64_t(kSlotBytes / sizeof(T)) / size_ / kAlign * kAlign;
  std::vector<const T*> src(static_cast<size_t>(size_));
  for (int64_t off = 0; off < block; off += per) {
    const int64_t n = std::min(per, block - off);
    const int set = int(chunks_ & 1);
    // Our slices of every rank's block; `in`'s own block is read before `out` is written.
    T* mine = reinterpret_cast<T*>(slot(set, rank_));
    for (int p = 0; p < size_; ++p)
      std::memcpy(mine + p * per, in + p * block + off, size_t(n) * sizeof(T));
    barrier();
    if (off == 0) check_same_call();
    for (int r = 0; r < size_; ++r)
      src[size_t(r)] = reinterpret_cast<const T*>(slot(set, r)) + rank_ * per;
    reduce_by_op(out + off, src.data(), size_, n, op);
    // One barrier per chunk: set k is written again two chunks later, after the next
    // chunk's barrier, which every rank reaches only once done reading set k here.
    ++chunks_;
  }
}

void ShmAllReduce::set_call(uint64_t seq, const std::string& description) {
  next_seq_ = seq;
  next_what_ = description.substr(0, kCallTextBytes - 1);
}

void ShmAllReduce::check_call(uint64_t seq, const std::string& description) {
  set_call(seq, description);
  begin_call(0, DType::u8, uint32_t(kCheckOnlyOp));
  barrier();
  check_same_call();
}

void ShmAllReduce::begin_call(int64_t numel, DType dtype, uint32_t op) {
  PeerState::Call& mine = peer(rank_).call[calls_ & 1];
  ++calls_;
  mine.numel = numel;
  mine.dtype = uint8_t(dtype);
  mine.op = op;
  mine.seq = next_seq_;
  std::memset(mine.what, 0, sizeof mine.what);
  std::memcpy(mine.what, next_what_.data(), next_what_.size());
  // One description per call: a later call without set_call does not reuse it.
  next_seq_ = 0;
  next_what_.clear();
}

namespace {
// What a call record says, for the mismatch message (the caller's description when it gave
// one, else the record's fields).
std::string call_str(int64_t numel, uint8_t dtype, uint32_t op, const char* what,
                     int broadcast_base, int reduce_scatter_base, int all_gather_op) {
  if (what[0] != '\0') return std::string(what);
  std::ostringstream s;
  if (op >= uint32_t(broadcast_base))
    s << "broadcast of " << numel << " bytes from rank " << (op - uint32_t(broadcast_base));
  else if (op >= uint32_t(reduce_scatter_base))
    s << "reduce_scatter " << dtype_name(DType(dtype)) << " x " << numel << " per rank "
      << reduce_op_name(ReduceOp(op - uint32_t(reduce_scatter_base)));
  else if (op == uint32_t(all_gather_op))
    s << "all_gather of " << numel << " bytes per rank";
  else
    s << "all_reduce " << dtype_name(DType(dtype)) << " x " << numel << " "
      << reduce_op_name(ReduceOp(op));
  return s.str();
}
}  // namespace

void ShmAllReduce::check_same_call() const {
  // Note: call[parity] of every rank is stable here. A rank writes call[parity] again two
  // calls later, after barrier 1 of the next call, which needs this rank to get there.
  const int parity = int((calls_ - 1) & 1);
  const PeerState::Call& first = peer(0).call[parity];
  auto same_as_first = [&](const PeerState::Call& c) {
    return c.numel == first.numel && c.dtype == first.dtype && c.op == first.op &&
           c.seq == first.seq && std::strncmp(c.what, first.what, sizeof c.what) == 0;
  };
  int differing = -1;
  for (int r = 1; r < size_ && differing < 0; ++r) {
    if (!same_as_first(peer(r).call[parity])) differing = r;
  }
  if (differing < 0) return;
  auto str = [&](const PeerState::Call& c) {
    return call_str(c.numel, c.dtype, c.op, c.what, kBroadcastOpBase, kReduceScatterOpBase,
                    kAllGatherOp);
  };
  std::ostringstream msg;
  const PeerState::Call& mine = peer(rank_).call[parity];
  if (mine.seq != 0) {
    // Described calls (GlooProcessGroup): name rank 0's and the first differing rank's.
    const PeerState::Call& other = peer(differing).call[parity];
    msg << "shared-memory collectives: collective #" << mine.seq << " mismatch (seen from rank "
        << rank_ << "): rank 0 called " << str(first);
    if (first.seq != mine.seq) msg << " (its collective #" << first.seq << ")";
    msg << " but rank " << differing << " called " << str(other);
    if (other.seq != mine.seq) msg << " (its collective #" << other.seq << ")";
    if (size_ > 2) {
      msg << " (every rank:";
      for (int r = 0; r < size_; ++r) msg << (r ? "; " : " ") << r << ": " << str(peer(r).call[parity]);
      msg << ")";
    }
    msg << ". All ranks must issue the same collectives, with the same sizes, dtypes and ops, "
           "in the same order (a rank may have skipped or added one)";
    throw CallMismatch(msg.str());
  }
  msg << "shared-memory collectives: the ranks called different collectives:";
  for (int r = 0; r < size_; ++r) msg << (r ? ";" : "") << " rank " << r << ": " << str(peer(r).call[parity]);
  msg << ". Every rank must issue the same collectives with the same sizes, dtypes and ops";
  throw CallMismatch(msg.str());
}

void ShmAllReduce::barrier() {
  Control& c = control();
  ++barriers_;
  peer(rank_).arrived.store(barriers_, std::memory_order_relaxed);
  // Read before arriving: the generation cannot move until this rank has arrived.
  const uint32_t gen = c.generation.load(std::memory_order_acquire);
  // acq_rel: releases this rank's slot writes to the last arriver, which acquires them all
  // (the counter's increments form one release sequence) and releases them on.
  if (c.count.fetch_add(1, std::memory_order_acq_rel) + 1 == uint32_t(size_)) {
    c.count.store(0, std::memory_order_relaxed);
    // seq_cst on both sides of the sleepers handshake: either a sleeper's FUTEX_WAIT sees
    // the new generation, or this load sees the sleeper.
    c.generation.fetch_add(1, std::memory_order_seq_cst);
    if (c.sleepers.load(std::memory_order_seq_cst) != 0)
      futex(&c.generation, FUTEX_WAKE, INT_MAX, nullptr);
    return;
  }
  for (int i = 0; i < kSpinIterations; ++i) {
    if (c.generation.load(std::memory_order_acquire) != gen) return;
    cpu_relax();
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  c.sleepers.fetch_add(1, std::memory_order_seq_cst);
  struct Leave {
    std::atomic<uint32_t>& sleepers;
    ~Leave() { sleepers.fetch_sub(1, std::memory_order_seq_cst); }
  } leave{c.sleepers};
  const timespec slice{0, long(std::chrono::nanoseconds(kWaitSlice).count())};
  while (c.generation.load(std::memory_order_acquire) == gen) {
    // Returns on a wake, a generation already moved (EAGAIN), a signal or the slice's end.
    futex(&c.generation, FUTEX_WAIT, gen, &slice);
    if (c.generation.load(std::memory_order_acquire) != gen) return;
    check_missing_alive();
    if (std::chrono::steady_clock::now() > deadline)
      fail_waiting(missing_ranks(),
                   "did not arrive within " + std::to_string(timeout_.count()) + " ms");
  }
}

std::vector<int> ShmAllReduce::missing_ranks() const {
  std::vector<int> missing;
  for (int r = 0; r < size_; ++r) {
    if (peer(r).arrived.load(std::memory_order_relaxed) < barriers_) missing.push_back(r);
  }
  return missing;
}

void ShmAllReduce::check_missing_alive() const {
  std::vector<int> dead;
  std::string pids;
  for (int r : missing_ranks()) {
    const PeerState& p = peer(r);
    if (!watched_[size_t(r)]) continue;
    const ProcessInfo info = process_info("/proc/" + std::to_string(p.pid) + "/stat");
    // Gone, a zombie, or the pid reused by a newer process.
    if (!info.running || info.start_ticks != p.start_ticks) {
      dead.push_back(r);
      pids += (pids.empty() ? "" : ", ") + std::to_string(p.pid);
    }
  }
  if (!dead.empty()) fail_waiting(dead, "exited (pid " + pids + ") before reaching this barrier");
}

void ShmAllReduce::fail_waiting(const std::vector<int>& ranks, const std::string& why) const {
  const std::string who = ranks_str(ranks);
  throw RuntimeError(detail::concat(
      "shared-memory collective (", size_, " ranks on this host): ", who, " ", why, " (barrier #",
      barriers_, " of this group, timeout ", timeout_.count(), " ms). Check the output of ", who,
      ": it may have died, be stuck before this collective, or have called another one"));
}

}  // namespace loom::dist
