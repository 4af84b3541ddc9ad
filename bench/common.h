// Shared by the bench/ commands: test images as floats, timing, statistics.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/fashion_mnist.h"
#include "core/latency_statistic.h"

namespace hapi::bench {

inline std::vector<float> ToFloatPixels(const ImageSet& set) {
  std::vector<float> out(set.pixels.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = set.pixels[i] / 255.0f;
  return out;
}

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Stats {
  double mean = 0, p50 = 0, p95 = 0, p99 = 0, max = 0;
};

// Nearest-rank percentiles, the same rule as the latency model.
inline Stats Summarise(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  s.p50 = NearestRankPercentile(v, 0.5);
  s.p95 = NearestRankPercentile(v, 0.95);
  s.p99 = NearestRankPercentile(v, 0.99);
  s.max = v.back();
  return s;
}

}  // namespace hapi::bench
