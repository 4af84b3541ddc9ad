// The live accuracy monitor, drift detector and closed loop of one served
// model (docs/live-monitor.md).
//  - Monitor: a sampled fraction of answered requests runs again through the
//    whole network (every stage, every exit head) on one low-priority shadow
//    thread, off the request path, within a CPU share; the rate at which the
//    served answer differs from the full network's, with its upper
//    confidence bound, bounds the live accuracy drop from above.
//  - Drift: every answer's exit and first-exit confidence are tested, in
//    windows, against what the variant does on the table it was planned on
//    (core/live_stats.h).
//  - Loop: when the bound exceeds the SLA's limit, or drift is detected, it
//    alerts, or (repair) sends the shadowed requests as a live calibration
//    table to the optimizer, waits for the re-planned variant and swaps it in.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "core/executor.h"
#include "core/live_stats.h"
#include "hapi/v1/inference.pb.h"
#include "server/metrics.h"
#include "server/servable.h"

namespace hapi {

enum class LoopMode { kOff, kAlert, kRepair };
absl::StatusOr<LoopMode> ParseLoopMode(absl::string_view name);  // off | alert | repair
absl::string_view LoopModeName(LoopMode mode);

struct LiveMonitorOptions {
  double fraction = 0;  // of answered requests shadowed; 0: the monitor is off
  int window = 2000;    // shadowed requests the bound is computed over
  double confidence = 0.9;
  double cpu_share = 0.1;   // of one core, at most, for shadow passes
  int drift_window = 1000;  // answers per drift test
  double drift_alpha = 0.001;
  LoopMode loop = LoopMode::kAlert;
  std::string optimizer;  // host:port of hapi-optimizer (repair)
  // Shadowed requests in the window before the loop acts on the bound, or
  // re-plans after drift (the window restarts at a drift alarm: requests
  // from before the change no longer describe the traffic).
  int loop_min_samples = 1000;
  absl::Duration cooldown = absl::Seconds(60);  // between two decisions
  absl::Duration repair_timeout = absl::Minutes(10);
  int shadow_queue = 4;  // sampled requests waiting for the shadow thread
};

// INVALID_ARGUMENT naming the flag that is out of range.
absl::Status ValidateLiveMonitorOptions(const LiveMonitorOptions& options);

// The most the disagreement may be under `variant`'s SLA: its
// max_accuracy_drop, or the full network's validation accuracy minus the
// floor; -1 when the SLA bounds no accuracy.
double MaxDisagreement(const v1::VariantManifest& variant);

// Every model exit's scores for one sample, from one pass through every
// stage; the last is the final classifier.
absl::StatusOr<std::vector<ExitScores>> RunAllExits(const Model& model, const float* pixels);

class LiveMonitor {
 public:
  LiveMonitor(LiveMonitorOptions options, std::string repository, ServerMetrics* metrics);
  ~LiveMonitor();  // Stop()
  // Stops the shadow thread and any repair (waiting for them); idempotent.
  void Stop();
  // Where repaired variants are swapped in; set once, before requests flow.
  void set_servables(ServableManager* servables) { servables_ = servables; }

  // Before `servable` serves (from ServableOptions::prepare): its reference
  // behaviour for the drift test and its metrics. A reference that cannot be
  // read leaves drift untested for that variant (logged), never fails it.
  void Prepare(const Servable& servable);
  // An answered request, from the thread that answered it: counted for the
  // drift test and, for a sampled fraction, queued for a shadow pass.
  // `busy()` says whether requests wait in the model's queue; a sample is
  // skipped then.
  void Observe(const std::shared_ptr<const Servable>& servable, const std::vector<float>& pixels,
               const SampleResult& result, const std::function<bool()>& busy);
  void FillStatus(const Servable& current, v1::LiveMonitorStatus* status) const;
  const LiveMonitorOptions& options() const { return options_; }

 private:
  struct VariantState;
  struct ShadowJob {
    std::shared_ptr<const Servable> servable;
    std::vector<float> pixels;
    int served_label = 0;
  };
  struct Trigger {
    std::string reason, detail;
  };
  // The variant a decision is about, and its metrics.
  struct Origin {
    std::string variant;
    std::shared_ptr<MonitorMetrics> metrics;
  };

  void ShadowLoop();
  void Shadow(const ShadowJob& job);
  // With mu_ held: the loop acts on what `state` shows.
  void Check(VariantState& state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::optional<Trigger> Triggered(VariantState& state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Record(const Origin& from, const Trigger& trigger, const std::string& action,
              const std::string& job, const std::string& to) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // On the repair thread: re-plan on `table`, wait, swap in.
  void Repair(const v1::VariantManifest& from, const Origin& origin, const Trigger& trigger,
              std::string table);
  absl::StatusOr<std::string> ReplanAndWait(const v1::VariantManifest& from, const Origin& origin,
                                            const Trigger& trigger, std::string table,
                                            std::string* job_id);
  std::shared_ptr<VariantState> StateOf(uint64_t serial) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const LiveMonitorOptions options_;
  const std::string repository_;
  ServableManager* servables_ = nullptr;  // constant once requests flow
  ServerMetrics* const metrics_;
  absl::Notification stop_;

  mutable absl::Mutex mu_;
  // Prepared and serving variants by servable serial; older ones are
  // dropped once a newer one answers.
  std::map<uint64_t, std::shared_ptr<VariantState>> states_ ABSL_GUARDED_BY(mu_);
  std::deque<ShadowJob> jobs_ ABSL_GUARDED_BY(mu_);
  bool pausing_ ABSL_GUARDED_BY(mu_) = false;  // within the CPU share's pause
  bool repairing_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_decision_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::deque<v1::LoopDecision> decisions_ ABSL_GUARDED_BY(mu_);  // the last few
  std::thread repair_ ABSL_GUARDED_BY(mu_);
  std::thread shadow_;  // constant after construction
};

}  // namespace hapi
