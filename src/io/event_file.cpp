// event_file.cpp — see event_file.h.
#include "io/event_file.h"

#include <isa-l/crc.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "io/event_proto.h"
#include "util/atomic_file.h"
#include "util/error.h"
#include "util/fs.h"

namespace rar::io {

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string framed(const std::string& message) {
  std::string out(12, '\0');
  const uint64_t n = message.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  const uint32_t lc = masked_crc32c(out.data(), 8);
  for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<char>(lc >> (8 * i));
  out += message;
  const uint32_t dc = masked_crc32c(message.data(), message.size());
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(dc >> (8 * i)));
  return out;
}

uint32_t le32(const unsigned char* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t(p[3]) << 24); }

std::string version_event() { return tfevent_proto::version_event(now_seconds()); }

}  // namespace

bool event_files_available() { return true; }

uint32_t crc32c(const void* data, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  auto* p = static_cast<unsigned char*>(const_cast<void*>(data));
  while (n > 0) {  // ISA-L takes an int length
    const int step = static_cast<int>(std::min<size_t>(n, 1u << 30));
    c = crc32_iscsi(p, step, c);
    p += step;
    n -= static_cast<size_t>(step);
  }
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(const void* data, size_t n) {
  const uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::vector<EventRecord> read_event_file(const std::string& path, bool allow_cut_tail) {
  const std::string bytes = read_file(path);
  std::vector<EventRecord> out;
  size_t at = 0;
  for (int64_t i = 0; at < bytes.size(); ++i) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data()) + at;
    if (allow_cut_tail && bytes.size() - at < 12) break;
    check(bytes.size() - at >= 12, path, ": record ", i, " is cut short (", bytes.size() - at, " bytes left)");
    uint64_t n = 0;
    for (int k = 0; k < 8; ++k) n |= uint64_t(p[k]) << (8 * k);
    check(le32(p + 8) == masked_crc32c(p, 8), path, ": record ", i, ": the length's CRC does not match");
    const size_t room = bytes.size() - at < 16 ? 0 : bytes.size() - at - 16;  // for the message
    const bool cut = bytes.size() - at < 16 || n > room;
    if (allow_cut_tail && cut) break;
    check(!cut, path, ": record ", i, " is cut short (it declares ", n, " bytes, the file holds ", room, ")");
    const std::string msg = bytes.substr(at + 12, n);
    check(le32(p + 12 + n) == masked_crc32c(msg.data(), msg.size()), path, ": record ", i,
          ": the message's CRC does not match");
    tfevent_proto::Parsed e;
    check(tfevent_proto::parse(msg, e), path, ": record ", i, " is not an Event message");
    EventRecord r;
    r.step = e.step;
    r.wall_time = e.wall_time;
    r.file_version = e.file_version;
    r.scalars = std::move(e.scalars);
    r.images = std::move(e.images);
    r.raw = msg;
    out.push_back(std::move(r));
    at += 16 + n;
  }
  return out;
}

EventFileWriter::EventFileWriter(const std::string& dir, int64_t resume_step, int64_t max_records) {
  make_dirs(dir);
  std::vector<std::string> found;
  for (const auto& name : list_dir(dir))
    if (name.rfind("events.out.tfevents.", 0) == 0 && name.find(".tmp-") == std::string::npos)
      found.push_back(join_path(dir, name));
  check(resume_step < 0 || found.size() <= 1, dir, ": holds ", found.size(),
        " event files; a run writes one (move the others away to resume)");
  if (resume_step >= 0 && !found.empty()) {
    // the records up to the checkpoint's step stay; the rest come again
    path_ = found[0];
    std::string kept = framed(version_event());
    for (const auto& r : read_event_file(path_, /*allow_cut_tail=*/true))
      if (r.file_version.empty() && r.step <= resume_step && (max_records < 0 || records_ < max_records)) {
        kept += framed(r.raw);
        ++records_;
      }
    write_file_atomic(path_, kept);
  } else {
    // a start from scratch: what an earlier start left (killed before its first checkpoint) goes
    for (const auto& f : found) remove_tree(f);
    char host[128] = "host";
    ::gethostname(host, sizeof host - 1);
    path_ = join_path(dir, "events.out.tfevents." + std::to_string(static_cast<int64_t>(now_seconds())) + "." + host);
    write_file_atomic(path_, framed(version_event()));
  }
  f_ = std::fopen(path_.c_str(), "ab");
  check(f_ != nullptr, path_, ": cannot open the event file for writing");
}

EventFileWriter::~EventFileWriter() {
  if (f_) std::fclose(f_);
}

void EventFileWriter::record(const std::string& message) {
  const std::string r = framed(message);
  check(std::fwrite(r.data(), 1, r.size(), f_) == r.size(), path_, ": write failed (", std::strerror(errno), ")");
  ++records_;
}

void EventFileWriter::scalars(int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  if (values.empty()) return;
  record(tfevent_proto::scalars_event(now_seconds(), step, values));
}

void EventFileWriter::image(int64_t step, const std::string& tag, const std::string& png, int height, int width,
                            int channels) {
  record(tfevent_proto::image_event(now_seconds(), step, tag, png, height, width, channels));
}

void EventFileWriter::flush() {
  check(std::fflush(f_) == 0, path_, ": write failed (", std::strerror(errno), ")");
}

}  // namespace rar::io
