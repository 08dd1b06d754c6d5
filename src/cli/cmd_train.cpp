// `rar train` — train a RAR generator (training/rar_trainer.h).
#include "cli/commands.h"
#include "model/generator_config.h"
#include "training/config.h"
#include "training/rar_trainer.h"

namespace rar::cli {

void add_train(CLI::App& app) {
  struct Args {
    std::string config, data, val, tokenizer, out, device, preset;
    int64_t steps = 0, stop_after = 0;
    double minutes = -1;
    bool resume = false, print_config = false;
    std::vector<std::string> overrides;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("train", "Train a RAR generator on a pretokenized dataset (.rartok)");
  c->add_option("--config", a->config, "YAML in the published rar.yaml layout, merged over the defaults");
  c->add_option("--data", a->data, "training tokens .rartok (dataset.train_tokens)");
  c->add_option("--val", a->val, "held-out tokens .rartok for validation NLL (dataset.val_tokens)");
  c->add_option("--tokenizer", a->tokenizer,
                "tokenizer for sample grids (model.vq_model.pretrained_tokenizer_weight)");
  c->add_option("--preset", a->preset, "generator size: rar_b, rar_l, rar_xl or rar_xxl");
  c->add_option("--out", a->out, "output folder (experiment.output_dir)");
  c->add_option("--device", a->device, "auto, cpu, cuda or cuda:N (training.device)");
  c->add_option("--steps", a->steps, "optimizer steps (training.max_train_steps)")->check(positive_count());
  c->add_option("--minutes", a->minutes, "stop after this wall time, checkpointed (training.max_minutes)")->check(non_negative());
  c->add_option("--stop-after", a->stop_after, "train this many steps now, checkpoint and exit (then --resume)")->check(count());
  c->add_flag("--resume", a->resume, "continue from the newest checkpoint in the output folder");
  c->add_flag("--print-config", a->print_config, "print the effective config and exit");
  c->add_option("overrides", a->overrides, "key.path=value overrides, e.g. training.per_gpu_batch_size=32");
  c->callback([a] {
    std::vector<std::string> ov;
    if (!a->preset.empty()) {
      auto p = model::GeneratorConfig::preset(a->preset);
      ov.push_back("model.generator.hidden_size=" + std::to_string(p.hidden));
      ov.push_back("model.generator.num_hidden_layers=" + std::to_string(p.layers));
      ov.push_back("model.generator.num_attention_heads=" + std::to_string(p.heads));
      ov.push_back("model.generator.intermediate_size=" + std::to_string(p.mlp));
    }
    if (!a->data.empty()) ov.push_back("dataset.train_tokens=" + a->data);
    if (!a->val.empty()) ov.push_back("dataset.val_tokens=" + a->val);
    if (!a->tokenizer.empty()) ov.push_back("model.vq_model.pretrained_tokenizer_weight=" + a->tokenizer);
    if (!a->out.empty()) ov.push_back("experiment.output_dir=" + a->out);
    if (!a->device.empty()) ov.push_back("training.device=" + a->device);
    if (a->steps > 0) ov.push_back("training.max_train_steps=" + std::to_string(a->steps));
    if (a->minutes >= 0) ov.push_back("training.max_minutes=" + std::to_string(a->minutes));
    ov.insert(ov.end(), a->overrides.begin(), a->overrides.end());
    auto cfg = training::compose_config(training::rar_defaults_yaml(), a->config, ov);
    if (a->print_config) {
      std::fputs(cfg.to_yaml().c_str(), stdout);
      return;
    }
    training::train_rar(cfg, training::RunControl{a->resume, a->stop_after});
  });
}

}  // namespace rar::cli
