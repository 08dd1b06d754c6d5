// main.cpp — the `rar` executable: one binary, one subcommand per job. Errors from any layer
// surface as a single line "rar: error: ..." and exit status 1.
#include <iostream>
#include <new>
#include <string>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include "cli/commands.h"
#include "util/error.h"

namespace {
// Errors are one line; a multi-line message (LibTorch's can be) is joined.
std::string first_line(std::string s) {
  for (auto& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}
}  // namespace

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
  rar::cli::add_serve(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {  // a bad command line: one line, exit 1, like every other error
    std::cerr << "rar: error: " << first_line(e.what()) << " (rar " << (argc > 1 ? argv[1] : "") << " --help)\n";
    return 1;
  } catch (const rar::Error& e) {
    std::cerr << "rar: error: " << first_line(e.what()) << "\n";
    return 1;
  } catch (const c10::Error& e) {
    std::cerr << "rar: error: " << first_line(e.what_without_backtrace()) << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "rar: error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "rar: error: " << first_line(e.what()) << "\n";
    return 1;
  }
  return 0;
}
