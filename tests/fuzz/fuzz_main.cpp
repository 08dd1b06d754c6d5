// fuzz_main.cpp — one libFuzzer executable per target (RAR_FUZZ_TARGET names it; built by
// `make fuzz` with clang, -fsanitize=fuzzer,address,undefined). `fuzz_seeds DIR` writes the seed
// corpora instead.
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>

#include "fuzz/targets.h"

#ifdef RAR_FUZZ_TARGET
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);  // one core per fuzzer; make fuzz runs several side by side
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const rar::fuzz::Target* target = [] {
    const auto* t = rar::fuzz::find_target(RAR_FUZZ_TARGET);
    if (!t) {
      std::fprintf(stderr, "unknown fuzz target %s\n", RAR_FUZZ_TARGET);
      std::abort();
    }
    return t;
  }();
  rar::fuzz::run_input(*target, data, size);
  return 0;
}
#else
int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds DIR   (writes DIR/<target>/... seed corpora)\n");
    return 2;
  }
  rar::fuzz::write_seeds(argv[1]);
  for (const auto& t : rar::fuzz::targets()) std::printf("%s\n", t.name);
  return 0;
}
#endif
