#include "core/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace hapi {

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds < 60) return absl::StrFormat("%.1fs", seconds);
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
}

ProgressBar::ProgressBar(absl::string_view label, int64_t total, FILE* out)
    : label_(label),
      total_(std::max<int64_t>(total, 1)),
      out_(out),
      tty_(::isatty(::fileno(out)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  if (!finished_ && done_ > 0) Finish();
}

double ProgressBar::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::Update(int64_t done, absl::string_view status) {
  done_ = std::min(done, total_);
  status_ = std::string(status);
  auto now = std::chrono::steady_clock::now();
  // Redraw a TTY ~10x per second; a log gets a line every 10 seconds.
  auto interval = tty_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(10000);
  if (now - last_draw_ < interval && done_ < total_) return;
  last_draw_ = now;
  Draw(false);
}

void ProgressBar::Finish(absl::string_view status) {
  if (finished_) return;
  finished_ = true;
  done_ = total_;
  if (!status.empty()) status_ = std::string(status);
  Draw(true);
}

void ProgressBar::Draw(bool final_line) {
  constexpr int kWidth = 30;
  double fraction = static_cast<double>(done_) / total_;
  double elapsed = ElapsedSeconds();
  double eta = done_ > 0 ? elapsed * (total_ - done_) / done_ : NAN;
  int filled = static_cast<int>(fraction * kWidth);
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::string timing = final_line ? absl::StrFormat("in %s", FormatDuration(elapsed))
                                  : absl::StrFormat("%s elapsed, ETA %s", FormatDuration(elapsed),
                                                    FormatDuration(eta));
  std::string line = absl::StrFormat("%s [%s] %5.1f%% %d/%d %s %s", label_, bar, 100.0 * fraction,
                                     done_, total_, timing, status_);
  if (tty_) {
    absl::FPrintF(out_, "\r\033[K%s%s", line, final_line ? "\n" : "");
  } else {
    absl::FPrintF(out_, "%s\n", line);
  }
  std::fflush(out_);
}

}  // namespace hapi
