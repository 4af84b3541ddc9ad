#include "optimizer/metrics.h"

namespace hapi {

OptimizerMetrics::OptimizerMetrics(prometheus::Registry& registry)
    : jobs_(prometheus::BuildCounter()
                .Name("hapi_optimizer_jobs_total")
                .Help("Variant jobs finished, by final state")
                .Register(registry)),
      duration_(prometheus::BuildHistogram()
                    .Name("hapi_optimizer_job_duration_seconds")
                    .Help("Wall time of variant jobs, from start to finish")
                    .Register(registry)
                    .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.25, 0.5, 1,
                                                                     2.5, 5, 10, 30, 60, 300})),
      designs_(prometheus::BuildCounter()
                   .Name("hapi_optimizer_designs_evaluated_total")
                   .Help("Designs scored by the design-space exploration")
                   .Register(registry)
                   .Add({})) {
  for (const char* s : {"succeeded", "failed", "cancelled"}) jobs_.Add({{"state", s}});
}

void OptimizerMetrics::JobFinished(const std::string& state, double seconds,
                                   int64_t designs_evaluated) {
  jobs_.Add({{"state", state}}).Increment();
  if (seconds > 0) duration_.Observe(seconds);
  designs_.Increment(static_cast<double>(designs_evaluated));
}

}  // namespace hapi
