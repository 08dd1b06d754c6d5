// event_proto.cpp — see event_proto.h.
#include "io/event_proto.h"

#include "src/io/proto/tensorboard_event.pb.h"  // generated into the build folder

namespace rar::io::tfevent_proto {

std::string version_event(double wall_time) {
  tfevent::Event e;
  e.set_wall_time(wall_time);
  e.set_file_version("brain.Event:2");
  return e.SerializeAsString();
}

std::string scalars_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  tfevent::Event e;
  e.set_wall_time(wall_time);
  e.set_step(step);
  for (const auto& [tag, v] : values) {
    auto* val = e.mutable_summary()->add_value();
    val->set_tag(tag);
    val->set_simple_value(static_cast<float>(v));
  }
  return e.SerializeAsString();
}

std::string image_event(double wall_time, int64_t step, const std::string& tag, const std::string& png, int height,
                        int width, int channels) {
  tfevent::Event e;
  e.set_wall_time(wall_time);
  e.set_step(step);
  auto* val = e.mutable_summary()->add_value();
  val->set_tag(tag);
  auto* img = val->mutable_image();
  img->set_height(height);
  img->set_width(width);
  img->set_colorspace(channels);
  img->set_encoded_image_string(png);
  return e.SerializeAsString();
}

bool parse(const std::string& bytes, Parsed& out) {
  tfevent::Event e;
  if (!e.ParseFromString(bytes)) return false;
  out.step = e.step();
  out.wall_time = e.wall_time();
  out.file_version = e.file_version();
  for (const auto& v : e.summary().value()) {
    if (v.has_image()) out.images.emplace_back(v.tag(), v.image().encoded_image_string());
    else out.scalars.emplace_back(v.tag(), v.simple_value());
  }
  return true;
}

}  // namespace rar::io::tfevent_proto
