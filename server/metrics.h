// The server's Prometheus metrics (the dashboard's queries in
// docs/deployment.md read them): families created once from an injected
// registry, per-variant children cached in a VariantMetrics made when the
// variant loads.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace hapi {

class Servable;

// absl::StatusCode values are 0..16.
inline constexpr int kNumStatusCodes = 17;

// Children for one variant. Exit vectors are indexed by model exit.
class VariantMetrics {
 public:
  void RequestDone(absl::StatusCode code, double seconds);
  void Answered(int exit, double compute_seconds, double confidence);
  void ExitConfidence(int exit, double confidence);
  void Queued(double seconds);
  void Batch(int size);
  void PendingAdd(double delta) { pending_->Increment(delta); }
  // Answers per model exit since the variant loaded.
  std::vector<int64_t> ExitCounts() const;

 private:
  friend class ServerMetrics;
  prometheus::Counter& Requests(absl::StatusCode code);

  // All constant after ForVariant, except requests_: children by status
  // code, made on first use (Family::Add is thread-safe and returns the same
  // child for the same labels, so a race to fill a slot is harmless).
  prometheus::Family<prometheus::Counter>* requests_family_ = nullptr;
  std::string variant_;
  std::array<std::atomic<prometheus::Counter*>, kNumStatusCodes> requests_{};
  prometheus::Histogram* request_duration_ = nullptr;
  prometheus::Histogram* queue_duration_ = nullptr;
  prometheus::Histogram* batch_size_ = nullptr;
  prometheus::Gauge* pending_ = nullptr;
  prometheus::Counter* violations_ = nullptr;
  double sla_budget_s_ = 0;  // per-request budget for the violation count (0: none)
  std::vector<prometheus::Counter*> exits_;
  std::vector<prometheus::Histogram*> compute_;
  std::vector<prometheus::Histogram*> confidence_;
  std::vector<double> exit_baseline_;  // counter values when this load began
};

class ServerMetrics {
 public:
  explicit ServerMetrics(prometheus::Registry& registry);
  // Creates (or finds) the children of `servable`'s variant and sets its
  // gauges: thresholds, predicted exit ratios, SLA target, variant info.
  std::shared_ptr<VariantMetrics> ForVariant(const Servable& servable);
  // The variant is no longer served: its info gauge drops to 0.
  void Retire(const Servable& servable);

 private:
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Counter>& exits_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Histogram>& queue_duration_;
  prometheus::Family<prometheus::Histogram>& compute_duration_;
  prometheus::Family<prometheus::Histogram>& batch_size_;
  prometheus::Family<prometheus::Histogram>& exit_confidence_;
  prometheus::Family<prometheus::Gauge>& exit_threshold_;
  prometheus::Family<prometheus::Gauge>& predicted_exit_ratio_;
  prometheus::Family<prometheus::Gauge>& sla_latency_;
  prometheus::Family<prometheus::Counter>& sla_violations_;
  prometheus::Family<prometheus::Gauge>& pending_;
  prometheus::Family<prometheus::Gauge>& variant_info_;
};

// Exit label: the model exit index, or "final" for the final classifier.
std::string ExitLabel(int exit, int num_exits);

}  // namespace hapi
