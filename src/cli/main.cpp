// main.cpp — the `rar` executable: one binary, one subcommand per job. Errors from any layer
// surface as a single line "rar: error: ..." and exit status 1.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <new>
#include <string>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include "cli/commands.h"
#include "util/error.h"

namespace {

// OpenMP threads that spin while they wait collapse when another process shares the cores; a
// short spin (1000 iterations) keeps most of the speed with a busy neighbour and costs little on
// an idle machine (bench/RESULTS.md, "CPU", has the rates). libgomp reads its settings when it is loaded, before main,
// so a process started without any sets the short spin and runs itself again, once. Users who
// set OMP_WAIT_POLICY or GOMP_SPINCOUNT keep theirs.
void prefer_short_openmp_spin(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT") || std::getenv("RAR_OPENMP_SET")) return;
  ::setenv("GOMP_SPINCOUNT", "1000", 1);
  ::setenv("RAR_OPENMP_SET", "1", 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: then run as we are
}

// Errors are one line; a multi-line message (LibTorch's can be) is joined.
std::string first_line(std::string s) {
  for (auto& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}
}  // namespace

int main(int argc, char** argv) {
  prefer_short_openmp_spin(argv);
  CLI::App app{"rar — Randomized AutoRegressive image generation (train, tokenize, sample, evaluate)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("rar 0.1"));
  // every flag's --help line shows its default (subcommands inherit this)
  app.option_defaults()->always_capture_default();
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
