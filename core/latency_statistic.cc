#include "core/latency_statistic.h"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace hapi {
namespace {

struct StatisticInfo {
  LatencyStatistic statistic;
  absl::string_view name;
  v1::LatencyStatistic proto;
  double quantile;  // 0: not a percentile
};

// Indexed by LatencyStatistic.
constexpr StatisticInfo kStatistics[] = {
    {LatencyStatistic::kMean, "mean", v1::MEAN, 0},
    {LatencyStatistic::kP50, "p50", v1::P50, 0.50},
    {LatencyStatistic::kP95, "p95", v1::P95, 0.95},
    {LatencyStatistic::kP99, "p99", v1::P99, 0.99},
    {LatencyStatistic::kWorst, "worst", v1::WORST, 0},
};

constexpr bool IndexedByStatistic() {
  for (int i = 0; i < static_cast<int>(std::size(kStatistics)); ++i) {
    if (static_cast<int>(kStatistics[i].statistic) != i) return false;
  }
  return true;
}
static_assert(IndexedByStatistic(), "kStatistics must list the statistics in enum order");

const StatisticInfo& Info(LatencyStatistic s) { return kStatistics[static_cast<int>(s)]; }

}  // namespace

absl::string_view LatencyStatisticName(LatencyStatistic s) { return Info(s).name; }

absl::StatusOr<LatencyStatistic> ParseLatencyStatistic(absl::string_view name) {
  for (const StatisticInfo& info : kStatistics) {
    if (info.name == name) return info.statistic;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown latency statistic '", name, "' (",
      absl::StrJoin(
          kStatistics, ", ",
          [](std::string* out, const StatisticInfo& info) { absl::StrAppend(out, info.name); }),
      ")"));
}

bool IsPercentile(LatencyStatistic s) { return Info(s).quantile > 0; }

double PercentileQuantile(LatencyStatistic s) { return Info(s).quantile; }

absl::StatusOr<LatencyStatistic> LatencyStatisticFromProto(v1::LatencyStatistic proto) {
  if (proto == v1::LATENCY_STATISTIC_UNSPECIFIED) return LatencyStatistic::kMean;
  for (const StatisticInfo& info : kStatistics) {
    if (info.proto == proto) return info.statistic;
  }
  return absl::InvalidArgumentError("unknown latency statistic");
}

v1::LatencyStatistic LatencyStatisticToProto(LatencyStatistic s) { return Info(s).proto; }

int64_t NearestRank(double q, int64_t n) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(q * n)));
}

double NearestRankPercentile(absl::Span<const double> sorted, double q) {
  if (sorted.empty()) return 0;
  const int64_t rank = std::min<int64_t>(NearestRank(q, sorted.size()), sorted.size());
  return sorted[rank - 1];
}

}  // namespace hapi
