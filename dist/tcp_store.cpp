// TCPStore client (and owner of the server on rank 0); see tcp_store.h.
#include "dist/tcp_store.h"

#include <algorithm>
#include <thread>

#include "dist/store_protocol.h"
#include "dist/tcp_store_server.h"
#include "core/error.h"

namespace loom::dist {
namespace {

using protocol::Op;
using protocol::Status;

constexpr char kJoinedKey[] = "__loom_store/joined";
constexpr char kAllJoinedKey[] = "__loom_store/all_joined";

// Keys are bytes; quote them printable and short for error messages.
std::string quote_key(std::string_view key) {
  constexpr std::size_t kShown = 80;
  std::string out = "'";
  for (char c : key.substr(0, kShown)) {
    if (c >= 0x20 && c < 0x7f) {
      out += c;
    } else {
      constexpr char hex[] = "0123456789abcdef";
      auto u = static_cast<unsigned char>(c);
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  if (key.size() > kShown) out += "...";
  return out + "'";
}

std::string describe_keys(const std::vector<std::string>& keys) {
  if (keys.size() == 1) return "key " + quote_key(keys[0]);
  std::string out = "keys [";
  for (std::size_t i = 0; i < keys.size() && i < 5; ++i)
    out += (i ? ", " : "") + quote_key(keys[i]);
  if (keys.size() > 5) out += detail::concat(", ... (", keys.size(), " keys)");
  return out + "]";
}

void check_key(std::string_view op, const std::string& key) {
  LOOM_VALUE_CHECK(key.size() <= protocol::kMaxKeyBytes, "TCPStore.", op, ": key ", quote_key(key),
                   " is ", key.size(), " bytes; keys are limited to ", protocol::kMaxKeyBytes,
                   " bytes (store large data in values instead)");
}

}  // namespace

struct TCPStore::Reply {
  Status status;
  std::vector<std::string> fields;
};

TCPStore::TCPStore(std::string host, int port, int world_size, bool is_server,
                   std::chrono::milliseconds timeout, bool wait_for_workers)
    : host_(std::move(host)), port_(port), timeout_(timeout) {
  LOOM_VALUE_CHECK(timeout.count() > 0, "TCPStore: timeout must be positive, got ", timeout.count(),
                   " ms");
  if (is_server) {
    server_ = std::make_unique<TCPStoreServer>(port);
    port_ = server_->port();
  } else {
    LOOM_VALUE_CHECK(port > 0 && port <= 65535,
                     "TCPStore: a client needs the server's port in "
                     "1..65535, got ",
                     port,
                     "; port 0 (pick a free port) is only valid on the "
                     "server (is_server = true)");
  }
  {
    std::lock_guard lock(mutex_);
    connect(deadline_after(timeout_));
  }
  if (world_size <= 0) return;
  int64_t joined = add(kJoinedKey, 1);
  if (joined > world_size) {
    throw RuntimeError(detail::concat(
        "TCPStore: wrong world size: this process is number ", joined, " to join the store at ",
        endpoint(), " but world_size is ", world_size,
        "; check that WORLD_SIZE (loomrun: "
        "--nproc-per-node x --nnodes) matches the number of processes started on all nodes, and "
        "that no process of an earlier run using the same MASTER_PORT is still alive"));
  }
  if (!wait_for_workers) return;
  if (joined == world_size) set(kAllJoinedKey, std::string_view("1"));
  try {
    wait({kAllJoinedKey}, timeout_);
  } catch (const RuntimeError&) {
    int64_t now = add(kJoinedKey, 0);
    throw RuntimeError(
        detail::concat("TCPStore: only ", now, " of ", world_size,
                       " processes joined the store at ", endpoint(), " within ", timeout_.count(),
                       " ms; check that every rank was started, that they all use "
                       "the same MASTER_ADDR/MASTER_PORT, and that WORLD_SIZE is right"));
  }
}

TCPStore::~TCPStore() = default;

std::string TCPStore::endpoint() const { return detail::concat(host_, ":", port_); }

void TCPStore::connect(Deadline deadline) {
  // The hosting rank talks to its own server over loopback: MASTER_ADDR may name an interface
  // that is firewalled or not routable from the machine itself.
  sock_ = connect_tcp(server_ ? std::string("127.0.0.1") : host_, port_, deadline);
  Reply hello;
  try {
    hello = exchange(static_cast<uint8_t>(Op::kHello), {protocol::kHelloMagic}, deadline, timeout_,
                     "the hello handshake");
  } catch (const RuntimeError& e) {
    throw RuntimeError(detail::concat(
        "TCPStore: the process listening on ", endpoint(), " did not answer as a loom TCPStore (",
        e.what(), "); check that MASTER_PORT points at rank 0's store and not another service"));
  }
  LOOM_CHECK(hello.status == Status::kOk, "store refused the hello handshake");
}

TCPStore::Reply TCPStore::exchange(uint8_t op, const std::vector<std::string_view>& fields,
                                   Deadline deadline, std::chrono::milliseconds budget,
                                   const std::string& what) {
  auto fail = [&](IoStatus status) -> RuntimeError {
    sock_.reset();  // a reply may still arrive later; a fresh connection keeps frames in step
    if (status == IoStatus::kTimeout) {
      return RuntimeError(detail::concat(
          "TCPStore at ", endpoint(), ": ", what, " timed out after ", budget.count(),
          " ms; check that every rank reaches this point (one may have crashed or be stuck), that "
          "WORLD_SIZE matches the number of processes started, or pass a longer timeout"));
    }
    return RuntimeError(
        detail::concat("TCPStore at ", endpoint(), ": lost the connection during ", what,
                       "; the rank hosting "
                       "the store (rank 0) probably exited or crashed: look at its output first"));
  };
  std::string frame = protocol::encode_frame(op, fields);
  IoStatus status = send_all(sock_.get(), frame.data(), frame.size(), deadline);
  if (status != IoStatus::kOk) throw fail(status);
  char header[protocol::kFrameHeaderBytes];
  status = recv_exact(sock_.get(), header, sizeof(header), deadline);
  if (status != IoStatus::kOk) throw fail(status);
  uint32_t len = protocol::read_u32(header);
  if (len == 0 || len > protocol::kMaxFrameBytes) throw fail(IoStatus::kClosed);
  std::string body(len, '\0');
  status = recv_exact(sock_.get(), body.data(), body.size(), deadline);
  if (status != IoStatus::kOk) throw fail(status);
  auto msg = protocol::decode_body(body);
  if (!msg || msg->code > static_cast<uint8_t>(Status::kError)) throw fail(IoStatus::kClosed);
  Reply reply{static_cast<Status>(msg->code), std::move(msg->fields)};
  if (reply.status == Status::kError) {
    throw RuntimeError(detail::concat("TCPStore at ", endpoint(), ": ", what,
                                      " failed: ", reply.fields.empty() ? "" : reply.fields[0]));
  }
  return reply;
}

TCPStore::Reply TCPStore::request(uint8_t op, const std::vector<std::string_view>& fields,
                                  Deadline deadline, std::chrono::milliseconds budget,
                                  const std::string& what) {
  if (!sock_.valid()) connect(deadline);
  return exchange(op, fields, deadline, budget, what);
}

void TCPStore::set(const std::string& key, std::string_view value) {
  check_key("set", key);
  LOOM_VALUE_CHECK(value.size() <= protocol::kMaxValueBytes, "TCPStore.set: the value for key ",
                   quote_key(key), " is ", value.size(), " bytes; values are limited to ",
                   protocol::kMaxValueBytes, " bytes (64 MiB): split it over several keys");
  std::lock_guard lock(mutex_);
  request(static_cast<uint8_t>(Op::kSet), {key, value}, deadline_after(timeout_), timeout_,
          "set(" + quote_key(key) + ")");
}

void TCPStore::set(const std::string& key, const Bytes& value) {
  set(key, std::string_view(reinterpret_cast<const char*>(value.data()), value.size()));
}

std::string TCPStore::get_string(const std::string& key) {
  check_key("get", key);
  std::lock_guard lock(mutex_);
  Deadline deadline = deadline_after(timeout_);
  // WAIT then GET: the server parks the wait, so no polling. The loop only matters when
  // another rank deletes the key between the two requests.
  for (;;) {
    wait_locked({key}, deadline, timeout_);
    Reply reply = request(static_cast<uint8_t>(Op::kGet), {key}, deadline, timeout_,
                          "get(" + quote_key(key) + ")");
    if (reply.status == Status::kOk && reply.fields.size() == 1) return std::move(reply.fields[0]);
  }
}

TCPStore::Bytes TCPStore::get(const std::string& key) {
  std::string value = get_string(key);
  return Bytes(value.begin(), value.end());
}

void TCPStore::wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }

void TCPStore::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  LOOM_VALUE_CHECK(timeout.count() > 0, "TCPStore.wait: timeout must be positive, got ",
                   timeout.count(), " ms");
  std::lock_guard lock(mutex_);
  wait_locked(keys, deadline_after(timeout), timeout);
}

void TCPStore::wait_locked(const std::vector<std::string>& keys, Deadline deadline,
                           std::chrono::milliseconds budget) {
  LOOM_VALUE_CHECK(keys.size() <= protocol::kMaxKeysPerRequest, "TCPStore.wait: ", keys.size(),
                   " keys in one call; at most ", protocol::kMaxKeysPerRequest, " are allowed");
  for (auto& k : keys) check_key("wait", k);
  std::vector<std::string_view> fields(keys.begin(), keys.end());
  request(static_cast<uint8_t>(Op::kWait), fields, deadline, budget,
          "waiting for " + describe_keys(keys));
}

int64_t TCPStore::add(const std::string& key, int64_t delta) {
  check_key("add", key);
  std::lock_guard lock(mutex_);
  std::string encoded = protocol::encode_i64(delta);
  Reply reply = request(static_cast<uint8_t>(Op::kAdd), {key, encoded}, deadline_after(timeout_),
                        timeout_, "add(" + quote_key(key) + ")");
  auto value = reply.fields.size() == 1 ? protocol::decode_i64(reply.fields[0]) : std::nullopt;
  LOOM_CHECK(value.has_value(), "malformed add reply from the store");
  return *value;
}

bool TCPStore::check(const std::vector<std::string>& keys) {
  LOOM_VALUE_CHECK(keys.size() <= protocol::kMaxKeysPerRequest, "TCPStore.check: ", keys.size(),
                   " keys in one call; at most ", protocol::kMaxKeysPerRequest, " are allowed");
  for (auto& k : keys) check_key("check", k);
  std::lock_guard lock(mutex_);
  std::vector<std::string_view> fields(keys.begin(), keys.end());
  Reply reply = request(static_cast<uint8_t>(Op::kCheck), fields, deadline_after(timeout_),
                        timeout_, "check(" + describe_keys(keys) + ")");
  LOOM_CHECK(reply.fields.size() == 1 && reply.fields[0].size() == 1,
             "malformed check reply from the store");
  return reply.fields[0][0] != 0;
}

bool TCPStore::delete_key(const std::string& key) {
  check_key("delete_key", key);
  std::lock_guard lock(mutex_);
  Reply reply = request(static_cast<uint8_t>(Op::kDelete), {key}, deadline_after(timeout_),
                        timeout_, "delete_key(" + quote_key(key) + ")");
  LOOM_CHECK(reply.fields.size() == 1 && reply.fields[0].size() == 1,
             "malformed delete reply from the store");
  return reply.fields[0][0] != 0;
}

int64_t TCPStore::num_keys() {
  std::lock_guard lock(mutex_);
  Reply reply = request(static_cast<uint8_t>(Op::kNumKeys), {}, deadline_after(timeout_), timeout_,
                        "num_keys()");
  auto value = reply.fields.size() == 1 ? protocol::decode_i64(reply.fields[0]) : std::nullopt;
  LOOM_CHECK(value.has_value(), "malformed num_keys reply from the store");
  return *value;
}

void store_barrier(TCPStore& store, const std::string& key, int world_size,
                   std::chrono::milliseconds timeout) {
  LOOM_VALUE_CHECK(world_size > 0, "store_barrier: world_size must be positive, got ", world_size);
  // Arrivals count up forever; arrival n belongs to generation (n - 1) / world_size, and the
  // last arrival of a generation releases it. This makes the same key reusable without a
  // reset step that would race with late readers of the previous round.
  const std::string arrived_key = key + "/arrived";
  int64_t arrival = store.add(arrived_key, 1);
  int64_t generation = (arrival - 1) / world_size;
  std::string done_key = key + "/done/" + std::to_string(generation);
  if (arrival % world_size == 0) store.set(done_key, std::string_view("1"));
  try {
    store.wait({done_key}, timeout);
  } catch (const RuntimeError&) {
    int64_t now = store.add(arrived_key, 0) - generation * world_size;
    throw RuntimeError(detail::concat(
        "store_barrier ", quote_key(key), ": timed out after ", timeout.count(), " ms with ",
        std::min<int64_t>(now, world_size), " of ", world_size,
        " ranks arrived; the missing "
        "ranks may have crashed or be stuck before the barrier, or world_size does not match the "
        "number of processes"));
  }
}

}  // namespace loom::dist
