// tokenizer_trainer.h — training a VQ tokenizer (the MaskGIT-VQGAN architecture of DESIGN §6) on
// your own images:
//   z = E(x);  z, e ← l2-normalised when use_l2_norm;  k = argmin_j |z − e_j|²;  z_q = e_k
//   loss = w_rec · rec(D(z + sg(z_q − z)), x)               (straight-through estimator)
//        + w_cb · |sg(z) − z_q|²  +  β · |z − sg(z_q)|²      (codebook, commitment)
// rec is L1, L2 or their sum. Code usage is tracked as an EMA of each code's share of positions;
// codes whose share falls below `dead_code_threshold / K` are restarted on encoder outputs of the
// current batch (their optimizer moments cleared). AdamW with warmup + cosine, checkpoints and
// resume (training/checkpoints.h), a progress line, metrics.jsonl and periodic reconstruction grids.
#pragma once
#include <string>

#include "data/prepare.h"
#include "model/vqgan.h"
#include "training/config.h"
#include "training/training_run.h"

namespace rar::training {

// The built-in defaults (YAML), sized for 32x32 images (Fashion-MNIST padded) -> 8x8 tokens.
const char* tokenizer_defaults_yaml();

struct ReconstructionStats {
  double psnr = 0;        // mean over images of 10·log10(1/MSE), pixels in [0,1]
  double codes_used = 0;  // share of the codebook used at least once
  double perplexity = 0;  // exp(entropy) of the code histogram
  int64_t images = 0;
};
// Encodes and decodes images [0, n) of `images` (n <= 0: all) in batches.
ReconstructionStats evaluate_reconstruction(model::VQModel& vq, const data::ImageBatches& images, int64_t n,
                                            int64_t batch, const torch::Device& device);

// Trains per `cfg` (defaults merged, overrides applied); writes into experiment.output_dir:
// tokenizer.safetensors, metrics.jsonl, recon-<step>.png, config.yaml, checkpoints/.
// The run (resume, stop conditions, checkpoints) follows training/training_run.h.
void train_tokenizer(const Config& cfg, const RunControl& control = {});

}  // namespace rar::training
