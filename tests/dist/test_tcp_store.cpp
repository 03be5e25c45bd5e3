// Tests of TCPStore (and its server): operations across threads and processes, timeouts and
// their messages, hostile input, port errors, the world-size check and the barrier.
// Every test uses ephemeral ports and timeouts of a few seconds at most, so nothing hangs.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <thread>

#include "dist/socket.h"
#include "dist/store_protocol.h"
#include "dist/tcp_store.h"
#include "core/error.h"

namespace loom::dist {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<TCPStore> make_server(int world_size = 0, std::chrono::milliseconds t = 3s) {
  return std::make_unique<TCPStore>("127.0.0.1", 0, world_size, true, t);
}

std::unique_ptr<TCPStore> make_client(int port, int world_size = 0,
                                      std::chrono::milliseconds t = 3s) {
  return std::make_unique<TCPStore>("127.0.0.1", port, world_size, false, t);
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

// Waits for a child process for at most `timeout`, killing it if it overstays.
int wait_child(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(10ms);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(TCPStore, SetGetAddCheckDelete) {
  auto server = make_server();
  EXPECT_GT(server->port(), 0);
  auto client = make_client(server->port());
  server->set("a", std::string_view("hello"));
  EXPECT_EQ(client->get_string("a"), "hello");
  client->set("bin", TCPStore::Bytes{0, 1, 255});
  EXPECT_EQ(server->get("bin"), (TCPStore::Bytes{0, 1, 255}));
  EXPECT_EQ(client->add("n", 5), 5);
  EXPECT_EQ(server->add("n", -2), 3);
  EXPECT_EQ(server->get_string("n"), "3");
  EXPECT_TRUE(client->check({"a", "n"}));
  EXPECT_FALSE(client->check({"a", "missing"}));
  EXPECT_EQ(client->num_keys(), 3);
  EXPECT_TRUE(client->delete_key("a"));
  EXPECT_FALSE(client->delete_key("a"));
  EXPECT_EQ(server->num_keys(), 2);
}

TEST(TCPStore, GetBlocksUntilAnotherThreadSets) {
  auto server = make_server();
  std::thread setter([port = server->port()] {
    auto client = make_client(port);
    std::this_thread::sleep_for(100ms);
    client->set("late", std::string_view("value"));
  });
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(server->get_string("late"), "value");
  EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
  setter.join();
}

TEST(TCPStore, ConcurrentAddsFromManyThreads) {
  auto server = make_server();
  constexpr int kThreads = 8, kAdds = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([port = server->port()] {
      auto client = make_client(port);
      for (int i = 0; i < kAdds; ++i) client->add("counter", 1);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(server->add("counter", 0), kThreads * kAdds);
}

TEST(TCPStore, WaitReleasesOnlyWhenAllKeysExist) {
  auto server = make_server();
  std::atomic<bool> released = false;
  std::thread waiter([&, port = server->port()] {
    auto client = make_client(port);
    client->wait({"x", "y"}, 3s);
    released = true;
  });
  server->set("x", std::string_view("1"));
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(released);
  server->set("y", std::string_view("2"));
  waiter.join();
  EXPECT_TRUE(released);
}

TEST(TCPStore, GetTimeoutNamesKeyAndDurationThenStoreStillWorks) {
  auto server = make_server();
  auto client = make_client(server->port(), 0, 300ms);
  auto start = std::chrono::steady_clock::now();
  std::string msg = error_of([&] { client->get("never/set"); });
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_NE(msg.find("'never/set'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("300 ms"), std::string::npos) << msg;
  EXPECT_NE(msg.find("WORLD_SIZE"), std::string::npos) << msg;
  EXPECT_THROW(client->wait({"a", "b"}, 100ms), RuntimeError);
  // The timed-out connection was replaced; later calls see a consistent stream.
  server->set("k", std::string_view("v"));
  EXPECT_EQ(client->get_string("k"), "v");
  EXPECT_EQ(client->add("c", 2), 2);
}

TEST(TCPStore, AddOnNonIntegerValueIsAnError) {
  auto server = make_server();
  server->set("text", std::string_view("abc"));
  std::string msg = error_of([&] { server->add("text", 1); });
  EXPECT_NE(msg.find("not a decimal integer"), std::string::npos) << msg;
  EXPECT_EQ(server->add("other", 1), 1);
}

TEST(TCPStore, LargeValuesRoundTripAndOversizedAreRejected) {
  auto server = make_server();
  auto client = make_client(server->port());
  std::string big(8 << 20, 'z');
  big[12345] = 'q';
  client->set("big", big);
  EXPECT_EQ(server->get_string("big"), big);
  std::string too_big(protocol::kMaxValueBytes + 1, 'x');
  EXPECT_THROW(client->set("huge", too_big), ValueError);
  EXPECT_THROW(client->set(std::string(5000, 'k'), std::string_view("v")), ValueError);
}

// Opens a raw connection and sends `bytes`; returns true when the server closed it within
// `patience`.
bool server_closes_after(int port, const std::string& bytes,
                         std::chrono::milliseconds patience = 2s) {
  UniqueFd fd = connect_tcp("127.0.0.1", port, deadline_after(2s));
  if (send_all(fd.get(), bytes.data(), bytes.size(), deadline_after(2s)) != IoStatus::kOk) {
    return true;
  }
  // Drain whatever the server answered (e.g. the hello ack) until it closes or time is up.
  char buf[1];
  Deadline deadline = deadline_after(patience);
  for (;;) {
    IoStatus status = recv_exact(fd.get(), buf, 1, deadline);
    if (status == IoStatus::kClosed) return true;
    if (status == IoStatus::kTimeout) return false;
  }
}

TEST(TCPStore, MalformedMessagesAreRejectedAndServerKeepsServing) {
  auto server = make_server();
  int port = server->port();
  std::string hello =
      protocol::encode_frame(static_cast<uint8_t>(protocol::Op::kHello), {protocol::kHelloMagic});
  std::string huge_header;
  protocol::append_u32(huge_header, 0xffffffffu);
  EXPECT_TRUE(server_closes_after(port, huge_header));
  EXPECT_TRUE(server_closes_after(port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  // A valid SET before the hello: strangers are dropped.
  EXPECT_TRUE(server_closes_after(
      port, protocol::encode_frame(static_cast<uint8_t>(protocol::Op::kSet), {"k", "v"})));
  // After the hello: unknown opcode, wrong field count, truncated field, oversized key.
  EXPECT_TRUE(server_closes_after(port, hello + protocol::encode_frame(99, {"k"})));
  EXPECT_TRUE(server_closes_after(
      port, hello + protocol::encode_frame(static_cast<uint8_t>(protocol::Op::kSet), {"k"})));
  std::string truncated = protocol::encode_frame(static_cast<uint8_t>(protocol::Op::kGet), {"key"});
  truncated[9] = 100;  // the field claims 100 bytes but the body holds 3
  EXPECT_TRUE(server_closes_after(port, hello + truncated));
  std::string long_key(protocol::kMaxKeyBytes + 1, 'k');
  EXPECT_TRUE(server_closes_after(
      port, hello + protocol::encode_frame(static_cast<uint8_t>(protocol::Op::kGet), {long_key})));
  // A well-behaved peer that just stays silent is not disconnected.
  EXPECT_FALSE(server_closes_after(port, hello, 300ms));
  // A client that vanishes mid-frame.
  { UniqueFd fd = connect_tcp("127.0.0.1", port, deadline_after(2s)); }
  auto client = make_client(port);
  client->set("still", std::string_view("alive"));
  EXPECT_EQ(server->get_string("still"), "alive");
}

TEST(TCPStore, PortInUseSaysSoAndSuggestsAnotherMasterPort) {
  auto server = make_server();
  int port = server->port();
  std::string msg = error_of([&] { TCPStore second("127.0.0.1", port, 0, true, 1s); });
  EXPECT_NE(msg.find(std::to_string(port)), std::string::npos) << msg;
  EXPECT_NE(msg.find("already in use"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MASTER_PORT"), std::string::npos) << msg;
}

TEST(TCPStore, ConnectTimeoutNamesHostAndPort) {
  int port = find_free_port();  // nothing listens there
  auto start = std::chrono::steady_clock::now();
  std::string msg = error_of([&] { make_client(port, 0, 300ms); });
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_NE(msg.find("127.0.0.1:" + std::to_string(port)), std::string::npos) << msg;
  EXPECT_NE(msg.find("MASTER_ADDR"), std::string::npos) << msg;
}

TEST(TCPStore, NonStoreServiceIsReported) {
  UniqueFd listener = listen_tcp(0);
  int port = bound_port(listener.get());
  // Accepts, then answers garbage, like an unrelated service on MASTER_PORT.
  std::thread fake([&] {
    pollfd p{listener.get(), POLLIN, 0};
    if (::poll(&p, 1, 2000) <= 0) return;
    UniqueFd conn(::accept(listener.get(), nullptr, nullptr));
    const char junk[] = "\x05\x00\x00\x00garbage";
    ::send(conn.get(), junk, sizeof(junk) - 1, MSG_NOSIGNAL);
    std::this_thread::sleep_for(200ms);
  });
  std::string msg = error_of([&] { make_client(port, 0, 1s); });
  fake.join();
  EXPECT_NE(msg.find("loom TCPStore"), std::string::npos) << msg;
}

TEST(TCPStore, ClientMayStartBeforeServer) {
  int port = find_free_port();
  std::string got;
  std::thread early([&] {
    auto client = make_client(port);
    got = client->get_string("k");
  });
  std::this_thread::sleep_for(200ms);
  TCPStore server("127.0.0.1", port, 0, true, 3s);
  server.set("k", std::string_view("v"));
  early.join();
  EXPECT_EQ(got, "v");
}

TEST(TCPStore, WrongWorldSizeIsDetected) {
  auto server = make_server(2);
  auto second = make_client(server->port(), 2);
  std::string msg = error_of([&] { make_client(server->port(), 2); });
  EXPECT_NE(msg.find("wrong world size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("number 3"), std::string::npos) << msg;
  EXPECT_EQ(server->num_keys(), 0);  // the join counter is reserved
}

TEST(TCPStore, WaitForWorkersTimesOutWithCount) {
  std::string msg = error_of([&] { TCPStore s("127.0.0.1", 0, 2, true, 300ms, true); });
  EXPECT_NE(msg.find("only 1 of 2"), std::string::npos) << msg;
}

TEST(TCPStore, WaitForWorkersReleasesEveryone) {
  int port = find_free_port();
  std::thread worker([port] { TCPStore s("127.0.0.1", port, 2, false, 3s, true); });
  TCPStore server("127.0.0.1", port, 2, true, 3s, true);
  worker.join();
}

TEST(TCPStore, ServerShutdownWakesBlockedClientsAndDoesNotHang) {
  auto server = make_server();
  std::string msg;
  std::thread blocked([&, port = server->port()] {
    auto client = make_client(port);
    msg = error_of([&] { client->get("never"); });
  });
  std::this_thread::sleep_for(100ms);
  auto start = std::chrono::steady_clock::now();
  server.reset();
  blocked.join();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_NE(msg.find("lost the connection"), std::string::npos) << msg;
}

TEST(TCPStore, BarrierIsReusableAndTimesOutWithCount) {
  auto server = make_server();
  constexpr int kRanks = 3;
  std::atomic<int> passed = 0;
  std::vector<std::thread> ranks;
  for (int r = 0; r < kRanks; ++r) {
    ranks.emplace_back([&, port = server->port()] {
      auto client = make_client(port);
      for (int round = 0; round < 3; ++round) {
        store_barrier(*client, "b", kRanks, 3s);
        ++passed;
      }
    });
  }
  for (auto& t : ranks) t.join();
  EXPECT_EQ(passed, 3 * kRanks);
  std::string msg = error_of([&] { store_barrier(*server, "lonely", 2, 200ms); });
  EXPECT_NE(msg.find("1 of 2"), std::string::npos) << msg;
}

TEST(TCPStore, WorksAcrossProcesses) {
  int port = find_free_port();
  constexpr int kWorld = 3;
  std::vector<pid_t> children;
  for (int rank = 1; rank < kWorld; ++rank) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Child: no gtest here; the exit code is the verdict.
      int code = 0;
      try {
        TCPStore store("127.0.0.1", port, kWorld, false, 5s, true);
        store.set("rank/" + std::to_string(rank), std::to_string(rank * 10));
        store.add("sum", rank);
        store_barrier(store, "done", kWorld, 5s);
        if (store.get_string("rank/0") != "0" || store.add("sum", 0) != 0 + 1 + 2) code = 2;
      } catch (const std::exception&) {
        code = 1;
      }
      ::_exit(code);
    }
    children.push_back(pid);
  }
  {
    TCPStore store("127.0.0.1", port, kWorld, true, 5s, true);
    store.set("rank/0", std::string_view("0"));
    store_barrier(store, "done", kWorld, 5s);
    EXPECT_EQ(store.get_string("rank/1"), "10");
    EXPECT_EQ(store.get_string("rank/2"), "20");
    // The server must outlive the children's last requests.
    for (pid_t pid : children) EXPECT_EQ(wait_child(pid, 10s), 0);
  }
}

}  // namespace
}  // namespace loom::dist
