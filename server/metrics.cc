#include "server/metrics.h"

#include "absl/strings/str_cat.h"
#include "core/device_profile.h"
#include "core/latency_statistic.h"
#include "server/servable.h"

namespace hapi {
namespace {

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005,
      0.0075, 0.01,    0.015,  0.025,   0.05,  0.1,    0.25,  0.5,   1};
  return *b;
}

// hapi_variant_info's labels: which variant, of which model, on which
// device, in which precision.
prometheus::Labels InfoLabels(const Servable& s) {
  const v1::VariantManifest& v = s.variant();
  return {{"variant", v.id()},
          {"model", v.model()},
          {"device", v.device()},
          {"precision", PrecisionName(s.precision())}};
}

}  // namespace

std::string ExitLabel(int exit, int num_exits) {
  return exit == num_exits - 1 ? "final" : absl::StrCat(exit);
}

ServerMetrics::ServerMetrics(prometheus::Registry& r)
    : requests_(prometheus::BuildCounter()
                    .Name("hapi_requests_total")
                    .Help("Classification requests by variant and gRPC status code")
                    .Register(r)),
      exits_(prometheus::BuildCounter()
                 .Name("hapi_exits_total")
                 .Help("Requests answered at each exit")
                 .Register(r)),
      request_duration_(prometheus::BuildHistogram()
                            .Name("hapi_request_duration_seconds")
                            .Help("Server-side latency of a classification, queue included")
                            .Register(r)),
      queue_duration_(prometheus::BuildHistogram()
                          .Name("hapi_queue_duration_seconds")
                          .Help("Time a request waited for its batch")
                          .Register(r)),
      compute_duration_(prometheus::BuildHistogram()
                            .Name("hapi_compute_duration_seconds")
                            .Help("Network time of a request, by the exit that answered")
                            .Register(r)),
      batch_size_(prometheus::BuildHistogram()
                      .Name("hapi_batch_size")
                      .Help("Requests per executed batch")
                      .Register(r)),
      exit_confidence_(prometheus::BuildHistogram()
                           .Name("hapi_exit_confidence")
                           .Help("Max-softmax confidence seen at each evaluated exit")
                           .Register(r)),
      exit_threshold_(prometheus::BuildGauge()
                          .Name("hapi_exit_threshold")
                          .Help("Confidence threshold of each enabled exit")
                          .Register(r)),
      predicted_exit_ratio_(prometheus::BuildGauge()
                                .Name("hapi_predicted_exit_ratio")
                                .Help("Share of requests the optimizer predicts each exit answers")
                                .Register(r)),
      sla_latency_(prometheus::BuildGauge()
                       .Name("hapi_sla_latency_seconds")
                       .Help("SLA latency budget (statistic label says which)")
                       .Register(r)),
      sla_violations_(prometheus::BuildCounter()
                          .Name("hapi_sla_violations_total")
                          .Help("Requests slower than the SLA budget")
                          .Register(r)),
      pending_(prometheus::BuildGauge()
                   .Name("hapi_pending_requests")
                   .Help("Requests queued or running")
                   .Register(r)),
      variant_info_(prometheus::BuildGauge()
                        .Name("hapi_variant_info")
                        .Help("The variant being served (value 1)")
                        .Register(r)),
      monitor_samples_(prometheus::BuildCounter()
                           .Name("hapi_monitor_samples_total")
                           .Help("Requests shadowed through the whole network")
                           .Register(r)),
      monitor_disagreements_(prometheus::BuildCounter()
                                 .Name("hapi_monitor_disagreements_total")
                                 .Help("Shadowed requests answered otherwise than the full network")
                                 .Register(r)),
      monitor_skipped_(prometheus::BuildCounter()
                           .Name("hapi_monitor_skipped_total")
                           .Help("Sampled requests not shadowed, by reason")
                           .Register(r)),
      monitor_window_samples_(prometheus::BuildGauge()
                                  .Name("hapi_monitor_window_samples")
                                  .Help("Shadowed requests in the monitor's window")
                                  .Register(r)),
      monitor_rate_(prometheus::BuildGauge()
                        .Name("hapi_monitor_disagreement_rate")
                        .Help("Disagreement with the full network over the window")
                        .Register(r)),
      monitor_upper_(prometheus::BuildGauge()
                         .Name("hapi_monitor_disagreement_upper_bound")
                         .Help("Upper confidence bound on the disagreement (bounds the live "
                               "accuracy drop)")
                         .Register(r)),
      sla_max_disagreement_(prometheus::BuildGauge()
                                .Name("hapi_sla_max_disagreement")
                                .Help("The most the disagreement bound may be under the SLA")
                                .Register(r)),
      drift_statistic_(prometheus::BuildGauge()
                           .Name("hapi_drift_statistic")
                           .Help("Chi-square statistic of the last drift window, by test")
                           .Register(r)),
      drift_p_value_(prometheus::BuildGauge()
                         .Name("hapi_drift_p_value")
                         .Help("p-value of the last drift window, by test")
                         .Register(r)),
      drift_detected_(prometheus::BuildGauge()
                          .Name("hapi_drift_detected")
                          .Help("1 when the last drift window rejected homogeneity")
                          .Register(r)),
      drift_alarms_(prometheus::BuildCounter()
                        .Name("hapi_drift_alarms_total")
                        .Help("Drift windows that rejected homogeneity")
                        .Register(r)),
      loop_decisions_(prometheus::BuildCounter()
                          .Name("hapi_loop_decisions_total")
                          .Help("Closed-loop decisions by reason and action")
                          .Register(r)) {}

std::shared_ptr<VariantMetrics> ServerMetrics::ForVariant(const Servable& s) {
  const v1::VariantManifest& v = s.variant();
  const int num_exits = s.model().exits_size();
  auto m = std::make_shared<VariantMetrics>();
  m->requests_family_ = &requests_;
  m->variant_ = v.id();
  const prometheus::Labels base{{"variant", v.id()}};
  m->request_duration_ = &request_duration_.Add(base, LatencyBuckets());
  m->queue_duration_ = &queue_duration_.Add(base, LatencyBuckets());
  m->batch_size_ =
      &batch_size_.Add(base, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128});
  m->pending_ = &pending_.Add(base);
  m->violations_ = &sla_violations_.Add(base);
  // The codes a client sees most, exported as zeros from the start.
  for (absl::StatusCode code :
       {absl::StatusCode::kOk, absl::StatusCode::kInvalidArgument,
        absl::StatusCode::kDeadlineExceeded, absl::StatusCode::kResourceExhausted,
        absl::StatusCode::kCancelled, absl::StatusCode::kInternal}) {
    m->Requests(code);
  }
  // Which exits can answer: the enabled ones and the final classifier.
  std::vector<bool> enabled(num_exits, false);
  for (int e : v.enabled_exits()) enabled[e] = true;
  enabled[num_exits - 1] = true;
  m->exits_.assign(num_exits, nullptr);
  m->compute_.assign(num_exits, nullptr);
  m->confidence_.assign(num_exits, nullptr);
  for (int e = 0; e < num_exits; ++e) {
    if (!enabled[e]) continue;
    prometheus::Labels l{{"variant", v.id()}, {"exit", ExitLabel(e, num_exits)}};
    m->exits_[e] = &exits_.Add(l);
    m->compute_[e] = &compute_duration_.Add(l, LatencyBuckets());
    m->confidence_[e] =
        &exit_confidence_.Add(l, prometheus::Histogram::BucketBoundaries{
                                     0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999});
    double ratio = e < v.predicted_exit_ratios_size() ? v.predicted_exit_ratios(e) : 0.0;
    predicted_exit_ratio_.Add(l).Set(ratio);
  }
  for (int i = 0; i < v.enabled_exits_size() && i < v.thresholds_size(); ++i) {
    exit_threshold_.Add({{"variant", v.id()}, {"exit", ExitLabel(v.enabled_exits(i), num_exits)}})
        .Set(v.thresholds(i));
  }
  const LatencyStatistic statistic =
      LatencyStatisticFromProto(v.sla().statistic()).value_or(LatencyStatistic::kMean);
  if (v.sla().latency_budget_ms() > 0) {
    sla_latency_
        .Add({{"variant", v.id()}, {"statistic", std::string(LatencyStatisticName(statistic))}})
        .Set(v.sla().latency_budget_ms() * 1e-3);
    m->sla_budget_s_ = v.sla().latency_budget_ms() * 1e-3;
  }
  variant_info_.Add(InfoLabels(s)).Set(1);
  for (prometheus::Counter* c : m->exits_) m->exit_baseline_.push_back(c ? c->Value() : 0.0);
  return m;
}

void ServerMetrics::Retire(const Servable& s) { variant_info_.Add(InfoLabels(s)).Set(0); }

std::shared_ptr<MonitorMetrics> ServerMetrics::ForMonitor(const Servable& s,
                                                          double max_disagreement, bool loop) {
  auto m = std::make_shared<MonitorMetrics>();
  m->variant = s.variant().id();
  const prometheus::Labels base{{"variant", m->variant}};
  m->decisions = &loop_decisions_;
  m->samples = &monitor_samples_.Add(base);
  m->disagreements = &monitor_disagreements_.Add(base);
  const char* reasons[] = {"load", "queue", "cpu_share"};
  for (int i = 0; i < 3; ++i) {
    m->skipped[i] = &monitor_skipped_.Add({{"variant", m->variant}, {"reason", reasons[i]}});
  }
  m->window_samples = &monitor_window_samples_.Add(base);
  m->rate = &monitor_rate_.Add(base);
  m->upper = &monitor_upper_.Add(base);
  m->upper->Set(1);  // no sample yet: nothing is bounded
  if (loop) {        // exported from the start, so increase() sees a first decision
    for (const char* reason : {"bound", "drift"}) {
      for (const char* action : {"alert", "replan", "swap", "failed"}) {
        loop_decisions_.Add({{"variant", m->variant}, {"reason", reason}, {"action", action}});
      }
    }
  }
  if (max_disagreement >= 0) {
    m->max_disagreement = &sla_max_disagreement_.Add(base);
    m->max_disagreement->Set(max_disagreement);
  }
  const char* tests[] = {"exit_ratio", "confidence"};
  for (int i = 0; i < 2; ++i) {
    m->drift_statistic[i] = &drift_statistic_.Add({{"variant", m->variant}, {"test", tests[i]}});
    m->drift_p_value[i] = &drift_p_value_.Add({{"variant", m->variant}, {"test", tests[i]}});
    m->drift_p_value[i]->Set(1);
  }
  m->drift_detected = &drift_detected_.Add(base);
  m->drift_alarms = &drift_alarms_.Add(base);
  return m;
}

void MonitorMetrics::Decision(const std::string& reason, const std::string& action) {
  decisions->Add({{"variant", variant}, {"reason", reason}, {"action", action}}).Increment();
}

prometheus::Counter& VariantMetrics::Requests(absl::StatusCode code) {
  const int i = static_cast<int>(code);
  if (i < 0 || i >= kNumStatusCodes) return Requests(absl::StatusCode::kUnknown);
  prometheus::Counter* c = requests_[i].load(std::memory_order_acquire);
  if (c == nullptr) {
    c = &requests_family_->Add({{"variant", variant_}, {"code", absl::StatusCodeToString(code)}});
    requests_[i].store(c, std::memory_order_release);
  }
  return *c;
}

void VariantMetrics::RequestDone(absl::StatusCode code, double seconds) {
  Requests(code).Increment();
  if (code == absl::StatusCode::kOk) {
    request_duration_->Observe(seconds);
    if (sla_budget_s_ > 0 && seconds > sla_budget_s_) violations_->Increment();
  }
}

void VariantMetrics::Answered(int exit, double compute_seconds, double) {
  if (exit >= 0 && exit < static_cast<int>(exits_.size()) && exits_[exit] != nullptr) {
    exits_[exit]->Increment();
    compute_[exit]->Observe(compute_seconds);
  }
}

void VariantMetrics::ExitConfidence(int exit, double confidence) {
  if (exit >= 0 && exit < static_cast<int>(confidence_.size()) && confidence_[exit] != nullptr) {
    confidence_[exit]->Observe(confidence);
  }
}

std::vector<int64_t> VariantMetrics::ExitCounts() const {
  std::vector<int64_t> out;
  for (size_t e = 0; e < exits_.size(); ++e) {
    out.push_back(exits_[e] ? static_cast<int64_t>(exits_[e]->Value() - exit_baseline_[e]) : 0);
  }
  return out;
}

void VariantMetrics::Queued(double seconds) { queue_duration_->Observe(seconds); }
void VariantMetrics::Batch(int size) { batch_size_->Observe(size); }

}  // namespace hapi
