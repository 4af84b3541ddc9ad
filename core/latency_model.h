// Predicts the latency, accuracy and exit ratios of a design on a device from
// the calibration table and the device profile, without running the network.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/calibration_table.h"
#include "core/design.h"
#include "core/latency_statistic.h"
#include "hapi/v1/device.pb.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

struct LatencyPrediction {
  int num_samples = 0;
  double accuracy = 0;  // 0..1
  // Seconds per request at batch 1; percentiles use the nearest-rank rule
  // (NearestRank) at the quantiles of core/latency_statistic.h.
  double mean_s = 0, p50_s = 0, p95_s = 0, p99_s = 0, worst_s = 0;
  double throughput_rps = 0;  // 1 / mean at batch 1, one request at a time
  // Sampling error of the accuracy estimate: the binomial standard error of
  // `accuracy`, and the paired standard error of (final exit's accuracy -
  // accuracy) over the same samples, from the samples on which the two
  // disagree in correctness (McNemar).
  double accuracy_se = 0;
  double accuracy_drop_se = 0;
  // The counts behind them: samples answered correctly, and the samples the
  // design gets wrong where the final exit is right (`lost`) and the reverse
  // (`gained`). Exact bounds (core/certify.h) start from counts.
  int correct = 0, lost = 0, gained = 0;
  // The latency distribution: (seconds, samples) for each path taken by at
  // least one sample, fastest first. Percentiles at any rank come from it.
  std::vector<std::pair<double, int>> paths;
  // Share of samples answered at each model exit (size = model exits; zero
  // for exits the design does not enable).
  std::vector<double> exit_ratio;
};

// The nearest-rank q-quantile (0 < q <= 1) of the predicted latency.
double PredictedPercentile(const LatencyPrediction& p, double q);
// The predicted latency of the `rank`-th fastest sample (1-based; clamped to
// [1, num_samples]); 0 without samples.
double PredictedAtRank(const LatencyPrediction& p, int64_t rank);
// The standard error of the predicted mean latency as an estimate of the
// mean over new samples: the paths' standard deviation over sqrt(samples).
double MeanLatencyStandardError(const LatencyPrediction& p);

class LatencyModel {
 public:
  // Validates the profile against the model (see ValidateDeviceProfile) and
  // reads its batch-1 table in `precision` (FAILED_PRECONDITION, naming the
  // device and precision, when it has none).
  static absl::StatusOr<LatencyModel> Create(const v1::DeviceProfile& profile,
                                             const v1::ModelManifest& manifest,
                                             v1::Precision precision = v1::FP32);

  int num_exits() const { return static_cast<int>(head_s_.size()); }

  // The one path-latency rule, shared by the search's predictions and the
  // server's deadline checks. Seconds at batch 1 from having evaluated
  // `from` of the enabled `exits` (ascending model exits) to having
  // evaluated `to` of them (from <= to <= exits.size() + 1; the last is the
  // final classifier): every stage in between and every head evaluated on
  // the way. From 0, nothing has run yet, so the per-request overhead counts.
  // 0 when to <= from.
  double SecondsBetween(absl::Span<const int> exits, int from, int to) const;
  // Seconds to leave the network at the design's `depth`-th enabled exit
  // (0-based; depth == exits.size() means the final classifier).
  double PathLatency(const Design& design, int depth) const;

  // Simulates the design over every sample of `table`.
  absl::StatusOr<LatencyPrediction> Predict(const Design& design,
                                            const CalibrationTable& table) const;

  // The same prediction from per-depth sample counts (depth as in
  // PathLatency), the number of correct answers, and the numbers of samples
  // the design gets wrong where the final exit is right (`lost`) and the
  // reverse (`gained`): the search scores designs incrementally and needs no
  // per-sample pass.
  LatencyPrediction FromPathCounts(const Design& design, const std::vector<int>& counts,
                                   int correct, int lost = 0, int gained = 0) const;

 private:
  std::vector<double> head_s_;        // per model exit (final = classifier)
  std::vector<double> cumulative_s_;  // seconds of stages 0..s inclusive
  double overhead_s_ = 0;
};

}  // namespace hapi
