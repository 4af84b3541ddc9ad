#include "core/sla.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace hapi {

double StatisticOf(const LatencyPrediction& p, LatencyStatistic s) {
  switch (s) {
    case LatencyStatistic::kMean:
      return p.mean_s;
    case LatencyStatistic::kP50:
      return p.p50_s;
    case LatencyStatistic::kP95:
      return p.p95_s;
    case LatencyStatistic::kP99:
      return p.p99_s;
    case LatencyStatistic::kWorst:
      return p.worst_s;
  }
  return p.mean_s;
}

absl::Status ValidateSla(const Sla& sla) {
  auto finite_nonneg = [](double v) { return std::isfinite(v) && v >= 0; };
  if (!finite_nonneg(sla.latency_budget_s)) {
    return absl::InvalidArgumentError(
        absl::StrCat("latency budget ", sla.latency_budget_s, " s must be finite and >= 0"));
  }
  if (sla.objective == SlaObjective::kMaxAccuracy && sla.latency_budget_s <= 0) {
    return absl::InvalidArgumentError("maximising accuracy needs a latency budget > 0");
  }
  if (!finite_nonneg(sla.min_accuracy) || sla.min_accuracy > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("accuracy floor ", sla.min_accuracy, " must be in [0, 1]"));
  }
  if (std::isnan(sla.max_accuracy_drop) || sla.max_accuracy_drop > 1 ||
      std::isinf(sla.max_accuracy_drop)) {
    return absl::InvalidArgumentError(
        absl::StrCat("accuracy drop ", sla.max_accuracy_drop, " must be in [0, 1]"));
  }
  if (!(sla.accuracy_confidence >= 0.5 && sla.accuracy_confidence < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("accuracy confidence ", sla.accuracy_confidence, " must be in [0.5, 1)"));
  }
  if (!(sla.latency_confidence >= 0.5 && sla.latency_confidence < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("latency confidence ", sla.latency_confidence, " must be in [0.5, 1)"));
  }
  if (!finite_nonneg(sla.min_throughput_rps)) {
    return absl::InvalidArgumentError(
        absl::StrCat("throughput floor ", sla.min_throughput_rps, " must be finite and >= 0"));
  }
  return absl::OkStatus();
}

double AccuracyFloor(const Sla& sla, double final_accuracy) {
  if (sla.objective != SlaObjective::kMinLatency) return 0;
  if (sla.max_accuracy_drop >= 0) return std::max(0.0, final_accuracy - sla.max_accuracy_drop);
  return sla.min_accuracy;
}

double NormalCdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }

double NormalQuantile(double p) {
  // Bisection on the CDF 0.5 * erfc(-z / sqrt(2)): exact to double precision
  // in 100 halvings of [-40, 40].
  double lo = -40, hi = 40;
  for (int i = 0; i < 100; ++i) {
    double mid = 0.5 * (lo + hi);
    (NormalCdf(mid) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

SlaJudge::SlaJudge(const Sla& sla, double final_accuracy)
    : sla_(sla),
      floor_(AccuracyFloor(sla, final_accuracy)),
      z_(sla.accuracy_confidence > 0.5 ? NormalQuantile(sla.accuracy_confidence) : 0.0),
      latency_z_(sla.latency_confidence > 0.5 ? NormalQuantile(sla.latency_confidence) : 0.0) {}

double SlaJudge::LatencyBound(const LatencyPrediction& p) const {
  // The worst case is exact: no margin.
  if (sla_.statistic == LatencyStatistic::kWorst || latency_z_ == 0 || p.num_samples == 0) {
    return StatisticOf(p, sla_.statistic);
  }
  if (sla_.statistic == LatencyStatistic::kMean) {
    return p.mean_s + latency_z_ * MeanLatencyStandardError(p);
  }
  const double q = PercentileQuantile(sla_.statistic);
  return PredictedPercentile(
      p, std::min(1.0, q + latency_z_ * std::sqrt(q * (1 - q) / p.num_samples)));
}

double SlaJudge::AccuracyBound(const LatencyPrediction& p) const {
  if (sla_.objective != SlaObjective::kMinLatency) return p.accuracy;
  double se = sla_.max_accuracy_drop >= 0 ? p.accuracy_drop_se : p.accuracy_se;
  return p.accuracy - z_ * se;
}

bool SlaJudge::Feasible(const LatencyPrediction& p) const { return Violation(p) == 0; }

double SlaJudge::Violation(const LatencyPrediction& p) const {
  double v = 0;
  if (sla_.latency_budget_s > 0) {
    v += std::max(0.0, LatencyBound(p) / sla_.latency_budget_s - 1.0);
  }
  v += std::max(0.0, floor_ - AccuracyBound(p)) * 10;  // 0.1 accuracy ~ 100% over budget
  if (sla_.min_throughput_rps > 0) {
    v += std::max(0.0, 1.0 - p.throughput_rps / sla_.min_throughput_rps);
  }
  return v;
}

bool SlaJudge::Better(const LatencyPrediction& a, const LatencyPrediction& b) const {
  double sa = StatisticOf(a, sla_.statistic), sb = StatisticOf(b, sla_.statistic);
  if (sla_.objective == SlaObjective::kMaxAccuracy) {
    if (a.accuracy != b.accuracy) return a.accuracy > b.accuracy;
    return sa < sb;
  }
  if (sa != sb) return sa < sb;
  return a.accuracy > b.accuracy;
}

std::string DescribeSla(const Sla& sla) {
  std::string out;
  const std::string latency_confidence =
      sla.statistic != LatencyStatistic::kWorst && sla.latency_confidence > 0.5
          ? absl::StrFormat(" at %.0f%% confidence", 100 * sla.latency_confidence)
          : "";
  if (sla.objective == SlaObjective::kMaxAccuracy) {
    out = absl::StrFormat("max accuracy with %s latency <= %.3f ms%s",
                          LatencyStatisticName(sla.statistic), sla.latency_budget_s * 1e3,
                          latency_confidence);
  } else {
    out = absl::StrFormat("min %s latency", LatencyStatisticName(sla.statistic));
    if (sla.max_accuracy_drop >= 0) {
      absl::StrAppendFormat(&out, " with accuracy >= final - %.2f points",
                            100 * sla.max_accuracy_drop);
    } else {
      absl::StrAppendFormat(&out, " with accuracy >= %.2f%%", 100 * sla.min_accuracy);
    }
    if (sla.accuracy_confidence > 0.5) {
      absl::StrAppendFormat(&out, " at %.0f%% confidence", 100 * sla.accuracy_confidence);
    }
    if (sla.latency_budget_s > 0) {
      absl::StrAppendFormat(&out, " and <= %.3f ms%s", sla.latency_budget_s * 1e3,
                            latency_confidence);
    }
  }
  if (sla.min_throughput_rps > 0) {
    absl::StrAppendFormat(&out, ", throughput >= %.0f/s", sla.min_throughput_rps);
  }
  return out;
}

}  // namespace hapi
