// Test helper: a run's metrics.jsonl as step -> row.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "core/check.h"

namespace dilatron {

inline std::map<int64_t, nlohmann::json> read_metrics(const std::string& run_dir) {
  std::ifstream in(run_dir + "/metrics.jsonl");
  DILATRON_CHECK(in.good(), "cannot read {}/metrics.jsonl", run_dir);
  std::map<int64_t, nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) {
    auto row = nlohmann::json::parse(line);
    rows[row["step"].get<int64_t>()] = row;
  }
  return rows;
}

}  // namespace dilatron
