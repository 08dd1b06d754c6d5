// autocast.cpp — see autocast.h.
#include "util/autocast.h"

#include <ATen/autocast_mode.h>

namespace rar {

Autocast::Autocast(bool enabled, c10::DeviceType device, c10::ScalarType dtype)
    : enabled_(enabled),
      prev_enabled_(at::autocast::is_autocast_enabled(device)),
      device_(device),
      prev_dtype_(at::autocast::get_autocast_dtype(device)) {
  at::autocast::set_autocast_enabled(device_, enabled_);
  if (!enabled_) return;
  at::autocast::set_autocast_dtype(device_, dtype);
  at::autocast::increment_nesting();
}

Autocast::~Autocast() {
  if (enabled_ && at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_, prev_enabled_);
  at::autocast::set_autocast_dtype(device_, prev_dtype_);
}

}  // namespace rar
