// commands.h — each `rar` subcommand registers itself on the app; main() only dispatches.
#pragma once
#include <CLI/CLI.hpp>

#include <cmath>
#include <string>

#include "util/parse.h"

namespace rar::cli {

// Validators for numeric options, with one-line messages: a value must be a finite number ("nan"
// and "inf" are refused) in range, and a count an integer that fits in 64 bits.
inline CLI::Validator number_above_zero(bool strict) {
  return CLI::Validator(
      [strict](std::string& s) {
        double v = 0;
        if (!parse_double(s, v) || !std::isfinite(v)) return "must be a finite number, got '" + shorten(s) + "'";
        if (strict ? !(v > 0) : !(v >= 0)) return std::string("must be ") + (strict ? "> 0" : ">= 0") + ", got " + shorten(s);
        return std::string();
      },
      strict ? "> 0" : ">= 0");
}
inline CLI::Validator count_at_least(int64_t lo) {
  return CLI::Validator(
      [lo](std::string& s) {
        int64_t v = 0;
        if (!parse_int(s, v)) return "must be an integer (64-bit), got '" + shorten(s) + "'";
        if (v < lo) return "must be >= " + std::to_string(lo) + ", got " + std::to_string(v);
        return std::string();
      },
      "INT >= " + std::to_string(lo));
}
inline CLI::Validator non_negative() { return number_above_zero(false); }  // real numbers
inline CLI::Validator positive() { return number_above_zero(true); }
inline CLI::Validator count() { return count_at_least(0); }                // integers
inline CLI::Validator positive_count() { return count_at_least(1); }

void add_info(CLI::App& app);
void add_convert(CLI::App& app);
void add_score(CLI::App& app);
void add_sample(CLI::App& app);
void add_bench(CLI::App& app);
void add_tokenizer_commands(CLI::App& app);
void add_train_tokenizer(CLI::App& app);
void add_serve(CLI::App& app);
void add_train(CLI::App& app);
void add_plot(CLI::App& app);
void add_eval(CLI::App& app);
void add_classifier_commands(CLI::App& app);  // after add_eval: adds `eval classify`

}  // namespace rar::cli
