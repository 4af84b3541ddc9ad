// Service-level agreements and how a design's prediction is judged by one.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/latency_model.h"
#include "core/latency_statistic.h"

namespace hapi {

enum class SlaObjective {
  kMaxAccuracy,  // highest accuracy with the statistic within the budget
  kMinLatency,   // lowest statistic with accuracy at or above the floor
};

struct Sla {
  // Seconds; required (> 0) for kMaxAccuracy, optional (0 = none) otherwise.
  double latency_budget_s = 0;
  LatencyStatistic statistic = LatencyStatistic::kMean;
  SlaObjective objective = SlaObjective::kMaxAccuracy;
  // kMinLatency floor: absolute accuracy (0..1) ...
  double min_accuracy = 0;
  // ... or, when >= 0, at most this much (0..1) below the final exit's
  // accuracy on the validation split (resolved by ResolveAccuracyFloor).
  double max_accuracy_drop = -1;
  // kMinLatency: the accuracy floor must hold at this one-sided confidence,
  // not just on average over the validation split: a design is feasible when
  // accuracy - z * standard error >= floor, z the normal quantile (0.5: the
  // point estimate). Guards against picking a design whose validation
  // accuracy is high by chance. [0.5, 1).
  double accuracy_confidence = 0.5;
  // A p50/p95/p99 budget must hold at this one-sided confidence: the
  // statistic is read at the upper confidence rank q + z sqrt(q (1 - q) / n)
  // of the validation samples instead of at q, so a design whose share of
  // slow samples sits just under 1 - q is not trusted to stay under it. A
  // mean budget holds for the mean plus z of its standard errors
  // (MeanLatencyStandardError). [0.5, 1); 0.5 = the point estimate. The
  // worst case is exact and unaffected.
  double latency_confidence = 0.5;
  double min_throughput_rps = 0;  // 0 = no floor
};

double StatisticOf(const LatencyPrediction& p, LatencyStatistic s);

// INVALID_ARGUMENT for negative/NaN/inf numbers, a missing budget, floors
// outside [0, 1].
absl::Status ValidateSla(const Sla& sla);

// The absolute accuracy floor of a kMinLatency SLA given the final exit's
// validation accuracy.
double AccuracyFloor(const Sla& sla, double final_accuracy);

// What the optimizer service uses when a request leaves a confidence unset.
inline constexpr double kDefaultSlaConfidence = 0.9;

// The standard normal quantile: NormalQuantile(0.9) = 1.2816.
double NormalQuantile(double p);
// The standard normal distribution function: NormalCdf(1.2816) = 0.9.
double NormalCdf(double z);

// Judges predictions against one SLA.
class SlaJudge {
 public:
  SlaJudge(const Sla& sla, double final_accuracy);

  bool Feasible(const LatencyPrediction& p) const;
  // Strictly better for this SLA's objective (ties broken by the other axis).
  bool Better(const LatencyPrediction& a, const LatencyPrediction& b) const;
  // How far from feasible (0 when feasible): relative budget excess plus
  // accuracy and throughput shortfalls. Guides annealing and local search.
  double Violation(const LatencyPrediction& p) const;
  const Sla& sla() const { return sla_; }
  double accuracy_floor() const { return floor_; }
  // The accuracy the floor is compared with: the estimate minus z standard
  // errors (of the drop when the floor is relative to the final exit).
  double AccuracyBound(const LatencyPrediction& p) const;
  // The statistic the latency budget is compared with: StatisticOf, or for a
  // percentile or the mean at latency_confidence > 0.5 its upper confidence
  // bound.
  double LatencyBound(const LatencyPrediction& p) const;

 private:
  Sla sla_;
  double floor_;
  double z_;
  double latency_z_;
};

std::string DescribeSla(const Sla& sla);

}  // namespace hapi
