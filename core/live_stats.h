// Statistics of live traffic against what a variant was planned on
// (docs/live-monitor.md): the window of shadowed requests with the upper
// bound on their disagreement with the full network, and the label-free
// drift test of exit ratios and first-exit confidences.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/calibration_table.h"
#include "core/design.h"
#include "core/exit_policy.h"

namespace hapi {

// P(X > x) for X ~ chi-square with `dof` >= 1 degrees of freedom.
double ChiSquareSurvival(double x, int dof);

struct ChiSquareTest {
  double statistic = 0;
  int dof = 0;  // 0: too few counts to test (p_value 1)
  double p_value = 1;
};

// Pearson's chi-square test of homogeneity of two samples over the same
// ordered categories (a 2 x k contingency table). Neighbouring categories are
// merged, in order, until every merged category's expected count is at least
// 5 in both samples (Cochran's rule), so sparse categories (a rarely used
// exit, a tie-collapsed bin) neither inflate the statistic nor vanish.
ChiSquareTest ChiSquareHomogeneity(absl::Span<const int64_t> reference,
                                   absl::Span<const int64_t> observed);

// The depth (1-based among the design's exits, final = exits + 1) at which
// `design` answers `sample` of `table`.
int AnsweringDepth(const Design& design, const CalibrationTable& table, int sample);

// What a design does on the table it was planned on: how many samples
// leave at each depth, and the confidence (max softmax) at the first exit
// every request evaluates, binned at the table's own quantiles.
class DriftReference {
 public:
  // INVALID_ARGUMENT for a design that does not fit the table, or bins < 2.
  static absl::StatusOr<DriftReference> Create(const CalibrationTable& table, const Design& design,
                                               int bins = 10);
  int num_depths() const { return static_cast<int>(depth_counts_.size()); }
  int num_bins() const { return static_cast<int>(bin_counts_.size()); }
  int ConfidenceBin(float confidence) const;
  const std::vector<int64_t>& depth_counts() const { return depth_counts_; }
  const std::vector<int64_t>& bin_counts() const { return bin_counts_; }

 private:
  std::vector<float> edges_;  // ascending; bin i holds edges_[i-1] <= c < edges_[i]
  std::vector<int64_t> depth_counts_;
  std::vector<int64_t> bin_counts_;
};

struct DriftResult {
  ChiSquareTest exits;       // answers per depth
  ChiSquareTest confidence;  // first-exit confidence bins
  // Either test's p-value below alpha / 2 (Bonferroni over the two tests:
  // under no drift, a window raises a false alarm with probability <= alpha).
  bool detected = false;
};

// Tests consecutive, non-overlapping windows of `window` answers against a
// reference. Not thread-safe.
class DriftDetector {
 public:
  DriftDetector(const DriftReference* reference, int window, double alpha);
  // `depth` 1-based (as SampleResult::depth); returns the test when this
  // answer completed a window.
  std::optional<DriftResult> Observe(int depth, float first_confidence);
  int window() const { return window_; }
  double alpha() const { return alpha_; }

 private:
  const DriftReference* reference_;
  int window_;
  double alpha_;
  int seen_ = 0;
  std::vector<int64_t> depths_;
  std::vector<int64_t> bins_;
};

// One shadowed request: every model exit's scores (final last) and the
// answer that was served.
struct ShadowRow {
  std::vector<ExitScores> exits;
  int served_label = 0;
  bool disagrees() const { return served_label != exits.back().label; }
};

// The most recent shadowed requests, at most `capacity`. Not thread-safe.
class ShadowWindow {
 public:
  explicit ShadowWindow(int capacity) : capacity_(capacity) {}
  void Add(ShadowRow row);
  int size() const { return static_cast<int>(rows_.size()); }
  int disagreements() const { return disagreements_; }
  double rate() const { return rows_.empty() ? 0 : double(disagreements_) / rows_.size(); }
  // One-sided Clopper-Pearson upper bound on the disagreement probability.
  double Upper(double confidence) const;
  // The window as a calibration table labelled with the full network's
  // answers (the planning input of a live re-plan); FAILED_PRECONDITION
  // when empty or when num_classes is beyond CalibrationTable::kMaxClasses.
  absl::StatusOr<CalibrationTable> ToTable(int num_classes) const;

 private:
  int capacity_;
  std::deque<ShadowRow> rows_;
  int disagreements_ = 0;
};

}  // namespace hapi
