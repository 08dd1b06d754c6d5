// commands.h — each `rar` subcommand registers itself on the app; main() only dispatches.
#pragma once
#include <CLI/CLI.hpp>

#include <cmath>
#include <string>

#include "util/parse.h"

namespace rar::cli {

// Validators for numeric options: a value must be a finite number ("nan" and "inf" are refused),
// and counts and sizes must not be negative (or must be positive). Combine with `&`.
inline CLI::Validator finite_number() {
  return CLI::Validator(
      [](std::string& s) {
        double v = 0;
        return parse_double(s, v) && std::isfinite(v) ? std::string() : "must be a finite number, got '" + shorten(s) + "'";
      },
      "FINITE");
}
inline CLI::Validator non_negative() { return finite_number() & CLI::NonNegativeNumber; }
inline CLI::Validator positive() { return finite_number() & CLI::PositiveNumber; }

void add_info(CLI::App& app);
void add_convert(CLI::App& app);
void add_score(CLI::App& app);
void add_sample(CLI::App& app);
void add_bench(CLI::App& app);
void add_tokenizer_commands(CLI::App& app);
void add_train_tokenizer(CLI::App& app);
void add_train(CLI::App& app);
void add_plot(CLI::App& app);
void add_eval(CLI::App& app);
void add_classifier_commands(CLI::App& app);  // after add_eval: adds `eval classify`

}  // namespace rar::cli
