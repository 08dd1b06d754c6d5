// event_file_unavailable.cpp — io/event_file.h in a build without protobuf or ISA-L: no event
// files (training runs say so once and keep metrics.jsonl).
#include "io/event_file.h"

#include "util/error.h"

namespace rar::io {

bool event_files_available() { return false; }
uint32_t crc32c(const void*, size_t) { fail("event files: this build has no CRC-32C (install libisal-dev and rebuild)"); }
uint32_t masked_crc32c(const void*, size_t) { fail("event files: this build has no CRC-32C (install libisal-dev and rebuild)"); }
EventFileWriter::EventFileWriter(const std::string&, int64_t, int64_t) {
  fail("TensorBoard event files: this build has no protobuf (install libprotobuf-dev protobuf-compiler libisal-dev and rebuild)");
}
EventFileWriter::~EventFileWriter() = default;
void EventFileWriter::scalars(int64_t, const std::vector<std::pair<std::string, double>>&) {}
void EventFileWriter::image(int64_t, const std::string&, const std::string&, int, int, int) {}
void EventFileWriter::flush() {}
void EventFileWriter::record(const std::string&) {}
std::vector<EventRecord> read_event_file(const std::string&, bool) {
  fail("TensorBoard event files: this build has no protobuf (install libprotobuf-dev protobuf-compiler and rebuild)");
}

}  // namespace rar::io
