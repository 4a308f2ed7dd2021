// Rank 0's console progress: step, loss, tokens/s and ETA. On a terminal one line redraws in
// place; in a log file (Slurm, CI) it prints a plain line each logging.every steps instead.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace dilatron {

class ProgressBar {
 public:
  // show_bar: the bar itself (logging.progress_bar); show_messages: message() lines (rank 0).
  ProgressBar(int64_t first_step, int64_t last_step, bool show_bar, bool show_messages);

  // After optimizer step `step` (1-based count of completed steps).
  void update(int64_t step, double loss, double tokens_per_s, bool log_line);
  // A message that must not be overwritten by the bar (validation loss, checkpoints).
  void message(const std::string& text);
  void finish();

 private:
  std::string bar_line(int64_t step, double loss, double tokens_per_s) const;

  int64_t first_step_, last_step_;
  bool show_bar_, show_messages_, tty_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
};

std::string format_duration(double seconds);

}  // namespace dilatron
