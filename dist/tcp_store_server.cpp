// The store's poll()-based server loop; see tcp_store_server.h for the contract.
#include "dist/tcp_store_server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <unordered_set>

#include "dist/socket.h"
#include "dist/store_protocol.h"
#include "core/error.h"

namespace loom::dist {
namespace {

using protocol::Op;
using protocol::Status;

constexpr std::size_t kReadChunk = 64 * 1024;

// Counters are stored as decimal text (not 8 raw bytes) so that get() on a counter key returns
// something a human can read in a debugger or log; the same choice PyTorch's store makes.
std::optional<int64_t> parse_counter(const std::string& text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

TCPStoreServer::TCPStoreServer(int port) {
  listen_fd_ = listen_tcp(port);
  port_ = bound_port(listen_fd_.get());
  int pipe_fds[2];
  LOOM_CHECK(::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) == 0, "pipe2: ", std::strerror(errno));
  wake_read_.reset(pipe_fds[0]);
  wake_write_.reset(pipe_fds[1]);
  thread_ = std::thread([this] { run(); });
}

TCPStoreServer::~TCPStoreServer() {
  char byte = 1;
  // If the pipe is somehow full the loop is already awake; either way it sees the byte.
  [[maybe_unused]] ssize_t rc = ::write(wake_write_.get(), &byte, 1);
  if (thread_.joinable()) thread_.join();
}

void TCPStoreServer::run() {
  std::vector<pollfd> fds;
  std::vector<uint64_t> ids;  // ids[i] is the connection polled at fds[i + 2]
  for (;;) {
    fds.clear();
    ids.clear();
    fds.push_back({wake_read_.get(), POLLIN, 0});
    fds.push_back({listen_fd_.get(), POLLIN, 0});
    for (auto& [id, conn] : connections_) {
      short events = POLLIN;
      if (conn.out_pos < conn.out.size()) events |= POLLOUT;
      fds.push_back({conn.fd.get(), events, 0});
      ids.push_back(id);
    }
    int ready = ::poll(fds.data(), fds.size(), -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return;  // poll itself failing means the process is in trouble; stop serving quietly
    }
    if (fds[0].revents != 0) return;
    if (fds[1].revents & POLLIN) accept_clients();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      short revents = fds[i + 2].revents;
      if (revents == 0) continue;
      auto it = connections_.find(ids[i]);
      if (it == connections_.end()) continue;
      Connection& conn = it->second;
      bool keep = true;
      if (revents & (POLLIN | POLLHUP | POLLERR)) keep = read_from(ids[i], conn);
      if (keep && (revents & POLLOUT)) keep = flush(conn);
      if (keep && conn.close_after_send && conn.out_pos == conn.out.size()) keep = false;
      if (!keep) connections_.erase(it);
    }
  }
}

void TCPStoreServer::accept_clients() {
  for (;;) {
    int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN: drained; other errors (EMFILE...) retry on the next poll
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    Connection conn;
    conn.fd.reset(fd);
    connections_.emplace(next_id_++, std::move(conn));
  }
}

bool TCPStoreServer::read_from(uint64_t id, Connection& conn) {
  char chunk[kReadChunk];
  ssize_t got = ::recv(conn.fd.get(), chunk, sizeof(chunk), 0);
  if (got == 0) return false;
  if (got < 0) return errno == EAGAIN || errno == EINTR;
  conn.in.append(chunk, static_cast<std::size_t>(got));
  // Parse every complete frame; the size check happens before the body is buffered, so an
  // announced 4 GiB frame costs nothing but the disconnect.
  for (;;) {
    std::size_t available = conn.in.size() - conn.in_pos;
    if (available < protocol::kFrameHeaderBytes) break;
    uint32_t len = protocol::read_u32(conn.in.data() + conn.in_pos);
    if (len == 0 || len > protocol::kMaxFrameBytes) return false;
    if (available < protocol::kFrameHeaderBytes + len) break;
    std::string_view body(conn.in.data() + conn.in_pos + protocol::kFrameHeaderBytes, len);
    if (!handle(id, conn, body)) return false;
    conn.in_pos += protocol::kFrameHeaderBytes + len;
  }
  // Compact once the parsed prefix dominates, keeping appends amortised O(1).
  if (conn.in_pos > 0 && conn.in_pos * 2 >= conn.in.size()) {
    conn.in.erase(0, conn.in_pos);
    conn.in_pos = 0;
  }
  return flush(conn);
}

bool TCPStoreServer::flush(Connection& conn) {
  while (conn.out_pos < conn.out.size()) {
    ssize_t sent = ::send(conn.fd.get(), conn.out.data() + conn.out_pos,
                          conn.out.size() - conn.out_pos, MSG_NOSIGNAL);
    if (sent < 0) return errno == EAGAIN || errno == EINTR;
    conn.out_pos += static_cast<std::size_t>(sent);
  }
  conn.out.clear();
  conn.out_pos = 0;
  return true;
}

void TCPStoreServer::reply(Connection& conn, uint8_t status,
                           const std::vector<std::string_view>& fields) {
  conn.out += protocol::encode_frame(status, fields);
}

bool TCPStoreServer::handle(uint64_t id, Connection& conn, std::string_view body) {
  auto msg = protocol::decode_body(body);
  if (!msg) return false;
  auto& f = msg->fields;
  auto ok = static_cast<uint8_t>(Status::kOk);
  auto key_ok = [](const std::string& k) { return k.size() <= protocol::kMaxKeyBytes; };
  if (!conn.greeted) {
    // Strangers are dropped before they can touch the data.
    if (msg->code != static_cast<uint8_t>(Op::kHello) || f.size() != 1 ||
        f[0] != protocol::kHelloMagic) {
      return false;
    }
    conn.greeted = true;
    reply(conn, ok, {});
    return true;
  }
  // The client is synchronous: a request while its WAIT is parked is a protocol violation.
  if (conn.missing_keys > 0) return false;
  switch (static_cast<Op>(msg->code)) {
    case Op::kSet: {
      if (f.size() != 2 || !key_ok(f[0]) || f[1].size() > protocol::kMaxValueBytes) return false;
      data_[f[0]] = std::move(f[1]);
      reply(conn, ok, {});
      notify(f[0]);
      return true;
    }
    case Op::kGet: {
      if (f.size() != 1 || !key_ok(f[0])) return false;
      auto it = data_.find(f[0]);
      if (it == data_.end()) {
        reply(conn, static_cast<uint8_t>(Status::kNotFound), {});
      } else {
        reply(conn, ok, {it->second});
      }
      return true;
    }
    case Op::kAdd: {
      auto delta = f.size() == 2 ? protocol::decode_i64(f[1]) : std::nullopt;
      if (!delta || !key_ok(f[0])) return false;
      auto it = data_.find(f[0]);
      int64_t value = 0;
      if (it != data_.end()) {
        auto current = parse_counter(it->second);
        if (!current) {
          reply(conn, static_cast<uint8_t>(Status::kError),
                {"add: the key holds a value that is not a decimal integer; use a separate key "
                 "for counters"});
          return true;
        }
        value = *current;
      }
      // Wrap-around instead of signed overflow (UB); counters never get near it in practice.
      value = static_cast<int64_t>(static_cast<uint64_t>(value) + static_cast<uint64_t>(*delta));
      data_[f[0]] = std::to_string(value);
      reply(conn, ok, {protocol::encode_i64(value)});
      notify(f[0]);
      return true;
    }
    case Op::kCheck: {
      bool all = true;
      for (auto& k : f) {
        if (!key_ok(k)) return false;
        all = all && data_.count(k) > 0;
      }
      std::string flag(1, all ? '\1' : '\0');
      reply(conn, ok, {flag});
      return true;
    }
    case Op::kWait: {
      std::unordered_set<std::string> missing;
      for (auto& k : f) {
        if (!key_ok(k)) return false;
        if (data_.count(k) == 0) missing.insert(k);
      }
      if (missing.empty()) {
        reply(conn, ok, {});
        return true;
      }
      conn.missing_keys = static_cast<int>(missing.size());
      for (auto& k : missing) waiters_[k].push_back(id);
      return true;
    }
    case Op::kDelete: {
      if (f.size() != 1 || !key_ok(f[0])) return false;
      std::string flag(1, data_.erase(f[0]) > 0 ? '\1' : '\0');
      reply(conn, ok, {flag});
      return true;
    }
    case Op::kNumKeys: {
      if (!f.empty()) return false;
      int64_t count = 0;
      for (auto& entry : data_) {
        if (!entry.first.starts_with(protocol::kReservedPrefix)) ++count;
      }
      reply(conn, ok, {protocol::encode_i64(count)});
      return true;
    }
    case Op::kHello:
      return false;
  }
  return false;  // unknown opcode
}

void TCPStoreServer::notify(const std::string& key) {
  auto it = waiters_.find(key);
  if (it == waiters_.end()) return;
  std::vector<uint64_t> ids = std::move(it->second);
  waiters_.erase(it);
  for (uint64_t id : ids) {
    auto conn = connections_.find(id);
    if (conn == connections_.end() || conn->second.missing_keys == 0) continue;
    if (--conn->second.missing_keys == 0) {
      reply(conn->second, static_cast<uint8_t>(Status::kOk), {});
      // Sent on this loop iteration when the socket accepts it, else via POLLOUT later.
      if (!flush(conn->second)) conn->second.close_after_send = true;
    }
  }
}

}  // namespace loom::dist
