// `rar train-tokenizer` — train a VQ tokenizer on your images (training/tokenizer_trainer.h).
#include "cli/commands.h"
#include "training/config.h"
#include "training/tokenizer_trainer.h"

namespace rar::cli {

void add_train_tokenizer(CLI::App& app) {
  struct Args {
    std::string config, data, test, out, device;
    int64_t steps = 0, stop_after = 0;
    double minutes = -1;
    bool resume = false, print_config = false;
    std::vector<std::string> overrides;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("train-tokenizer", "Train a VQ tokenizer (encoder/quantizer/decoder) on your images");
  c->add_option("--config", a->config, "YAML config merged over the defaults (see --print-config)");
  c->add_option("--data", a->data, "training images (data.train): ImageFolder DIR, fashion-mnist[:train], IDX, .npy/.npz");
  c->add_option("--test", a->test, "held-out images for PSNR and code usage (data.test; default auto, 'none' for no evaluation)");
  c->add_option("--out", a->out, "output folder (experiment.output_dir)");
  c->add_option("--device", a->device, "auto, cpu, cuda or cuda:N (training.device)");
  c->add_option("--steps", a->steps, "training steps (training.max_train_steps)")->check(positive_count());
  c->add_option("--minutes", a->minutes, "stop after this wall time, then evaluate (training.max_minutes)")->check(non_negative());
  c->add_option("--stop-after", a->stop_after,
                "train this many steps now, checkpoint and exit (continue later with --resume)")->check(count());
  c->add_flag("--resume", a->resume, "continue from the newest checkpoint in the output folder");
  c->add_flag("--print-config", a->print_config, "print the effective config and exit");
  c->add_option("overrides", a->overrides, "key.path=value overrides, e.g. model.vq_model.codebook_size=1024");
  c->callback([a] {
    std::vector<std::string> ov;
    if (!a->data.empty()) ov.push_back("data.train=" + a->data);
    if (!a->test.empty()) ov.push_back("data.test=" + a->test);
    if (!a->out.empty()) ov.push_back("experiment.output_dir=" + a->out);
    if (!a->device.empty()) ov.push_back("training.device=" + a->device);
    if (a->steps > 0) ov.push_back("training.max_train_steps=" + std::to_string(a->steps));
    if (a->minutes >= 0) ov.push_back("training.max_minutes=" + std::to_string(a->minutes));
    ov.insert(ov.end(), a->overrides.begin(), a->overrides.end());
    auto cfg = training::compose_config(training::tokenizer_defaults_yaml(), a->config, ov);
    if (a->print_config) {
      std::fputs(cfg.to_yaml().c_str(), stdout);
      return;
    }
    training::train_tokenizer(cfg, training::RunControl{a->resume, a->stop_after});
  });
}

}  // namespace rar::cli
