// TCPStoreServer: the key-value server behind TCPStore, run by rank 0 on a background thread.
//
// One thread, one poll() loop over the listening socket, every client connection and a wake
// pipe used to stop it. Why not a thread per client: a job can have thousands of ranks
// connected at once, and the store's work per request is tiny. Waits are served server-side:
// a client's WAIT is parked until its keys exist, so no client polls.
//
// Robustness contract: a client that sends a malformed, oversized or out-of-order frame is
// disconnected and forgotten; nothing a client sends can stop the server or make it throw.
// Destruction stops the loop and joins the thread without waiting on clients.
//
// This is not a replicated or persistent store: its data lives in rank 0's memory and dies
// with it. Users normally go through TCPStore, not this class.
#pragma once

#include <cstdint>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "dist/unique_fd.h"

namespace loom::dist {

class TCPStoreServer {
 public:
  // Binds 0.0.0.0:`port` (0 = any free port) and starts serving. Throws loom::RuntimeError
  // when the port is taken.
  explicit TCPStoreServer(int port);
  ~TCPStoreServer();
  TCPStoreServer(const TCPStoreServer&) = delete;
  TCPStoreServer& operator=(const TCPStoreServer&) = delete;

  int port() const { return port_; }

 private:
  struct Connection {
    UniqueFd fd;
    std::string in;          // received bytes not yet parsed
    std::size_t in_pos = 0;  // start of the first unparsed byte in `in`
    std::string out;         // bytes queued for sending
    std::size_t out_pos = 0;
    bool greeted = false;  // the hello frame was received
    int missing_keys = 0;  // > 0 while a WAIT is parked on this connection
    bool close_after_send = false;
  };

  void run();
  void accept_clients();
  // Reads what is available; false when the connection must be dropped.
  bool read_from(uint64_t id, Connection& conn);
  bool flush(Connection& conn);
  // Handles one complete request body; false on a protocol violation.
  bool handle(uint64_t id, Connection& conn, std::string_view body);
  void reply(Connection& conn, uint8_t status, const std::vector<std::string_view>& fields);
  // Called after `key` gains a value: releases WAITs that were missing only this key.
  void notify(const std::string& key);

  int port_ = 0;
  UniqueFd listen_fd_;
  UniqueFd wake_read_;  // the loop polls this; the destructor writes a byte to stop it
  UniqueFd wake_write_;
  std::unordered_map<uint64_t, Connection> connections_;  // keyed by a never-reused id
  uint64_t next_id_ = 0;
  std::unordered_map<std::string, std::string> data_;
  // key -> ids of connections whose parked WAIT includes that missing key. Entries of
  // connections that have gone are skipped when the key is notified.
  std::unordered_map<std::string, std::vector<uint64_t>> waiters_;
  std::thread thread_;
};

}  // namespace loom::dist
