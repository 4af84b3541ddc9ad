// Shared by the bench/ commands: test images as floats, timing, statistics.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <vector>

#include "core/fashion_mnist.h"

namespace hapi::bench {

inline std::vector<float> ToFloatPixels(const ImageSet& set) {
  std::vector<float> out(set.pixels.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = set.pixels[i] / 255.0f;
  return out;
}

inline double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Stats {
  double mean = 0, p50 = 0, p95 = 0, p99 = 0, max = 0;
};

// Nearest-rank percentiles, the same rule as the latency model.
inline Stats Summarise(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    size_t rank = static_cast<size_t>(std::ceil(q * v.size()));
    return v[std::max<size_t>(rank, 1) - 1];
  };
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size();
  s.p50 = at(0.5);
  s.p95 = at(0.95);
  s.p99 = at(0.99);
  s.max = v.back();
  return s;
}

}  // namespace hapi::bench
