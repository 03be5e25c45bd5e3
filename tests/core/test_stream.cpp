// Streams, events and guards (core/stream.h): the CPU's built-in single stream, the error
// without a backend, and the calls a registered backend receives, through a fake one that
// records them.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/stream.h"

namespace loom {
namespace {

TEST(Stream, TheCpuHasOneStreamAndItsEventsAreDoneWhenRecorded) {
  const Stream s = current_stream(Device::cpu());
  EXPECT_EQ(s, Stream::default_for(Device::cpu()));
  EXPECT_EQ(new_stream(Device::cpu()), s);
  Event start, end;
  EXPECT_TRUE(start.query()) << "an unrecorded event counts as done, as in CUDA";
  start.record(s);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  end.record(s);
  EXPECT_TRUE(end.query());
  end.synchronize();
  end.wait(s);
  synchronize(s);
  EXPECT_GE(start.elapsed_ms(end), 19.0);
  EXPECT_LT(start.elapsed_ms(end), 5000.0);
}

TEST(Stream, WithoutABackendCudaStreamsAreARuntimeErrorSayingSo) {
  ASSERT_FALSE(has_stream_hooks(DeviceType::cuda));
  try {
    new_stream(Device::cuda(0));
    FAIL() << "expected a RuntimeError";
  } catch (const RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find("new_stream on cuda"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("CUDA backend"), std::string::npos) << e.what();
  }
  Event e;
  EXPECT_THROW(e.record(Stream::default_for(Device::cuda(1))), RuntimeError);
  EXPECT_THROW(register_stream_hooks(DeviceType::cpu, StreamHooks{}), ValueError);
}

TEST(Stream, GuardsSetTheThreadsCurrentStreamAndDeviceAndRestoreThem) {
  const Stream cpu_default = current_stream(Device::cpu());
  {
    StreamGuard g(Stream{Device::cpu(), 0});
    EXPECT_EQ(current_stream(Device::cpu()), cpu_default);
  }
  EXPECT_EQ(current_device(DeviceType::cpu), Device::cpu());
  {
    DeviceGuard d(Device::meta());
    EXPECT_EQ(current_device(DeviceType::meta), Device::meta());
  }
  EXPECT_EQ(current_device(DeviceType::cuda), Device::cuda(0));
}

// A backend that logs every call, installed for the test's duration.
struct FakeBackend {
  static inline std::vector<std::string> log;
  static inline int next_stream = 1, next_event = 1;
  static StreamHooks hooks() {
    StreamHooks h;
    h.new_stream = [](Device d, int) { return Stream{d, next_stream++}; };
    h.new_event = [](Device) -> void* { log.push_back("new_event"); return new int(next_event++); };
    h.free_event = [](void* e) { log.push_back("free_event " + std::to_string(*static_cast<int*>(e))); delete static_cast<int*>(e); };
    h.record = [](void* e, Stream s) { log.push_back("record " + std::to_string(*static_cast<int*>(e)) + " on " + std::to_string(s.id)); };
    h.query = [](void*) { log.push_back("query"); return false; };
    h.synchronize_event = [](void*) { log.push_back("synchronize_event"); };
    h.stream_wait = [](Stream s, void* e) { log.push_back("stream " + std::to_string(s.id) + " waits " + std::to_string(*static_cast<int*>(e))); };
    h.synchronize_stream = [](Stream s) { log.push_back("synchronize_stream " + std::to_string(s.id)); };
    h.elapsed_ms = [](void*, void*) { return 1.5; };
    h.set_device = [](int i) { log.push_back("set_device " + std::to_string(i)); };
    h.device_count = [] { return 2; };
    return h;
  }
};

struct Installed {
  Installed() { register_stream_hooks(DeviceType::cuda, FakeBackend::hooks()); }
  ~Installed() { register_stream_hooks(DeviceType::cuda, StreamHooks{}); }
};

TEST(Stream, ABackendReceivesStreamEventAndDeviceCalls) {
  Installed backend;
  FakeBackend::log.clear();
  {
    DeviceGuard d(Device::cuda(1));
    EXPECT_EQ(current_device(DeviceType::cuda), Device::cuda(1));
    const Stream side = new_stream(Device::cuda(1));
    EXPECT_NE(side.id, 0);
    {
      StreamGuard g(side);
      EXPECT_EQ(current_stream(Device::cuda(1)), side);
      EXPECT_EQ(current_stream(Device::cuda(0)), Stream::default_for(Device::cuda(0)))
          << "a guard sets the stream of its own device only";
    }
    EXPECT_EQ(current_stream(Device::cuda(1)), Stream::default_for(Device::cuda(1)));
    {
      Event e;
      e.record(side);
      EXPECT_FALSE(e.query());
      e.wait(Stream::default_for(Device::cuda(1)));
      e.wait(Stream::default_for(Device::cpu()));  // the host waits: synchronize
      Event moved = std::move(e);
      EXPECT_DOUBLE_EQ(moved.elapsed_ms(moved), 1.5);
      synchronize(side);
    }
  }
  EXPECT_EQ(current_device(DeviceType::cuda), Device::cuda(0));
  const std::vector<std::string> want = {
      "set_device 1", "new_event", "record 1 on " + std::to_string(FakeBackend::next_stream - 1),
      "query", "stream 0 waits 1", "synchronize_event",
      "synchronize_stream " + std::to_string(FakeBackend::next_stream - 1), "free_event 1",
      "set_device 0"};
  EXPECT_EQ(FakeBackend::log, want);
}

}  // namespace
}  // namespace loom
