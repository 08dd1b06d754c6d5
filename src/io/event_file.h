// event_file.h — TensorBoard event files (`DIR/tensorboard/events.out.tfevents.*`) for training
// runs: every scalar of a metrics row and the sample or reconstruction grids as PNG images. The
// file is TFRecord framing around protobuf Event messages (io/proto/tensorboard_event.proto):
// each record is its length (uint64 LE), the masked CRC-32C of the length, the message, the
// masked CRC-32C of the message — what TensorBoard and `wandb sync --sync-tensorboard` read.
// One file per run; a resumed run rewrites it without the records after its checkpoint's step
// (as metrics.jsonl is truncated), then appends. Flushed after every log window.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace rar::io {

// Whether this build writes event files (protobuf and ISA-L's CRC-32C were found).
bool event_files_available();

// CRC-32C (Castagnoli) and TFRecord's masking of it.
uint32_t crc32c(const void* data, size_t n);
uint32_t masked_crc32c(const void* data, size_t n);

class EventFileWriter {
 public:
  // Opens (creating the folder) the run's event file in `dir`: a new one (event files of an
  // earlier start that never reached a checkpoint are removed, as metrics.jsonl is restarted), or
  // — `resume_step` >= 0 — the existing one, under its name, rewritten without records of later
  // steps, beyond the first `max_records` (when >= 0: what the file held when the checkpoint was
  // written), or cut short by a kill (a missing one is started).
  EventFileWriter(const std::string& dir, int64_t resume_step, int64_t max_records = -1);
  ~EventFileWriter();
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  void scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values);
  // A PNG (its height, width and channels as encoded) under `tag`.
  void image(int64_t step, const std::string& tag, const std::string& png, int height, int width, int channels);
  void flush();
  const std::string& path() const { return path_; }
  int64_t records() const { return records_; }  // in the file, its version record aside

 private:
  void record(const std::string& message);
  std::string path_;
  std::FILE* f_ = nullptr;
  int64_t records_ = 0;
};

// What a file holds, for tests and for the resume rewrite: every record checked (both CRCs, the
// framing), each decoded into its step, wall time and values; a damaged record is a one-line error
// naming the file and the record. `allow_cut_tail`: a last record cut short (a run killed while
// appending it) ends the list instead — what a resume reads, never what a test reads.
struct EventRecord {
  int64_t step = 0;
  double wall_time = 0;
  std::string file_version;
  std::vector<std::pair<std::string, double>> scalars;
  std::vector<std::pair<std::string, std::string>> images;  // tag, PNG bytes
  std::string raw;  // the serialized Event
};
std::vector<EventRecord> read_event_file(const std::string& path, bool allow_cut_tail = false);

}  // namespace rar::io
