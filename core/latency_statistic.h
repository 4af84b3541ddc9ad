// The latency statistics an SLA can bound, and the nearest-rank rule every
// percentile in the project is read with. The one place that spells their
// names ("mean", "p50", ...), their quantiles and their hapi.v1 values: the
// CLI, the optimizer, the server's metrics labels and the search all agree
// because they all read them from here.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "hapi/v1/optimizer.pb.h"

namespace hapi {

enum class LatencyStatistic { kMean, kP50, kP95, kP99, kWorst };

// "mean", "p50", "p95", "p99", "worst": flag values, CSV headers, metric labels.
absl::string_view LatencyStatisticName(LatencyStatistic s);
// INVALID_ARGUMENT listing the names for anything else.
absl::StatusOr<LatencyStatistic> ParseLatencyStatistic(absl::string_view name);

bool IsPercentile(LatencyStatistic s);  // p50, p95, p99
// The quantile a percentile reads: 0.5, 0.95, 0.99; 0 for the mean and the
// worst case, which are not read at a rank.
double PercentileQuantile(LatencyStatistic s);

// LATENCY_STATISTIC_UNSPECIFIED reads as the mean (the proto's documented
// default); values outside the enum are INVALID_ARGUMENT.
absl::StatusOr<LatencyStatistic> LatencyStatisticFromProto(v1::LatencyStatistic proto);
v1::LatencyStatistic LatencyStatisticToProto(LatencyStatistic s);

// The nearest-rank rule: the 1-based rank of the q-quantile (0 < q <= 1) of
// `n` samples, ceil(q n), at least 1. Percentiles of measured samples and of
// predicted latency distributions both use it, so they are comparable.
int64_t NearestRank(double q, int64_t n);
// The nearest-rank q-quantile of `sorted` (ascending); 0 when it is empty.
double NearestRankPercentile(absl::Span<const double> sorted, double q);

}  // namespace hapi
