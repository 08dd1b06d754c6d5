// targets.h — the fuzz targets: one per reader of outside data, each calling the function the CLI
// calls on the input (written to a file where the reader takes a path). Shared by the libFuzzer
// executables (`make fuzz`, tests/fuzz/fuzz_main.cpp) and by the regression replay in the normal
// test suite (tests/test_fuzz_regressions.cpp), which feeds every file of
// tests/data/fuzz-regressions/<target>/ through the same function.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace rar::fuzz {

struct Target {
  const char* name;
  const char* reads;  // what the CLI reads this way, for docs/RELIABILITY.md and --help
  void (*run)(const uint8_t* data, size_t size);
};

const std::vector<Target>& targets();
const Target* find_target(const std::string& name);
// Whether this build has the reader at all (event_file: not in a build without protobuf/ISA-L,
// where it rejects every input and write_seeds makes no seeds for it).
bool built(const Target& t);

// Runs one input. A one-line rejection (rar::Error, or c10::Error from LibTorch on a tensor the
// file describes) is the expected outcome of bad input and returns false; anything else — another
// exception, a crash, a sanitizer report — is a finding and propagates.
bool run_input(const Target& t, const uint8_t* data, size_t size);

// Writes a seed corpus for every target under `dir`/<target>/, made by our own writers (so the
// fuzzers start from valid files of each format).
void write_seeds(const std::string& dir);

}  // namespace rar::fuzz
