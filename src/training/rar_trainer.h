// rar_trainer.h — `rar train`: the RAR generator trained with the published recipe (DESIGN §4) on a
// pretokenized dataset (.rartok), on one CPU/GPU or data-parallel over c10d.
//
// Per optimizer step: lr = warmup/cosine(step), r = randomness(step); for each micro-batch draw
// permutations (probability r) and label drops (training/rar_objective.h), forward under bf16
// autocast on CUDA, cross-entropy / accumulation steps, backward; average gradients across ranks;
// clip to the global norm; AdamW with the published decay groups; optional EMA.
// Writes into experiment.output_dir: generator.safetensors (+ generator_ema.safetensors),
// metrics.jsonl, samples-<step>.png (with a tokenizer), config.yaml, checkpoints/.
#pragma once
#include <cstdint>

#include "model/generator.h"
#include "training/config.h"
#include "training/rar_objective.h"
#include "training/train_step.h"
#include "training/training_run.h"

namespace rar::training {

// Built-in defaults in the published rar.yaml layout (RAR-B), plus our keys (dataset paths,
// device, time budget, init_from, scan order, EMA decay).
const char* rar_defaults_yaml();

// The run (resume, stop conditions, checkpoints) follows training/training_run.h.
void train_rar(const Config& cfg, const RunControl& control = {});

}  // namespace rar::training
