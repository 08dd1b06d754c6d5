// helpers.h — shared test utilities: fixture paths, a scratch directory, running the CLI.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "util/fs.h"

namespace rar::test {

inline std::string shared_ref(const std::string& name) { return std::string(RAR_SHARED_DIR) + "/reference/" + name; }
inline std::string fixture(const std::string& name) { return std::string(RAR_TEST_DATA) + "/" + name; }

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() : path_(make_temp_dir("rar_test_")) {}
  ~TempDir() { remove_tree(path_); }
  std::string operator/(const std::string& name) const { return join_path(path_, name); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct RunResult {
  int status;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line (sh -c) and captures its output; status -1 when a signal ended it.
inline RunResult run_shell(const std::string& cmd) {
  RunResult r{0, ""};
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = ::pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}
// Runs the rar binary with `args` (shell syntax) and captures its output and exit status; `env`
// ("NAME=value ...") is set for that run only.
inline RunResult run_rar_env(const std::string& env, const std::string& args) {
  return run_shell(env + " " + std::string(RAR_BIN) + " " + args + " 2>&1");
}
inline RunResult run_rar(const std::string& args) { return run_rar_env("", args); }

// Runs `rar <args>` as ranks 0 and 1 of a 2-process group on this machine (the torchrun variables,
// gloo on `port`), each writing to `log_prefix`.rank{0,1}.log. Returns the summed exit status and
// both logs.
inline RunResult run_rar_two_ranks(const std::string& args, int port, const std::string& log_prefix) {
  const std::string env = "MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(port) + " WORLD_SIZE=2 ";
  const std::string cmd = std::string(RAR_BIN) + " " + args;
  const std::string log0 = log_prefix + ".rank0.log", log1 = log_prefix + ".rank1.log";
  const std::string both = "(" + env + "RANK=0 " + cmd + " > " + log0 + " 2>&1 & " + env + "RANK=1 " + cmd + " > " +
                           log1 + " 2>&1; s1=$?; wait $!; s0=$?; exit $((s0 + s1)))";
  const int status = std::system(("bash -c '" + both + "'").c_str());
  RunResult r{status, ""};
  for (const auto& log : {log0, log1}) {
    std::ifstream f(log, std::ios::binary);
    r.output += std::string(std::istreambuf_iterator<char>(f), {});
  }
  return r;
}

// Runs one `rar` process per entry at once, each with its own environment assignments and
// arguments, its log at log_prefix.<i>.log; the status is the number that failed, the output their
// logs one after the other.
inline RunResult run_rar_processes(const std::vector<std::pair<std::string, std::string>>& env_and_args,
                                   const std::string& log_prefix) {
  std::string script = "(";
  for (size_t i = 0; i < env_and_args.size(); ++i)
    script += env_and_args[i].first + " " + RAR_BIN + " " + env_and_args[i].second + " > " + log_prefix + "." +
              std::to_string(i) + ".log 2>&1 & ";
  script += "s=0; for p in $(jobs -p); do wait $p || s=$((s + 1)); done; exit $s)";
  const int status = std::system(("bash -c '" + script + "'").c_str());
  RunResult r{status, ""};
  for (size_t i = 0; i < env_and_args.size(); ++i) {
    std::ifstream f(log_prefix + "." + std::to_string(i) + ".log", std::ios::binary);
    r.output += std::string(std::istreambuf_iterator<char>(f), {});
  }
  return r;
}

inline void write_bytes(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary).write(data.data(), static_cast<std::streamsize>(data.size()));
}
inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Expects `fn` to throw rar::Error whose message contains `needle` and is a single line.
#define EXPECT_RAR_ERROR(stmt, needle)                                                        \
  do {                                                                                        \
    try {                                                                                     \
      stmt;                                                                                   \
      ADD_FAILURE() << "expected rar::Error containing '" << needle << "'";                   \
    } catch (const rar::Error& e) {                                                           \
      std::string msg = e.what();                                                             \
      EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg;                   \
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;                \
    }                                                                                         \
  } while (0)

}  // namespace rar::test
