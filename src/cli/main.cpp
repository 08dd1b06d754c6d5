// main.cpp — the `rar` executable: one binary, one subcommand per job. Errors from any layer
// surface as a single line "rar: error: ..." and exit status 1.
#include <iostream>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include "cli/commands.h"
#include "util/error.h"

int main(int argc, char** argv) {
  CLI::App app{"rar — Randomized AutoRegressive image generation (train, tokenize, sample, evaluate)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("rar 0.1"));
  rar::cli::add_info(app);
  rar::cli::add_convert(app);
  rar::cli::add_score(app);
  rar::cli::add_sample(app);
  rar::cli::add_bench(app);
  rar::cli::add_tokenizer_commands(app);
  rar::cli::add_train_tokenizer(app);
  rar::cli::add_train(app);
  rar::cli::add_plot(app);
  rar::cli::add_eval(app);
  rar::cli::add_classifier_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const rar::Error& e) {
    std::cerr << "rar: error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "rar: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "rar: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
