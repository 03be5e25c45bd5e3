#include "core/stream.h"

#include <array>
#include <chrono>
#include <mutex>
#include <utility>

#include "core/cuda_status.h"
#include "core/error.h"

namespace loom {
namespace {

constexpr size_t kTypes = 3;  // cpu, cuda, meta

bool built_in(DeviceType t) { return t == DeviceType::cpu || t == DeviceType::meta; }

std::mutex g_hooks_mutex;
std::array<StreamHooks, kTypes> g_hooks;
std::array<bool, kTypes> g_registered{};

// The hooks of a backend device type, or the error that says none is built in.
const StreamHooks& hooks_for(DeviceType t, const char* what) {
  {
    std::lock_guard<std::mutex> lock(g_hooks_mutex);
    if (g_registered[size_t(t)]) return g_hooks[size_t(t)];
  }
  throw RuntimeError(detail::concat(what, " on ", Device(t), ": ", kNoCudaBackend));
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Per thread: the stream set for each device type's current device (index 0 on cpu/meta),
// and the current device index of each type.
struct ThreadState {
  std::array<Stream, kTypes> stream{Stream::default_for(Device::cpu()),
                                    Stream::default_for(Device::cuda(0)),
                                    Stream::default_for(Device::meta())};
  std::array<bool, kTypes> stream_set{};
  std::array<int, kTypes> device_index{};
};
thread_local ThreadState t_state;

}  // namespace

std::ostream& operator<<(std::ostream& os, const Stream& s) {
  return os << "stream " << s.id << " on " << s.device;
}

void register_stream_hooks(DeviceType type, const StreamHooks& hooks) {
  LOOM_VALUE_CHECK(!built_in(type), "register_stream_hooks: ", Device(type),
                   " streams are built in and cannot be replaced");
  std::lock_guard<std::mutex> lock(g_hooks_mutex);
  g_hooks[size_t(type)] = hooks;
  g_registered[size_t(type)] = hooks.new_event != nullptr;
}

bool has_stream_hooks(DeviceType type) {
  if (built_in(type)) return true;
  std::lock_guard<std::mutex> lock(g_hooks_mutex);
  return g_registered[size_t(type)];
}

Stream new_stream(Device device, int priority) {
  if (built_in(device.type)) return Stream::default_for(device);
  return hooks_for(device.type, "new_stream").new_stream(device, priority);
}

void synchronize(Stream stream) {
  if (built_in(stream.device.type)) return;  // CPU work is done when issued
  hooks_for(stream.device.type, "synchronize").synchronize_stream(stream);
}

Stream current_stream(Device device) {
  const size_t t = size_t(device.type);
  if (t_state.stream_set[t] && t_state.stream[t].device == device) return t_state.stream[t];
  return Stream::default_for(device);
}

Device current_device(DeviceType type) { return Device(type, t_state.device_index[size_t(type)]); }

StreamGuard::StreamGuard(Stream stream) : previous_(current_stream(stream.device)) {
  const size_t t = size_t(stream.device.type);
  t_state.stream[t] = stream;
  t_state.stream_set[t] = true;
}

StreamGuard::~StreamGuard() {
  const size_t t = size_t(previous_.device.type);
  t_state.stream[t] = previous_;
  t_state.stream_set[t] = previous_.id != 0;
}

DeviceGuard::DeviceGuard(Device device) : previous_(current_device(device.type)) {
  if (device.index == previous_.index) return;
  if (!built_in(device.type)) {
    const StreamHooks& h = hooks_for(device.type, "DeviceGuard");
    if (h.set_device) h.set_device(device.index);
  }
  t_state.device_index[size_t(device.type)] = device.index;
}

DeviceGuard::~DeviceGuard() {
  const size_t t = size_t(previous_.type);
  if (t_state.device_index[t] == previous_.index) return;
  if (!built_in(previous_.type) && has_stream_hooks(previous_.type)) {
    const StreamHooks& h = hooks_for(previous_.type, "DeviceGuard");
    if (h.set_device) h.set_device(previous_.index);
  }
  t_state.device_index[t] = previous_.index;
}

Event::~Event() {
  if (handle_ && has_stream_hooks(device_.type)) hooks_for(device_.type, "Event").free_event(handle_);
}

Event::Event(Event&& other) noexcept
    : device_(other.device_),
      recorded_(other.recorded_),
      handle_(std::exchange(other.handle_, nullptr)),
      cpu_time_ns_(other.cpu_time_ns_) {}

Event& Event::operator=(Event&& other) noexcept {
  if (this != &other) {
    Event dying(std::move(*this));  // frees this event's handle
    device_ = other.device_;
    recorded_ = other.recorded_;
    handle_ = std::exchange(other.handle_, nullptr);
    cpu_time_ns_ = other.cpu_time_ns_;
  }
  return *this;
}

void Event::record(Stream stream) {
  if (recorded_ || handle_)
    LOOM_VALUE_CHECK(stream.device.type == device_.type, "Event::record: the event was recorded on ",
                     device_, " and cannot be recorded on ", stream.device,
                     "; use one event per device type");
  device_ = stream.device;
  recorded_ = true;
  if (built_in(stream.device.type)) {
    cpu_time_ns_ = now_ns();
    return;
  }
  const StreamHooks& h = hooks_for(stream.device.type, "Event::record");
  if (!handle_) handle_ = h.new_event(stream.device);
  h.record(handle_, stream);
}

bool Event::query() const {
  if (!recorded_ || built_in(device_.type)) return true;
  return hooks_for(device_.type, "Event::query").query(handle_);
}

void Event::synchronize() const {
  if (!recorded_ || built_in(device_.type)) return;
  hooks_for(device_.type, "Event::synchronize").synchronize_event(handle_);
}

void Event::wait(Stream stream) const {
  if (!recorded_ || (built_in(stream.device.type) && built_in(device_.type))) return;
  if (built_in(stream.device.type)) {  // the host (a CPU stream) waits for a device's event
    synchronize();
    return;
  }
  hooks_for(stream.device.type, "Event::wait").stream_wait(stream, handle_);
}

double Event::elapsed_ms(const Event& end) const {
  LOOM_VALUE_CHECK(recorded_ && end.recorded_, "Event::elapsed_ms: both events must be recorded");
  LOOM_VALUE_CHECK(device_.type == end.device_.type, "Event::elapsed_ms: the events are on ",
                   device_, " and ", end.device_, "; time events of one device type");
  if (built_in(device_.type)) return double(end.cpu_time_ns_ - cpu_time_ns_) / 1e6;
  return hooks_for(device_.type, "Event::elapsed_ms").elapsed_ms(handle_, end.handle_);
}

}  // namespace loom
