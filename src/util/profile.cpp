// profile.cpp — see profile.h.
#include "util/profile.h"

#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <cstdio>
#include <map>

namespace rar {

namespace {
const char* category(const std::string& n) {
  auto has = [&](const char* s) { return n.find(s) != std::string::npos; };
  if (has("flash") || has("fmha") || has("attention") || has("attn")) return "attention";
  if (has("gemm") || has("xmma") || has("cutlass") || has("nvjet") || has("Gemm") || has("matmul") || has("addmm") ||
      has("mm"))
    return "matmul";
  if (has("adam")) return "optimizer";
  return "other (elementwise, norms, reductions, copies)";
}
}  // namespace

void profile_kernels(const std::function<void()>& work, bool device_cuda, int top, const std::string& trace) {
  namespace prof = torch::autograd::profiler;
  using torch::profiler::impl::ActivityType;
  using torch::profiler::impl::ProfilerConfig;
  using torch::profiler::impl::ProfilerState;
  std::set<ActivityType> acts = {ActivityType::CPU};
  if (device_cuda) acts.insert(ActivityType::CUDA);
  ProfilerConfig cfg(ProfilerState::KINETO);
  prof::prepareProfiler(cfg, acts);
  prof::enableProfiler(cfg, acts);
  work();
  auto result = prof::disableProfiler();
  if (!trace.empty()) result->save(trace);
  struct Agg {
    double ns = 0;
    int64_t count = 0;
  };
  std::map<std::string, Agg> by_name;
  std::map<std::string, double> by_cat;
  double total = 0;
  for (const auto& e : result->events()) {
    const bool on_device = e.deviceType() == c10::DeviceType::CUDA;
    if (device_cuda != on_device) continue;
    const std::string n = e.name();
    if (!device_cuda && n.rfind("aten::", 0) != 0) continue;
    auto& a = by_name[n];
    a.ns += static_cast<double>(e.durationNs());
    a.count += 1;
    total += static_cast<double>(e.durationNs());
    by_cat[category(n)] += static_cast<double>(e.durationNs());
  }
  std::vector<std::pair<std::string, Agg>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ns > b.second.ns; });
  std::printf("\n%s time %.1f ms in %zu distinct %s\n", device_cuda ? "kernel" : "operator", total / 1e6, rows.size(),
              device_cuda ? "kernels" : "operators (self+children overlap)");
  std::printf("| share | ms | calls | %s |\n|---|---|---|---|\n", device_cuda ? "kernel" : "operator");
  for (int i = 0; i < top && i < static_cast<int>(rows.size()); ++i) {
    std::string n = rows[i].first;
    if (n.size() > 110) n = n.substr(0, 107) + "...";
    std::printf("| %.1f%% | %.2f | %lld | %s |\n", 100 * rows[i].second.ns / total, rows[i].second.ns / 1e6,
                (long long)rows[i].second.count, n.c_str());
  }
  std::printf("\n| category | share | ms |\n|---|---|---|\n");
  for (const auto& [c, ns] : by_cat) std::printf("| %s | %.1f%% | %.2f |\n", c.c_str(), 100 * ns / total, ns / 1e6);
}

}  // namespace rar
