// error.h — the one error type every module throws: a one-line message that names the file or
// field at fault and what was expected. The CLI prints it as "rar: error: <message>" and exits 1.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace rar {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <class T, class... R>
void append(std::ostringstream& os, const T& v, const R&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

// Concatenates its arguments with operator<< into one message.
template <class... A>
std::string cat(const A&... a) {
  std::ostringstream os;
  detail::append(os, a...);
  return os.str();
}

template <class... A>
[[noreturn]] void fail(const A&... a) {
  throw Error(cat(a...));
}

// check(cond, "file: field: expected ...") — throws rar::Error when cond is false.
template <class... A>
void check(bool cond, const A&... a) {
  if (!cond) fail(a...);
}

}  // namespace rar
