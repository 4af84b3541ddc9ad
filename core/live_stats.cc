#include "core/live_stats.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/certify.h"

namespace hapi {
namespace {

// The regularised upper incomplete gamma function Q(a, x), a > 0, x >= 0:
// the power series of P below a + 1, Lentz's continued fraction of Q above
// (both converge fast there), to double precision.
double UpperRegularizedGamma(double a, double x) {
  if (x <= 0) return 1;
  const double log_prefix = a * std::log(x) - x - LogGamma(a);
  if (x < a + 1) {
    double term = 1 / a, sum = term;
    for (int n = 1; n < 10000 && std::abs(term) > std::abs(sum) * 1e-16; ++n) {
      term *= x / (a + n);
      sum += term;
    }
    return std::max(0.0, 1 - sum * std::exp(log_prefix));
  }
  constexpr double kTiny = 1e-300;
  double b = x + 1 - a, c = 1 / kTiny, d = 1 / b, h = d;
  for (int i = 1; i < 10000; ++i) {
    const double an = -i * (i - a);
    b += 2;
    d = an * d + b;
    if (std::abs(d) < kTiny) d = kTiny;
    c = b + an / c;
    if (std::abs(c) < kTiny) c = kTiny;
    d = 1 / d;
    const double delta = d * c;
    h *= delta;
    if (std::abs(delta - 1) < 1e-16) break;
  }
  return std::min(1.0, std::exp(log_prefix) * h);
}

}  // namespace

double ChiSquareSurvival(double x, int dof) { return UpperRegularizedGamma(0.5 * dof, 0.5 * x); }

ChiSquareTest ChiSquareHomogeneity(absl::Span<const int64_t> reference,
                                   absl::Span<const int64_t> observed) {
  ChiSquareTest test;
  double total[2] = {0, 0};
  for (int64_t c : reference) total[0] += c;
  for (int64_t c : observed) total[1] += c;
  const double n = total[0] + total[1];
  if (reference.size() != observed.size() || total[0] <= 0 || total[1] <= 0) return test;
  // A merged category is complete once its smaller expected count,
  // min(total) * column / n, reaches 5.
  const double min_column = 5 * n / std::min(total[0], total[1]);
  std::vector<std::pair<double, double>> merged;
  std::pair<double, double> open = {0, 0};
  for (size_t j = 0; j < reference.size(); ++j) {
    open.first += reference[j];
    open.second += observed[j];
    if (open.first + open.second >= min_column) {
      merged.push_back(open);
      open = {0, 0};
    }
  }
  if (merged.empty()) return test;
  merged.back().first += open.first;  // a short tail joins the last category
  merged.back().second += open.second;
  if (merged.size() < 2) return test;
  for (const auto& [ref, obs] : merged) {
    const double column = ref + obs;
    const double expected[2] = {total[0] * column / n, total[1] * column / n};
    test.statistic += (ref - expected[0]) * (ref - expected[0]) / expected[0] +
                      (obs - expected[1]) * (obs - expected[1]) / expected[1];
  }
  test.dof = static_cast<int>(merged.size()) - 1;
  test.p_value = ChiSquareSurvival(test.statistic, test.dof);
  return test;
}

int AnsweringDepth(const Design& design, const CalibrationTable& table, int sample) {
  for (size_t d = 0; d < design.exits.size(); ++d) {
    if (table.score(design.policy, design.exits[d], sample) >= design.thresholds[d]) {
      return static_cast<int>(d) + 1;
    }
  }
  return static_cast<int>(design.exits.size()) + 1;
}

absl::StatusOr<DriftReference> DriftReference::Create(const CalibrationTable& table,
                                                      const Design& design, int bins) {
  if (absl::Status st = ValidateDesign(design, table.num_exits()); !st.ok()) return st;
  if (bins < 2 || table.num_samples() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("a drift reference needs at least 2 bins and 1 sample, not ", bins, " and ",
                     table.num_samples()));
  }
  const int first_exit = design.exits.empty() ? table.num_exits() - 1 : design.exits.front();
  std::vector<float> confidences(table.num_samples());
  DriftReference ref;
  ref.depth_counts_.assign(design.exits.size() + 1, 0);
  for (int s = 0; s < table.num_samples(); ++s) {
    confidences[s] = table.confidence(first_exit, s);
    ++ref.depth_counts_[AnsweringDepth(design, table, s) - 1];
  }
  std::vector<float> sorted = confidences;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 1; i < bins; ++i) {
    ref.edges_.push_back(sorted[static_cast<size_t>(i) * sorted.size() / bins]);
  }
  ref.bin_counts_.assign(bins, 0);
  for (float c : confidences) ++ref.bin_counts_[ref.ConfidenceBin(c)];
  return ref;
}

int DriftReference::ConfidenceBin(float confidence) const {
  return static_cast<int>(std::upper_bound(edges_.begin(), edges_.end(), confidence) -
                          edges_.begin());
}

DriftDetector::DriftDetector(const DriftReference* reference, int window, double alpha)
    : reference_(reference),
      window_(std::max(1, window)),
      alpha_(alpha),
      depths_(reference->num_depths(), 0),
      bins_(reference->num_bins(), 0) {}

std::optional<DriftResult> DriftDetector::Observe(int depth, float first_confidence) {
  if (depth < 1 || depth > reference_->num_depths()) return std::nullopt;
  ++depths_[depth - 1];
  ++bins_[reference_->ConfidenceBin(first_confidence)];
  if (++seen_ < window_) return std::nullopt;
  DriftResult r;
  r.exits = ChiSquareHomogeneity(reference_->depth_counts(), depths_);
  r.confidence = ChiSquareHomogeneity(reference_->bin_counts(), bins_);
  r.detected = r.exits.p_value < alpha_ / 2 || r.confidence.p_value < alpha_ / 2;
  seen_ = 0;
  std::fill(depths_.begin(), depths_.end(), 0);
  std::fill(bins_.begin(), bins_.end(), 0);
  return r;
}

void ShadowWindow::Add(ShadowRow row) {
  disagreements_ += row.disagrees();
  rows_.push_back(std::move(row));
  while (static_cast<int>(rows_.size()) > capacity_) {
    disagreements_ -= rows_.front().disagrees();
    rows_.pop_front();
  }
}

double ShadowWindow::Upper(double confidence) const {
  if (rows_.empty()) return 1;
  return ClopperPearsonUpper(disagreements_, static_cast<int64_t>(rows_.size()), confidence);
}

absl::StatusOr<CalibrationTable> ShadowWindow::ToTable(int num_classes) const {
  if (rows_.empty()) return absl::FailedPreconditionError("no shadowed requests yet");
  if (num_classes > CalibrationTable::kMaxClasses) {
    return absl::FailedPreconditionError(
        absl::StrCat("the model has ", num_classes, " classes; a calibration table holds at most ",
                     CalibrationTable::kMaxClasses));
  }
  const int num_exits = static_cast<int>(rows_.front().exits.size());
  CalibrationTable table(size(), num_exits, num_classes);
  for (int s = 0; s < size(); ++s) {
    const ShadowRow& row = rows_[s];
    table.SetTrueLabel(s, row.exits.back().label);
    for (int e = 0; e < num_exits; ++e) table.Set(e, s, row.exits[e]);
  }
  return table;
}

}  // namespace hapi
