// parse.h — strict number parsing for text that comes from files and the command line: the
// whole text must be the number, and overflow is an error rather than an exception from deep in
// the standard library (`std::stoll` reports "stoll", naming nothing). Linear time, no regex
// (std::regex recurses per character and overflows the stack on long inputs).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace rar {

// Decimal integer with an optional sign; false if `s` is anything else or out of range.
bool parse_int(std::string_view s, int64_t& out);
// A finite or non-finite decimal floating-point number (as strtod reads it); false otherwise.
bool parse_double(std::string_view s, double& out);

// For names like "blocks.12.attn.qkv.weight": the number right after `prefix` when it is followed
// by a '.', else -1 (also when it does not fit in int64). `*next` is set past the '.'.
int64_t index_after(std::string_view name, std::string_view prefix, size_t* next = nullptr);

// Parses `text` as an integer or fails with "<what>: '<text>' is not an integer" (text shortened).
int64_t int_or_fail(const std::string& text, const std::string& what);
double double_or_fail(const std::string& text, const std::string& what);

// At most `n` characters of `s` for an error message ("…" marks a cut).
std::string shorten(std::string_view s, size_t n = 80);

}  // namespace rar
