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

// The live monitor's children for one variant (server/live_monitor.h).
struct MonitorMetrics {
  enum Skip { kLoad = 0, kQueue = 1, kCpuShare = 2 };
  void Decision(const std::string& reason, const std::string& action);

  std::string variant;
  prometheus::Family<prometheus::Counter>* decisions = nullptr;
  prometheus::Counter* samples = nullptr;
  prometheus::Counter* disagreements = nullptr;
  std::array<prometheus::Counter*, 3> skipped{};  // by Skip
  prometheus::Gauge* window_samples = nullptr;
  prometheus::Gauge* rate = nullptr;
  prometheus::Gauge* upper = nullptr;
  prometheus::Gauge* max_disagreement = nullptr;        // null: the SLA bounds no accuracy
  std::array<prometheus::Gauge*, 2> drift_statistic{};  // exit_ratio, confidence
  std::array<prometheus::Gauge*, 2> drift_p_value{};
  prometheus::Gauge* drift_detected = nullptr;
  prometheus::Counter* drift_alarms = nullptr;
};

class ServerMetrics {
 public:
  explicit ServerMetrics(prometheus::Registry& registry);
  // Creates (or finds) the children of `servable`'s variant and sets its
  // gauges: thresholds, predicted exit ratios, SLA target, variant info.
  std::shared_ptr<VariantMetrics> ForVariant(const Servable& servable);
  // The variant is no longer served: its info gauge drops to 0.
  void Retire(const Servable& servable);
  // The live monitor's children for `servable`'s variant; `max_disagreement`
  // < 0 leaves its limit out; with `loop`, every decision series starts at 0.
  std::shared_ptr<MonitorMetrics> ForMonitor(const Servable& servable, double max_disagreement,
                                             bool loop);

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
  prometheus::Family<prometheus::Counter>& monitor_samples_;
  prometheus::Family<prometheus::Counter>& monitor_disagreements_;
  prometheus::Family<prometheus::Counter>& monitor_skipped_;
  prometheus::Family<prometheus::Gauge>& monitor_window_samples_;
  prometheus::Family<prometheus::Gauge>& monitor_rate_;
  prometheus::Family<prometheus::Gauge>& monitor_upper_;
  prometheus::Family<prometheus::Gauge>& sla_max_disagreement_;
  prometheus::Family<prometheus::Gauge>& drift_statistic_;
  prometheus::Family<prometheus::Gauge>& drift_p_value_;
  prometheus::Family<prometheus::Gauge>& drift_detected_;
  prometheus::Family<prometheus::Counter>& drift_alarms_;
  prometheus::Family<prometheus::Counter>& loop_decisions_;
};

// Exit label: the model exit index, or "final" for the final classifier.
std::string ExitLabel(int exit, int num_exits);

}  // namespace hapi
