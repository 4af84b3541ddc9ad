// The optimizer's Prometheus metrics (the dashboard's queries in
// docs/deployment.md read them).
#pragma once

#include <string>

#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace hapi {

class OptimizerMetrics {
 public:
  explicit OptimizerMetrics(prometheus::Registry& registry);
  // state: succeeded | failed | cancelled
  void JobFinished(const std::string& state, double seconds, int64_t designs_evaluated);

 private:
  prometheus::Family<prometheus::Counter>& jobs_;
  prometheus::Histogram& duration_;
  prometheus::Counter& designs_;
};

}  // namespace hapi
