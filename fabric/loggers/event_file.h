// TensorBoard event files: the record framing, the hand-encoded protobuf `Event` for scalar
// summaries, and a writer that appends records to an events.out.tfevents.* file.
//
// Record framing (TFRecord):  uint64 length (little-endian), uint32 masked_crc32c(length bytes),
//                             data, uint32 masked_crc32c(data), both CRCs little-endian.
// Messages (from tensorflow/core/util/event.proto and framework/summary.proto, only the fields
// written here):
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
//             Summary summary = 5; }
//   Summary { repeated Value value = 1; }
//   Value   { string tag = 1; float simple_value = 2; }
//
// Scalars only: no histograms, images, text or the hparams plugin, and no reading (tests decode
// what they need themselves). Not a protobuf library: the few encoders here cover exactly the
// wire types these fields use.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace loom {

// TFRecord's CRC mask: rotate right by 15 bits and add a constant, so that a CRC stored in the
// data it covers does not checksum to a trivial value.
uint32_t mask_crc32c(uint32_t crc);

// `data` framed as one TFRecord (see the file comment).
std::string frame_record(std::string_view data);

// The first event of every file: wall_time and file_version "brain.Event:2".
std::string encode_file_version_event(double wall_time);

// One event carrying a Summary with one simple_value per metric. Values are narrowed to float,
// the type TensorBoard's simple_value holds.
std::string encode_scalars_event(double wall_time, int64_t step,
                                 const std::map<std::string, double>& scalars);

// Appends framed events to a new file events.out.tfevents.<unix_seconds>.<hostname>.<pid>.<k>
// in `dir` (k counts files made by this process, so two writers never collide). Every record is
// handed to the OS with one write(2), so a reader (tensorboard tails these files) sees whole
// records and a crash loses at most the record being written.
class EventFileWriter {
 public:
  // Creates the file and writes the file_version event. Throws loom::RuntimeError on failure.
  explicit EventFileWriter(const std::string& dir);
  ~EventFileWriter();
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  const std::string& path() const { return path_; }
  void write_scalars(int64_t step, const std::map<std::string, double>& scalars, double wall_time);
  // Closes the file; later writes throw.
  void close();

 private:
  void write_record(std::string_view data);

  std::string path_;
  int fd_ = -1;
};

// Seconds since the Unix epoch, with sub-second precision: Event.wall_time's unit.
double wall_time_now();

}  // namespace loom
