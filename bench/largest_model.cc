// The largest GPT each ZeRO tier combination fits in a per-rank working-memory budget, by the
// trainer's own estimator (trainer/memory_estimate.h): no training runs, so this is the
// estimator's answer, checked against one measured run in docs/zero.md.
// Family: n_layers 12, d_model a multiple of 64, n_heads = d_model / 64, d_ff 4 d_model, on a
// base config with seq_len 1024 and one sequence per rank (batch = ranks).
// Usage: largest_model [budget GiB = 16] [ranks = 8] [base config = configs/shakespeare-tiny.yaml]
#include <cstdio>
#include <string>
#include <vector>

#include "trainer/config.h"
#include "trainer/memory_estimate.h"

namespace dilatron {
namespace {

constexpr int kLayers = 12, kHeadDim = 64, kSeqLen = 1024;
constexpr double kMiB = 1024.0 * 1024.0;

struct Tiers {
  const char* name;
  std::vector<std::string> overrides;
};

Config family_member(const std::string& base, const Tiers& tiers, int ranks, int d_model) {
  std::vector<std::string> overrides = {
      "model.n_layers=" + std::to_string(kLayers), "model.d_model=" + std::to_string(d_model),
      "model.n_heads=" + std::to_string(d_model / kHeadDim), "model.seq_len=" + std::to_string(kSeqLen),
      "data.batch_size=" + std::to_string(ranks)};
  overrides.insert(overrides.end(), tiers.overrides.begin(), tiers.overrides.end());
  return load_config_file(base, overrides);
}

void report(const std::string& base, const Tiers& tiers, int ranks, int64_t budget) {
  // Working memory grows with d_model, so the first width over budget ends the search.
  int best = 0;
  for (int d = kHeadDim; estimate_memory(family_member(base, tiers, ranks, d), ranks).working_memory() <= budget;
       d += kHeadDim)
    best = d;
  if (best == 0) {
    std::printf("%-14s nothing fits\n", tiers.name);
    return;
  }
  const MemoryEstimate m = estimate_memory(family_member(base, tiers, ranks, best), ranks);
  std::printf("%-14s %7d %8.3f %9.0f %9.0f %9.0f %9.0f %9.0f %10.0f %10.0f\n", tiers.name, best, m.parameters / 1e9,
              m.parameter_bytes / kMiB, m.gradient_bytes / kMiB, m.optimizer_bytes / kMiB, m.gathered_bytes / kMiB,
              m.activation_bytes / kMiB, m.working_memory() / kMiB, m.offloaded_bytes() / kMiB);
}

std::vector<std::string> zero3(const char* params, const char* optimizer) {
  return {"zero.stage=3", std::string("zero.offload_params=") + params,
          std::string("zero.offload_optimizer=") + optimizer, "zero.nvme_path=/var/tmp"};
}

}  // namespace
}  // namespace dilatron

int main(int argc, char** argv) {
  using namespace dilatron;
  const double budget_gib = argc > 1 ? std::stod(argv[1]) : 16;
  const int ranks = argc > 2 ? std::stoi(argv[2]) : 8;
  const std::string base = argc > 3 ? argv[3] : "configs/shakespeare-tiny.yaml";
  const auto budget = static_cast<int64_t>(budget_gib * 1024 * 1024 * 1024);
  const std::vector<Tiers> all = {{"replicated", {"zero.stage=0"}},       {"device/device", zero3("device", "device")},
                                  {"device/cpu", zero3("device", "cpu")}, {"cpu/cpu", zero3("cpu", "cpu")},
                                  {"device/nvme", zero3("device", "nvme")}, {"nvme/nvme", zero3("nvme", "nvme")}};
  std::printf("# largest GPT (n_layers %d, d_model k*64, n_heads d_model/64, seq_len %d, batch %d = 1 per rank) with "
              "estimated working memory per rank <= %.1f GiB on %d ranks; base %s; MiB per rank\n",
              kLayers, kSeqLen, ranks, budget_gib, ranks, base.c_str());
  std::printf("%-14s %7s %8s %9s %9s %9s %9s %9s %10s %10s\n", "tiers", "d_model", "params_B", "params", "grads",
              "optimizer", "gathered", "activ", "working", "offloaded");
  for (const Tiers& tiers : all) report(base, tiers, ranks, budget);
  return 0;
}
