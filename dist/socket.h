// TCP socket helpers shared by the rendezvous store's server and client: listen, connect with
// retry, and send/receive exactly N bytes before a deadline.
//
// This is not a general networking layer: IPv4 only (the store binds 0.0.0.0, clients resolve
// MASTER_ADDR to an IPv4 address), blocking-with-deadline semantics for clients, and
// non-blocking sockets for the server's poll loop. Every socket is opened close-on-exec so
// that processes started by the launcher never inherit them.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

#include "dist/unique_fd.h"

namespace loom::dist {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline deadline_after(std::chrono::milliseconds timeout) { return Clock::now() + timeout; }

// Milliseconds left until `deadline`, clamped to [0, INT_MAX] for poll().
int millis_until(Deadline deadline);

// Binds 0.0.0.0:`port` (0 = any free port) and listens; the socket is non-blocking.
// Throws loom::RuntimeError naming the port when it is taken, telling to choose another
// MASTER_PORT.
UniqueFd listen_tcp(int port);

// The local port a bound socket got (useful after binding port 0).
int bound_port(int fd);

// Connects to host:port, retrying refused/unreachable attempts with a growing back-off until
// `deadline` (the server may start after the client). Returns a blocking socket with
// TCP_NODELAY. Throws loom::RuntimeError naming host:port and the last error when it gives up.
UniqueFd connect_tcp(const std::string& host, int port, Deadline deadline);

enum class IoStatus { kOk, kTimeout, kClosed };

// Sends all `n` bytes, waiting with poll() so a stalled peer cannot block past `deadline`.
// Never raises SIGPIPE (a vanished peer is reported as kClosed).
IoStatus send_all(int fd, const void* data, std::size_t n, Deadline deadline);

// Receives exactly `n` bytes before `deadline`; kClosed when the peer closed or reset.
IoStatus recv_exact(int fd, void* data, std::size_t n, Deadline deadline);

// Asks the kernel for a currently free TCP port. Another process may take it before it is
// used (the usual race of this technique); callers that can bind port 0 directly should.
int find_free_port();

// The IPv4 address of this host's network interface `ifname` (e.g. "eth0"). Throws
// loom::ValueError naming the interfaces that have one when it has none.
std::string interface_address(const std::string& ifname);

// The local IPv4 address the kernel would send from to reach `host` (resolved as for
// connect_tcp): a UDP socket is connected to it, which only picks a route and sends nothing,
// and getsockname reads the source address. Throws loom::RuntimeError when `host` does not
// resolve or no route leads there.
std::string local_address_toward(const std::string& host);

// Writes all bytes to a blocking descriptor (pipe, file, terminal), retrying on EINTR and
// short writes. Returns false on any other error (e.g. the reader went away).
bool write_all(int fd, const char* data, std::size_t n);

}  // namespace loom::dist
