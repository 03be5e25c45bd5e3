// Streams, events and the current-device / current-stream guards (docs/design.md "Streams").
//
// A Stream is an ordered queue of work on one device; an Event marks a point in a stream that
// other streams (or the host) can wait for. On the CPU there is one stream per device, the
// calling thread itself: work is done when it is issued, so a CPU event is complete as soon
// as it is recorded and waiting on it costs nothing. Other device types get their behaviour
// from a backend that registers StreamHooks (the CUDA backend, under kernels/cuda/, when it is
// built); without one, every stream or event operation on that device type is a RuntimeError
// that says so.
//
// The current stream and the current device are per thread, as in CUDA and in PyTorch:
// StreamGuard and DeviceGuard set them for a scope and restore what was there before. Kernels
// run on current_stream(device) unless a caller passes another.
#pragma once

#include <cstdint>
#include <ostream>

#include "core/device.h"

namespace loom {

struct Stream {
  Device device = Device::cpu();
  int64_t id = 0;  // 0 is the device's default stream; backends number the others

  static constexpr Stream default_for(Device d) { return Stream{d, 0}; }
  friend constexpr bool operator==(const Stream&, const Stream&) = default;
};
std::ostream& operator<<(std::ostream& os, const Stream& s);

// What a device type's backend provides. Handles are the backend's own (a cudaEvent_t, say).
struct StreamHooks {
  Stream (*new_stream)(Device device, int priority) = nullptr;
  void* (*new_event)(Device device) = nullptr;
  void (*free_event)(void* event) = nullptr;
  void (*record)(void* event, Stream stream) = nullptr;
  bool (*query)(void* event) = nullptr;            // has the recorded point been reached?
  void (*synchronize_event)(void* event) = nullptr;  // block the host until it is
  void (*stream_wait)(Stream stream, void* event) = nullptr;  // later work on stream waits
  void (*synchronize_stream)(Stream stream) = nullptr;
  double (*elapsed_ms)(void* start, void* end) = nullptr;
  void (*set_device)(int index) = nullptr;  // make `index` the thread's device in the runtime
  int (*device_count)() = nullptr;
};
// Installs the hooks of a device type (backends call it once, at start-up); an empty
// StreamHooks{} removes them again (tests do). cpu and meta are built in and cannot be
// replaced.
void register_stream_hooks(DeviceType type, const StreamHooks& hooks);
bool has_stream_hooks(DeviceType type);

// A new stream on `device` (priority: lower runs first where the backend supports it). On
// the CPU and meta, the default stream: there is only one.
Stream new_stream(Device device, int priority = 0);
void synchronize(Stream stream);  // blocks until all work issued on `stream` is done

// The thread's current stream on `device`: the one a StreamGuard set, else its default.
Stream current_stream(Device device);
// The thread's current device of a type (cuda:0 until a DeviceGuard says otherwise; cpu and
// meta are always index 0).
Device current_device(DeviceType type);

class StreamGuard {
 public:
  explicit StreamGuard(Stream stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream previous_;
};

class DeviceGuard {
 public:
  explicit DeviceGuard(Device device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  Device previous_;
};

// A point in a stream. Created unrecorded (query() is true, as for a CUDA event); record()
// marks the point where `stream` is now; wait() makes later work on another stream wait for it.
class Event {
 public:
  Event() = default;
  ~Event();
  Event(Event&& other) noexcept;
  Event& operator=(Event&& other) noexcept;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(Stream stream);
  bool query() const;        // true once the work before the recorded point is done
  void synchronize() const;  // blocks the host until then
  void wait(Stream stream) const;  // work issued on `stream` after this call waits for it
  // Milliseconds between two recorded events of one device type (the backend's clock; for
  // the CPU, the host's steady clock at the two record() calls).
  double elapsed_ms(const Event& end) const;

  bool recorded() const { return recorded_; }
  Device device() const { return device_; }

 private:
  Device device_ = Device::cpu();
  bool recorded_ = false;
  void* handle_ = nullptr;  // the backend's event; unused on the CPU
  int64_t cpu_time_ns_ = 0;  // when a CPU event was recorded
};

}  // namespace loom
