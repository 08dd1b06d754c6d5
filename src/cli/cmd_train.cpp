// `rar train` — train a RAR generator (training/rar_trainer.h).
#include "cli/commands.h"
#include "cli/run_options.h"
#include "model/generator_config.h"
#include "training/rar_trainer.h"

namespace rar::cli {

void add_train(CLI::App& app) {
  struct Args {
    RunOptions run;
    std::string data, val, tokenizer, preset;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("train", "Train a RAR generator on a pretokenized dataset (.rartok)");
  c->add_option("--data", a->data, "training tokens .rartok (dataset.train_tokens)");
  c->add_option("--val", a->val, "held-out tokens .rartok for validation NLL (dataset.val_tokens)");
  c->add_option("--tokenizer", a->tokenizer,
                "tokenizer for sample grids (model.vq_model.pretrained_tokenizer_weight)");
  c->add_option("--preset", a->preset, "generator size: rar_b, rar_l, rar_xl or rar_xxl");
  add_run_options(c, a->run, "training.per_gpu_batch_size=32 (the config is the published rar.yaml layout)");
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
    if (auto cfg = compose_run_config(training::rar_defaults_yaml(), a->run, ov))
      training::train_rar(*cfg, a->run.control());
  });
}

}  // namespace rar::cli
