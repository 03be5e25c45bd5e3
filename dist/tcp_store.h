// TCPStore: the rendezvous key-value store every rank of a job connects to (the role of
// PyTorch's TCPStore). Rank 0 hosts the server (TCPStoreServer, a background thread) and is
// also a client like the others; every other rank only connects.
//
// Ranks use it to exchange small blobs before any collective exists: Gloo's peer addresses,
// an NCCL unique id, barrier counters. Values are opaque bytes up to 64 MiB; keys are up to
// 4 KiB. It is not a general database (no persistence, no replication, no TLS or
// authentication: run it on a trusted network, as PyTorch's store is).
//
// Every blocking call ends by its deadline and throws loom::RuntimeError saying which key,
// how long it waited and what to check. Calls from several threads on one TCPStore are
// serialised (one connection, one request in flight), so a thread blocked in get() delays the
// others; use one TCPStore per thread if that matters.
//
// Note [Reserved keys]: keys starting with "__loom_store/" hold the store's own bookkeeping
// (the join counter of the world-size check). num_keys() does not count them; do not use the
// prefix for your own keys.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "dist/socket.h"
#include "dist/unique_fd.h"

namespace loom::dist {

class TCPStoreServer;

class TCPStore {
 public:
  using Bytes = std::vector<uint8_t>;
  // PyTorch's default as well: long enough for slow cluster start-up, short enough that a
  // missing rank ends the job within minutes instead of hanging.
  static constexpr std::chrono::milliseconds kDefaultTimeout = std::chrono::minutes(5);

  // host/port: where the server is (MASTER_ADDR / MASTER_PORT). is_server: this process hosts
  // it (port 0 then picks a free port; read it back with port()). world_size > 0 enables the
  // world-size check: every rank registers at construction and the rank that finds more
  // joiners than world_size throws "wrong world size"; world_size <= 0 skips it.
  // wait_for_workers: also block until world_size ranks have joined. timeout bounds
  // connecting and is the default for every blocking call.
  TCPStore(std::string host, int port, int world_size, bool is_server,
           std::chrono::milliseconds timeout = kDefaultTimeout, bool wait_for_workers = false);
  ~TCPStore();
  TCPStore(const TCPStore&) = delete;
  TCPStore& operator=(const TCPStore&) = delete;

  int port() const { return port_; }
  const std::string& host() const { return host_; }
  bool is_server() const { return server_ != nullptr; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  void set(const std::string& key, const Bytes& value);
  void set(const std::string& key, std::string_view value);
  // Blocks until `key` exists or timeout() passes.
  Bytes get(const std::string& key);
  std::string get_string(const std::string& key);
  // Blocks until every key exists or `timeout` passes.
  void wait(const std::vector<std::string>& keys);
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout);
  // Atomically adds `delta` to the integer counter at `key` (missing = 0); returns the result.
  int64_t add(const std::string& key, int64_t delta);
  // True when every key exists right now; never blocks on the keys.
  bool check(const std::vector<std::string>& keys);
  // True when the key existed.
  bool delete_key(const std::string& key);
  // Number of keys, not counting reserved ones (Note [Reserved keys]).
  int64_t num_keys();

 private:
  struct Reply;
  // Sends one request and returns its reply; reconnects first when an earlier call timed out.
  // On timeout or lost connection it closes the socket and throws, with `what` describing the
  // call for the message.
  // `budget` is the caller's timeout, quoted in the error message.
  Reply request(uint8_t op, const std::vector<std::string_view>& fields, Deadline deadline,
                std::chrono::milliseconds budget, const std::string& what);
  // Like request() on the current socket, without reconnecting.
  Reply exchange(uint8_t op, const std::vector<std::string_view>& fields, Deadline deadline,
                 std::chrono::milliseconds budget, const std::string& what);
  // Connects and says hello; throws when nothing answers or the answer is not a loom store.
  void connect(Deadline deadline);
  // Waits until `deadline`; `budget` is the timeout the caller asked for, quoted in errors.
  void wait_locked(const std::vector<std::string>& keys, Deadline deadline,
                   std::chrono::milliseconds budget);
  std::string endpoint() const;

  std::string host_;
  int port_ = 0;
  const std::chrono::milliseconds timeout_;
  std::unique_ptr<TCPStoreServer> server_;  // only on the hosting rank
  std::mutex mutex_;                        // one request in flight on sock_
  UniqueFd sock_;                           // invalid after a timeout until reconnected
};

// Blocks until `world_size` callers have reached the barrier named `key`, or throws
// loom::RuntimeError after `timeout` saying how many arrived. Reusable with the same key:
// each round of world_size arrivals is its own generation.
void store_barrier(TCPStore& store, const std::string& key, int world_size,
                   std::chrono::milliseconds timeout);

}  // namespace loom::dist
