// A terminal progress bar with rate and ETA, redrawn in place on a TTY and
// printed as periodic lines otherwise (logs, CI).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "absl/strings/string_view.h"

namespace hapi {

class ProgressBar {
 public:
  // `total` units of work; `label` prefixes every line. Writes to `out`.
  ProgressBar(absl::string_view label, int64_t total, FILE* out = stderr);
  ~ProgressBar();

  // Sets the completed count and a free-form status (e.g. "loss 0.31 acc 88.2%").
  void Update(int64_t done, absl::string_view status = "");
  // Completes the bar and prints the elapsed time with `status`.
  void Finish(absl::string_view status = "");
  double ElapsedSeconds() const;

 private:
  void Draw(bool final_line);

  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  std::string status_;
  FILE* out_;
  bool tty_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// "1h02m", "3m05s", "12.3s"
std::string FormatDuration(double seconds);

}  // namespace hapi
