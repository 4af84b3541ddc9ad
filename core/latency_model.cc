#include "core/latency_model.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/device_profile.h"
#include "core/status_macros.h"

namespace hapi {

absl::StatusOr<LatencyModel> LatencyModel::Create(const v1::DeviceProfile& profile,
                                                  const v1::ModelManifest& manifest,
                                                  v1::Precision precision) {
  HAPI_RETURN_IF_ERROR(ValidateDeviceProfile(profile, manifest));
  // The model's invariant: exit e reads the output of stage e, and the last
  // exit is the final one.
  if (manifest.exits_size() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("model '", manifest.name(), "' has no exits"));
  }
  if (manifest.exits_size() != manifest.stages_size()) {
    return absl::InvalidArgumentError(absl::StrCat("model '", manifest.name(), "' has ",
                                                   manifest.exits_size(), " exits for ",
                                                   manifest.stages_size(), " stages"));
  }
  for (int e = 0; e < manifest.exits_size(); ++e) {
    if (manifest.exits(e).after_stage() != e) {
      return absl::InvalidArgumentError(
          absl::StrCat("model '", manifest.name(), "': exit ", e, " is not after stage ", e));
    }
  }
  const v1::BatchProfile* found = FindBatch(profile, 1, precision);
  if (found == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device '", profile.name(), "' has no ", PrecisionName(precision), " latencies for model '",
        manifest.name(), "' (hapi-profile --precisions=", PrecisionName(precision), ")"));
  }
  const v1::BatchProfile& b = *found;
  LatencyModel m;
  // Means, not medians: the mean of a sum is the sum of the means, so the
  // predicted mean latency is unbiased even when parts have heavy tails.
  for (const auto& e : b.exits()) m.head_s_.push_back(e.mean_s());
  double total = 0;
  for (const auto& s : b.stages()) m.cumulative_s_.push_back(total += s.mean_s());
  m.overhead_s_ = b.overhead().mean_s();
  return m;
}

double LatencyModel::SecondsBetween(absl::Span<const int> exits, int from, int to) const {
  if (to <= from) return 0;  // nothing to evaluate
  const int enabled = static_cast<int>(exits.size());
  // The model exit evaluated `evaluated`-th along the path (1-based).
  auto exit_at = [&](int evaluated) {
    return evaluated <= enabled ? exits[evaluated - 1] : num_exits() - 1;
  };
  // Stages through exit e are cumulative_s_[e]: exit e reads stage e.
  double t = from == 0 ? overhead_s_ + cumulative_s_[exit_at(to)]
                       : cumulative_s_[exit_at(to)] - cumulative_s_[exit_at(from)];
  for (int d = from + 1; d <= to; ++d) t += head_s_[exit_at(d)];
  return t;
}

double LatencyModel::PathLatency(const Design& design, int depth) const {
  return SecondsBetween(design.exits, 0, depth + 1);
}

absl::StatusOr<LatencyPrediction> LatencyModel::Predict(const Design& design,
                                                        const CalibrationTable& table) const {
  HAPI_RETURN_IF_ERROR(ValidateDesign(design, num_exits()));
  if (table.num_exits() != num_exits()) {
    return absl::InvalidArgumentError(absl::StrCat("calibration table has ", table.num_exits(),
                                                   " exits, the profile ", num_exits()));
  }
  const int depths = static_cast<int>(design.exits.size()) + 1;
  std::vector<int> counts(depths, 0);
  int correct = 0, lost = 0, gained = 0;
  const int final_exit = num_exits() - 1;
  for (int s = 0; s < table.num_samples(); ++s) {
    int depth = 0;
    while (depth < depths - 1 &&
           table.score(design.policy, design.exits[depth], s) < design.thresholds[depth]) {
      ++depth;
    }
    int exit = depth < depths - 1 ? design.exits[depth] : final_exit;
    ++counts[depth];
    const bool right = table.correct(exit, s), final_right = table.reference_correct(s);
    correct += right;
    lost += final_right && !right;
    gained += right && !final_right;
  }
  return FromPathCounts(design, counts, correct, lost, gained);
}

double PredictedPercentile(const LatencyPrediction& p, double q) {
  return PredictedAtRank(p, NearestRank(q, p.num_samples));
}

double PredictedAtRank(const LatencyPrediction& p, int64_t rank) {
  if (p.paths.empty()) return 0;
  int64_t seen = 0;
  for (const auto& [seconds, samples] : p.paths) {
    seen += samples;
    if (seen >= rank) return seconds;
  }
  return p.paths.back().first;
}

double MeanLatencyStandardError(const LatencyPrediction& p) {
  if (p.num_samples == 0) return 0;
  double squares = 0;
  for (const auto& [seconds, samples] : p.paths) {
    squares += samples * (seconds - p.mean_s) * (seconds - p.mean_s);
  }
  return std::sqrt(squares / p.num_samples / p.num_samples);
}

LatencyPrediction LatencyModel::FromPathCounts(const Design& design, const std::vector<int>& counts,
                                               int correct, int lost, int gained) const {
  LatencyPrediction p;
  p.exit_ratio.assign(num_exits(), 0.0);
  int n = 0;
  for (int c : counts) n += c;
  p.num_samples = n;
  if (n == 0) return p;
  p.correct = correct;
  p.lost = lost;
  p.gained = gained;
  p.accuracy = static_cast<double>(correct) / n;
  p.accuracy_se = std::sqrt(p.accuracy * (1 - p.accuracy) / n);
  const double d = static_cast<double>(lost) + gained, diff = static_cast<double>(lost) - gained;
  p.accuracy_drop_se = std::sqrt(std::max(0.0, d - diff * diff / n)) / n;
  // Deeper paths are never faster (more stages, more heads), so the sorted
  // latencies are the paths in depth order, each repeated counts[d] times.
  double sum = 0;
  for (size_t d = 0; d < counts.size(); ++d) {
    if (counts[d] == 0) continue;
    double t = PathLatency(design, static_cast<int>(d));
    p.paths.emplace_back(t, counts[d]);
    sum += t * counts[d];
    int exit = d < design.exits.size() ? design.exits[d] : num_exits() - 1;
    p.exit_ratio[exit] = static_cast<double>(counts[d]) / n;
  }
  p.mean_s = sum / n;
  // A guaranteed bound, not the slowest sample seen: any input may need
  // every enabled head and the full network.
  p.worst_s = PathLatency(design, static_cast<int>(design.exits.size()));
  p.p50_s = PredictedPercentile(p, PercentileQuantile(LatencyStatistic::kP50));
  p.p95_s = PredictedPercentile(p, PercentileQuantile(LatencyStatistic::kP95));
  p.p99_s = PredictedPercentile(p, PercentileQuantile(LatencyStatistic::kP99));
  p.throughput_rps = p.mean_s > 0 ? 1.0 / p.mean_s : 0;
  return p;
}

}  // namespace hapi
