// commands.h — each `rar` subcommand registers itself on the app; main() only dispatches.
#pragma once
#include <CLI/CLI.hpp>

namespace rar::cli {

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
