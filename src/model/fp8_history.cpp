// fp8_history.cpp — see fp8_history.h.
#include "model/fp8_history.h"

#include "util/error.h"

namespace rar::model {

Fp8History::Fp8History(int64_t blocks, int64_t length) {
  check(blocks > 0 && length > 0, "fp8 history: expected blocks and a length > 0, got ", blocks, " and ", length);
  slots_ = torch::zeros({blocks * kPerBlock, 2}, torch::kFloat32);
  history_ = torch::zeros({blocks * kPerBlock, length}, torch::kFloat32);
}

Fp8Scaling Fp8History::scaling(int64_t first, int64_t n, const torch::Device& device) {
  if (slots_.device() != device) slots_ = slots_.to(device), history_ = history_.to(device);
  return {slots_.narrow(0, first, n), primed_};
}

void Fp8History::advance() {
  torch::NoGradGuard ng;
  auto scale_by = slots_.select(1, 0), rec = slots_.select(1, 1);
  const auto newest = torch::where(torch::isfinite(rec), rec, scale_by);
  const int64_t L = length();
  auto rolled = L > 1 ? torch::cat({newest.unsqueeze(1), history_.narrow(1, 0, L - 1)}, 1) : newest.unsqueeze(1);
  history_.copy_(rolled);
  scale_by.copy_(history_.amax(1));
  rec.zero_();
  holds_step_ = true;
  update_primed();
}

void Fp8History::update_primed() {
  if (!primed_) primed_ = slots_.select(1, 0).gt(0).all().item<bool>();
}

torch::Tensor Fp8History::state() const { return history_.to(torch::kCPU).clone(); }

void Fp8History::load(const torch::Tensor& history, const std::string& what) {
  check(history.dim() == 2 && history.size(0) == operands() && history.size(1) == length() &&
            history.scalar_type() == torch::kFloat32,
        what, ": expected a float32 fp8 amax history [", operands(), ", ", length(), "], got ", history.sizes(),
        " ", c10::toString(history.scalar_type()));
  torch::NoGradGuard ng;
  history_.copy_(history);
  slots_.select(1, 0).copy_(history_.amax(1));
  slots_.select(1, 1).zero_();
  holds_step_ = true;
  primed_ = false;
  update_primed();
}

Fp8Scaling Fp8Rows::at(int64_t offset, int64_t n, const torch::Device& device) const {
  if (!history) return {};
  return history->scaling(first + offset, n, device);
}

}  // namespace rar::model
