// `rar train-tokenizer` — train a VQ tokenizer on your images (training/tokenizer_trainer.h).
#include "cli/commands.h"
#include "cli/run_options.h"
#include "training/tokenizer_trainer.h"

namespace rar::cli {

void add_train_tokenizer(CLI::App& app) {
  struct Args {
    RunOptions run;
    std::string data, test;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("train-tokenizer", "Train a VQ tokenizer (encoder/quantizer/decoder) on your images");
  c->add_option("--data", a->data, "training images (data.train): ImageFolder DIR, fashion-mnist[:train], IDX, .npy/.npz");
  c->add_option("--test", a->test, "held-out images for PSNR and code usage (data.test; default auto, 'none' for no evaluation)");
  add_run_options(c, a->run, "model.vq_model.codebook_size=1024");
  c->callback([a] {
    std::vector<std::string> ov;
    if (!a->data.empty()) ov.push_back("data.train=" + a->data);
    if (!a->test.empty()) ov.push_back("data.test=" + a->test);
    if (auto cfg = compose_run_config(training::tokenizer_defaults_yaml(), a->run, ov))
      training::train_tokenizer(*cfg, a->run.control());
  });
}

}  // namespace rar::cli
