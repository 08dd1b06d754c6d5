#include "util/parse.h"

#include <charconv>
#include <cstdlib>

#include "util/error.h"

namespace rar {

bool parse_int(std::string_view s, int64_t& out) {
  if (!s.empty() && s[0] == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

bool parse_double(std::string_view s, double& out) {
  if (s.empty() || s.size() > 400 || s.find('\0') != std::string_view::npos) return false;
  const std::string copy(s);
  char* end = nullptr;
  out = std::strtod(copy.c_str(), &end);
  return end == copy.c_str() + copy.size() && copy.find_first_of(" \t\n\r\f\v") == std::string::npos;
}

int64_t index_after(std::string_view name, std::string_view prefix, size_t* next) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  size_t i = prefix.size(), j = i;
  while (j < name.size() && name[j] >= '0' && name[j] <= '9') ++j;
  if (j == i || j >= name.size() || name[j] != '.') return -1;
  int64_t v = 0;
  if (!parse_int(name.substr(i, j - i), v)) return -1;
  if (next) *next = j + 1;
  return v;
}

std::string shorten(std::string_view s, size_t n) {
  if (s.size() <= n) return std::string(s);
  return std::string(s.substr(0, n)) + "...";
}

int64_t int_or_fail(const std::string& text, const std::string& what) {
  int64_t v = 0;
  check(parse_int(text, v), what, ": '", shorten(text), "' is not an integer (or is out of range)");
  return v;
}

double double_or_fail(const std::string& text, const std::string& what) {
  double v = 0;
  check(parse_double(text, v), what, ": '", shorten(text), "' is not a number");
  return v;
}

}  // namespace rar
