// TCP socket helpers; see socket.h for what they promise.
#include "dist/socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace loom::dist {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

void set_nodelay(int fd) {
  int one = 1;
  // Best effort: the store sends small request/response frames, where Nagle only adds latency.
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Resolves `host` to an IPv4 address; numeric addresses avoid a DNS round trip.
bool resolve_ipv4(const std::string& host, int port, sockaddr_in& out, std::string& error) {
  std::memset(&out, 0, sizeof(out));
  out.sin_family = AF_INET;
  out.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &out.sin_addr) == 1) return true;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || found == nullptr) {
    error = rc != 0 ? ::gai_strerror(rc) : "no IPv4 address";
    return false;
  }
  out.sin_addr = reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr;
  ::freeaddrinfo(found);
  return true;
}

// One non-blocking connect attempt bounded by `deadline`; returns a connected socket or an
// invalid one with `error` set.
UniqueFd try_connect(const sockaddr_in& addr, Deadline deadline, std::string& error) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) {
    error = "socket(): " + errno_text(errno);
    return {};
  }
  int rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  if (rc != 0 && errno != EINPROGRESS) {
    error = errno_text(errno);
    return {};
  }
  if (rc != 0) {
    pollfd p{fd.get(), POLLOUT, 0};
    int ready;
    do {
      ready = ::poll(&p, 1, millis_until(deadline));
    } while (ready < 0 && errno == EINTR);
    if (ready <= 0) {
      error = "connection attempt timed out";
      return {};
    }
    int so_error = 0;
    socklen_t len = sizeof(so_error);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &len);
    if (so_error != 0) {
      error = errno_text(so_error);
      return {};
    }
  }
  // Clients use blocking sockets guarded by poll() deadlines; simpler than a state machine.
  int flags = ::fcntl(fd.get(), F_GETFL);
  ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  set_nodelay(fd.get());
  return fd;
}

// Waits until `fd` is ready for `events`; false on timeout.
bool wait_ready(int fd, short events, Deadline deadline) {
  pollfd p{fd, events, 0};
  for (;;) {
    int ready = ::poll(&p, 1, millis_until(deadline));
    if (ready > 0) return true;
    if (ready == 0) return false;
    if (errno != EINTR) return true;  // let the following I/O call report the error
  }
}

}  // namespace

int millis_until(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, INT_MAX));
}

UniqueFd listen_tcp(int port) {
  LOOM_VALUE_CHECK(port >= 0 && port <= 65535, "TCPStore: port ", port,
                   " is out of range; use 1..65535, or 0 to pick a free port");
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) throw RuntimeError("TCPStore: socket() failed: " + errno_text(errno));
  // SO_REUSEADDR lets a restarted job rebind a port still in TIME_WAIT from the previous run;
  // on Linux it does not allow two live listeners, so "port in use" is still detected.
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    if (err == EADDRINUSE) {
      throw RuntimeError(detail::concat(
          "TCPStore: port ", port,
          " is already in use on this machine (another job or a "
          "leftover process holds it); choose another MASTER_PORT (or --master-port), or stop "
          "the process using it"));
    }
    throw RuntimeError(detail::concat("TCPStore: cannot bind port ", port, ": ", errno_text(err)));
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) {
    throw RuntimeError(
        detail::concat("TCPStore: listen() on port ", port, " failed: ", errno_text(errno)));
  }
  return fd;
}

int bound_port(int fd) {
  sockaddr_in addr{};
  socklen_t len = sizeof(addr);
  LOOM_CHECK(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0,
             "getsockname: ", errno_text(errno));
  return ntohs(addr.sin_port);
}

UniqueFd connect_tcp(const std::string& host, int port, Deadline deadline) {
  LOOM_VALUE_CHECK(port > 0 && port <= 65535, "TCPStore: cannot connect to ", host, ":", port,
                   ": the port must be in 1..65535 (check MASTER_PORT)");
  std::string error;
  auto backoff = std::chrono::milliseconds(10);
  for (;;) {
    sockaddr_in addr{};
    if (resolve_ipv4(host, port, addr, error)) {
      UniqueFd fd = try_connect(addr, deadline, error);
      if (fd.valid()) return fd;
    }
    if (Clock::now() + backoff >= deadline) break;
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
  }
  throw RuntimeError(
      detail::concat("TCPStore: could not connect to the store at ", host, ":", port,
                     " before the timeout (", "last error: ", error,
                     "); check MASTER_ADDR and MASTER_PORT, that rank 0 is running, and "
                     "that the port is reachable from this machine"));
}

IoStatus send_all(int fd, const void* data, std::size_t n, Deadline deadline) {
  auto* bytes = static_cast<const char*>(data);
  while (n > 0) {
    if (!wait_ready(fd, POLLOUT, deadline)) return IoStatus::kTimeout;
    ssize_t sent = ::send(fd, bytes, n, MSG_NOSIGNAL);
    if (sent < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return IoStatus::kClosed;
    }
    bytes += sent;
    n -= static_cast<std::size_t>(sent);
  }
  return IoStatus::kOk;
}

IoStatus recv_exact(int fd, void* data, std::size_t n, Deadline deadline) {
  auto* bytes = static_cast<char*>(data);
  while (n > 0) {
    if (!wait_ready(fd, POLLIN, deadline)) return IoStatus::kTimeout;
    ssize_t got = ::recv(fd, bytes, n, 0);
    if (got == 0) return IoStatus::kClosed;
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return IoStatus::kClosed;
    }
    bytes += got;
    n -= static_cast<std::size_t>(got);
  }
  return IoStatus::kOk;
}

int find_free_port() {
  UniqueFd fd = listen_tcp(0);
  return bound_port(fd.get());
}

bool write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t written = ::write(fd, data, n);
    if (written < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pollfd p{fd, POLLOUT, 0};
        ::poll(&p, 1, 100);
        continue;
      }
      return false;
    }
    data += written;
    n -= static_cast<std::size_t>(written);
  }
  return true;
}

std::string interface_address(const std::string& ifname) {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0)
    throw RuntimeError("getifaddrs failed: " + errno_text(errno));
  std::string found, available;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr, text,
                sizeof text);
    if (found.empty() && ifname == a->ifa_name) found = text;
    available += std::string(available.empty() ? "" : ", ") + a->ifa_name + " (" + text + ")";
  }
  ::freeifaddrs(list);
  LOOM_VALUE_CHECK(!found.empty(), "network interface '", ifname,
                   "' has no IPv4 address on this host; interfaces with one: ",
                   available.empty() ? std::string("none") : available);
  return found;
}

std::string local_address_toward(const std::string& host) {
  sockaddr_in remote{};
  std::string error;
  if (!resolve_ipv4(host, 9, remote, error))  // any port: nothing is sent
    throw RuntimeError("cannot resolve '" + host + "': " + error);
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) throw RuntimeError("socket(): " + errno_text(errno));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&remote), sizeof remote) != 0)
    throw RuntimeError("no route from this host to '" + host + "': " + errno_text(errno));
  sockaddr_in local{};
  socklen_t len = sizeof local;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &len) != 0)
    throw RuntimeError("getsockname(): " + errno_text(errno));
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &local.sin_addr, text, sizeof text);
  return text;
}

}  // namespace loom::dist
