#include "trainer/progress_bar.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include <fmt/core.h>

namespace dilatron {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  auto s = static_cast<int64_t>(seconds + 0.5);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

ProgressBar::ProgressBar(int64_t first_step, int64_t last_step, bool show_bar, bool show_messages)
    : first_step_(first_step),
      last_step_(last_step),
      show_bar_(show_bar && show_messages),
      show_messages_(show_messages),
      tty_(isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {}

std::string ProgressBar::bar_line(int64_t step, double loss, double tokens_per_s) const {
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  int64_t done = step - first_step_, total = last_step_ - first_step_;
  double eta = done > 0 ? elapsed / static_cast<double>(done) * static_cast<double>(total - done) : NAN;
  constexpr int kWidth = 24;
  int filled = total > 0 ? static_cast<int>(kWidth * done / total) : kWidth;
  std::string bar(filled, '=');
  if (filled < kWidth) bar += '>' + std::string(kWidth - filled - 1, ' ');
  return fmt::format("step {:>{}}/{} [{}] loss {:.4f} | {:.0f} tok/s | ETA {}", step,
                     std::to_string(last_step_).size(), last_step_, bar, loss, tokens_per_s,
                     format_duration(eta));
}

void ProgressBar::update(int64_t step, double loss, double tokens_per_s, bool log_line) {
  if (!show_bar_) return;
  if (tty_) {
    std::fprintf(stderr, "\r%s\033[K", bar_line(step, loss, tokens_per_s).c_str());
    drawn_ = true;
  } else if (log_line || step == last_step_) {
    std::fprintf(stderr, "%s\n", bar_line(step, loss, tokens_per_s).c_str());
  }
  std::fflush(stderr);
}

void ProgressBar::message(const std::string& text) {
  if (!show_messages_) return;
  if (tty_ && drawn_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "%s\n", text.c_str());
  drawn_ = false;
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (tty_ && drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

}  // namespace dilatron
