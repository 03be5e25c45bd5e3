// TensorBoard event files (see event_file.h for the framing and the messages encoded).
#include "fabric/loggers/event_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "fabric/io/crc32c.h"
#include "core/error.h"

namespace loom {

// Fixed-width fields are copied from memory as they lie; protobuf and TFRecord want them
// little-endian.
static_assert(std::endian::native == std::endian::little,
              "event file encoding assumes a little-endian host");

namespace {

// Protobuf wire types (https://protobuf.dev/programming-guides/encoding/).
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t value) {
  // Seven bits per byte, low groups first; the high bit says another byte follows.
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

void put_tag(std::string& out, uint32_t field, WireType type) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | type);
}

template <class T>
void put_fixed(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

void put_bytes_field(std::string& out, uint32_t field, std::string_view bytes) {
  put_tag(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out.append(bytes);
}

// Event fields.
constexpr uint32_t kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventSummary = 5;
// Summary and Summary.Value fields.
constexpr uint32_t kSummaryValue = 1, kValueTag = 1, kValueSimpleValue = 2;

std::string event_header(double wall_time) {
  std::string event;
  put_tag(event, kEventWallTime, kFixed64);
  put_fixed(event, wall_time);
  return event;
}

std::string host_name() {
  char buffer[256] = {};
  if (::gethostname(buffer, sizeof buffer - 1) != 0 || buffer[0] == '\0') return "localhost";
  // A '/' would turn the file name into a path.
  std::string name(buffer);
  for (char& c : name)
    if (c == '/') c = '_';
  return name;
}

}  // namespace

uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

std::string frame_record(std::string_view data) {
  std::string record;
  record.reserve(data.size() + 16);
  put_fixed<uint64_t>(record, data.size());
  put_fixed<uint32_t>(record, mask_crc32c(crc32c(record.data(), 8)));
  record.append(data);
  put_fixed<uint32_t>(record, mask_crc32c(crc32c(data.data(), data.size())));
  return record;
}

std::string encode_file_version_event(double wall_time) {
  std::string event = event_header(wall_time);
  put_bytes_field(event, kEventFileVersion, "brain.Event:2");
  return event;
}

std::string encode_scalars_event(double wall_time, int64_t step,
                                 const std::map<std::string, double>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    put_bytes_field(v, kValueTag, tag);
    put_tag(v, kValueSimpleValue, kFixed32);
    put_fixed(v, static_cast<float>(value));
    put_bytes_field(summary, kSummaryValue, v);
  }
  std::string event = event_header(wall_time);
  put_tag(event, kEventStep, kVarint);
  // int64 (not sint64) is encoded as its two's-complement uint64, so a negative step takes 10
  // bytes; that is what every protobuf decoder expects for this field type.
  put_varint(event, static_cast<uint64_t>(step));
  put_bytes_field(event, kEventSummary, summary);
  return event;
}

double wall_time_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

EventFileWriter::EventFileWriter(const std::string& dir) {
  static std::atomic<int> files_made{0};
  auto seconds = static_cast<int64_t>(wall_time_now());
  path_ = (std::filesystem::path(dir) / detail::concat("events.out.tfevents.", seconds, ".",
                                                       host_name(), ".", ::getpid(), ".",
                                                       files_made.fetch_add(1)))
              .string();
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0666);
  if (fd_ < 0)
    throw RuntimeError(detail::concat("cannot create TensorBoard event file '", path_, "': ",
                                      std::strerror(errno), "; check the log folder is writable"));
  write_record(encode_file_version_event(wall_time_now()));
}

EventFileWriter::~EventFileWriter() { close(); }

void EventFileWriter::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void EventFileWriter::write_scalars(int64_t step, const std::map<std::string, double>& scalars,
                                    double wall_time) {
  write_record(encode_scalars_event(wall_time, step, scalars));
}

void EventFileWriter::write_record(std::string_view data) {
  if (fd_ < 0)
    throw RuntimeError(detail::concat("TensorBoard event file '", path_,
                                      "' is closed; log before finalize() or use a new logger"));
  std::string record = frame_record(data);
  std::string_view rest = record;
  while (!rest.empty()) {
    ssize_t written = ::write(fd_, rest.data(), rest.size());
    if (written < 0 && errno == EINTR) continue;
    if (written < 0)
      throw RuntimeError(detail::concat("writing TensorBoard event file '", path_, "' failed: ",
                                        std::strerror(errno), "; check free space on its disk"));
    rest.remove_prefix(static_cast<size_t>(written));
  }
}

}  // namespace loom
