// The address a rank advertises to its peers (dist::advertised_address, init.h): the local
// address that routes to MASTER_ADDR by default, LOOM_SOCKET_ADDR / LOOM_SOCKET_IFNAME as
// overrides, 127.0.0.1 for a loopback MASTER_ADDR; and a group over a non-loopback master
// really advertises and uses that address.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "dist/forked_ranks.h"
#include "dist/init.h"
#include "dist/socket.h"
#include "core/error.h"
#include "tensor/factories.h"

namespace loom::dist {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

// This host's first non-loopback IPv4 address, "" when it has none.
std::string non_loopback_address() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return "";
  std::string found;
  for (ifaddrs* a = list; a != nullptr && found.empty(); a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr, text,
              sizeof text);
    if (std::string(text).rfind("127.", 0) != 0) found = text;
  }
  freeifaddrs(list);
  return found;
}

// Clears the two variables for the test's duration and restores nothing: no test relies on
// them being set.
struct AdvertisedAddress : ::testing::Test {
  void SetUp() override {
    unsetenv(kSocketAddrVariable);
    unsetenv(kSocketIfnameVariable);
  }
  void TearDown() override { SetUp(); }
};

TEST_F(AdvertisedAddress, ALoopbackMasterGivesLoopback) {
  EXPECT_EQ(advertised_address("127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(advertised_address("localhost"), "127.0.0.1");
  EXPECT_EQ(local_address_toward("127.0.0.1"), "127.0.0.1");
}

TEST_F(AdvertisedAddress, ANonLoopbackMasterGivesTheAddressThatRoutesThere) {
  const std::string ip = non_loopback_address();
  if (ip.empty()) GTEST_SKIP() << "this host has no non-loopback IPv4 address";
  // This host's own address is reached from itself through that address, not 127.0.0.1.
  EXPECT_EQ(advertised_address(ip), ip);
}

TEST_F(AdvertisedAddress, OverridesComeFirst) {
  setenv(kSocketIfnameVariable, "lo", 1);
  EXPECT_EQ(advertised_address("192.0.2.200"), "127.0.0.1");
  setenv(kSocketAddrVariable, "198.51.100.7", 1);  // wins over the interface
  EXPECT_EQ(advertised_address("127.0.0.1"), "198.51.100.7");
  setenv(kSocketAddrVariable, "node-7", 1);
  try {
    advertised_address("127.0.0.1");
    ADD_FAILURE() << "a non-IPv4 LOOM_SOCKET_ADDR was accepted";
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("LOOM_SOCKET_ADDR='node-7' is not an IPv4 address"));
  }
  unsetenv(kSocketAddrVariable);
  setenv(kSocketIfnameVariable, "nosuch0", 1);
  try {
    advertised_address("127.0.0.1");
    ADD_FAILURE() << "an unknown LOOM_SOCKET_IFNAME was accepted";
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("LOOM_SOCKET_IFNAME: network interface 'nosuch0' has no "
                                    "IPv4 address on this host; interfaces with one: "));
    EXPECT_THAT(e.what(), HasSubstr("lo (127.0.0.1)"));
  }
}

// Two ranks rendezvous at this host's non-loopback address: both advertise it (not the
// loopback address Gloo's resolution of the host name may give) and reduce over it.
TEST_F(AdvertisedAddress, AGroupOverANonLoopbackMasterAdvertisesTheRoutedAddress) {
  const std::string ip = non_loopback_address();
  if (ip.empty()) GTEST_SKIP() << "this host has no non-loopback IPv4 address";
  expect_all_passed(run_ranks(2, [ip](int rank, int port) {
    ProcessGroupOptions o;
    o.rank = rank;
    o.world_size = 2;
    o.master_addr = ip;
    o.master_port = port;
    o.timeout = 5s;
    o.shared_memory = false;
    auto pg = std::dynamic_pointer_cast<GlooProcessGroup>(init_process_group(o));
    check(pg != nullptr, "not a GlooProcessGroup");
    check(pg->address() == ip, "advertised '" + pg->address() + "', expected " + ip);
    Tensor t = full({2}, rank + 1.0, DType::f32);
    pg->all_reduce(t);
    check_values(t, {3, 3}, "all_reduce over " + ip);
    finish(*pg);
  }));
}

// loomrun --socket-ifname / --socket-addr hand the variables to every rank it starts.
TEST(Loomrun, SocketFlagsSetTheVariablesOfEveryRank) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path loomrun = fs::read_symlink("/proc/self/exe", ec).parent_path() / "../tools/loomrun";
  if (!fs::is_regular_file(loomrun, ec)) GTEST_SKIP() << "loomrun is not built next to the tests";
  const std::string command =
      loomrun.string() + " --socket-ifname lo --socket-addr 10.1.2.3 --nproc-per-node 2 "
      "/bin/sh -c 'echo \"$RANK $LOOM_SOCKET_IFNAME $LOOM_SOCKET_ADDR\"' 2>&1";
  FILE* out = popen(command.c_str(), "r");
  ASSERT_NE(out, nullptr);
  std::string text;
  char buf[256];
  while (size_t n = fread(buf, 1, sizeof buf, out)) text.append(buf, n);
  EXPECT_EQ(pclose(out), 0) << text;
  EXPECT_THAT(text, HasSubstr("[rank 0] 0 lo 10.1.2.3\n"));
  EXPECT_THAT(text, HasSubstr("[rank 1] 1 lo 10.1.2.3\n"));
}

}  // namespace
}  // namespace loom::dist
