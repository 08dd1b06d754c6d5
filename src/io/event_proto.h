// event_proto.h — the protobuf half of io/event_file: Event messages to and from bytes, behind an
// interface of standard types only. It is compiled apart from everything else (CMake's
// rar_events), because LibTorch's include folder carries an older protobuf's headers that would
// shadow the system protobuf the generated code needs.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace rar::io::tfevent_proto {

struct Parsed {
  int64_t step = 0;
  double wall_time = 0;
  std::string file_version;
  std::vector<std::pair<std::string, double>> scalars;
  std::vector<std::pair<std::string, std::string>> images;  // tag, PNG
};

std::string version_event(double wall_time);  // file_version "brain.Event:2"
std::string scalars_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, double>>& values);
std::string image_event(double wall_time, int64_t step, const std::string& tag, const std::string& png, int height,
                        int width, int channels);
bool parse(const std::string& bytes, Parsed& out);  // false: not an Event message

}  // namespace rar::io::tfevent_proto
