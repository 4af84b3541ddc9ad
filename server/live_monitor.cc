#include "server/live_monitor.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/random/distributions.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/certify.h"
#include "core/files.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "grpcpp/grpcpp.h"
#include "hapi/v1/optimizer.grpc.pb.h"

namespace hapi {

namespace {

constexpr int kDecisionsKept = 16;

std::string Now3339() {
  return absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone());
}

// The table `servable`'s variant was planned on (in the precision served).
absl::StatusOr<CalibrationTable> ReferenceTable(const std::string& repository,
                                                const Servable& servable) {
  const RepositoryLayout layout(repository);
  const v1::VariantManifest& v = servable.variant();
  const v1::ModelManifest& model = servable.model();
  const std::string& validation =
      servable.precision() == v1::INT8 && !model.int8_validation_calibration().empty()
          ? model.int8_validation_calibration()
          : model.validation_calibration();
  // A variant planned on live traffic is judged against that traffic.
  const std::string path =
      v.has_live_plan() && !v.live_plan().table_file().empty()
          ? absl::StrCat(layout.VariantDir(v.id()), "/", v.live_plan().table_file())
          : absl::StrCat(layout.ModelDir(v.model()), "/",
                         validation.empty() ? kValidationCalibrationFile : validation);
  HAPI_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  absl::StatusOr<CalibrationTable> table = CalibrationTable::Parse(bytes);
  if (!table.ok()) return absl::DataLossError(absl::StrCat(path, ": ", table.status().message()));
  return table;
}

}  // namespace

absl::StatusOr<LoopMode> ParseLoopMode(absl::string_view name) {
  if (name == "off") return LoopMode::kOff;
  if (name == "alert") return LoopMode::kAlert;
  if (name == "repair") return LoopMode::kRepair;
  return absl::InvalidArgumentError(
      absl::StrCat("--loop must be off, alert or repair, not '", name, "'"));
}

absl::string_view LoopModeName(LoopMode mode) {
  switch (mode) {
    case LoopMode::kOff:
      return "off";
    case LoopMode::kAlert:
      return "alert";
    case LoopMode::kRepair:
      return "repair";
  }
  return "off";
}

absl::Status ValidateLiveMonitorOptions(const LiveMonitorOptions& o) {
  auto bad = [](absl::string_view flag, double value, absl::string_view range) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be ", range, ", not ", value));
  };
  if (!(o.fraction >= 0 && o.fraction <= 1))
    return bad("monitor_fraction", o.fraction, "in [0, 1]");
  if (o.window < 1) return bad("monitor_window", o.window, ">= 1");
  if (!(o.confidence >= 0.5 && o.confidence < 1)) {
    return bad("monitor_confidence", o.confidence, "in [0.5, 1)");
  }
  if (!(o.cpu_share > 0 && o.cpu_share <= 1)) {
    return bad("monitor_cpu_share", o.cpu_share, "in (0, 1]");
  }
  if (o.drift_window < 10) return bad("drift_window", o.drift_window, ">= 10");
  if (!(o.drift_alpha > 0 && o.drift_alpha < 1))
    return bad("drift_alpha", o.drift_alpha, "in (0, 1)");
  if (o.loop_min_samples < 1 || o.loop_min_samples > o.window) {
    return bad("loop_min_samples", o.loop_min_samples, "in [1, --monitor_window]");
  }
  if (o.loop == LoopMode::kRepair && o.optimizer.empty()) {
    return absl::InvalidArgumentError("--loop=repair needs --optimizer (host:port)");
  }
  return absl::OkStatus();
}

double MaxDisagreement(const v1::VariantManifest& v) {
  const v1::Sla& sla = v.sla();
  if (sla.objective() != v1::MIN_LATENCY) return -1;
  if (sla.use_accuracy_drop()) return sla.max_accuracy_drop();
  if (sla.min_accuracy() > 0) return std::max(0.0, v.final_exit_accuracy() - sla.min_accuracy());
  return -1;
}

absl::StatusOr<std::vector<ExitScores>> RunAllExits(const Model& model, const float* pixels) {
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<Activations> x, model.Input(pixels, 1));
  std::vector<ExitScores> out(model.num_exits());
  std::vector<float> probabilities;
  int exit = 0;
  for (int stage = 0; stage < model.num_stages() && exit < model.num_exits(); ++stage) {
    HAPI_RETURN_IF_ERROR(model.RunStage(stage, *x));
    for (; exit < model.num_exits() && model.ExitStage(exit) == stage; ++exit) {
      HAPI_RETURN_IF_ERROR(model.RunHead(exit, *x, &probabilities));
      out[exit] = ScoreProbabilities(probabilities.data(), model.num_classes());
    }
  }
  if (exit != model.num_exits()) {
    return absl::InternalError(absl::StrCat("exit ", exit, " reads no stage in order"));
  }
  return out;
}

struct LiveMonitor::VariantState {
  VariantState(int window) : window(window) {}
  uint64_t serial = 0;
  std::string variant;
  v1::VariantManifest manifest;
  int num_classes = 0;
  std::shared_ptr<MonitorMetrics> metrics;
  double max_disagreement = -1;
  std::unique_ptr<DriftReference> reference;  // null: drift is not tested
  std::unique_ptr<DriftDetector> detector;
  ShadowWindow window;
  int64_t samples = 0, skipped = 0;
  std::optional<DriftResult> last_drift;
  int64_t drift_windows = 0, drift_alarms = 0;
  bool drift_pending = false;  // an alarm the loop has not acted on
};

LiveMonitor::LiveMonitor(LiveMonitorOptions options, std::string repository, ServerMetrics* metrics)
    : options_(std::move(options)), repository_(std::move(repository)), metrics_(metrics) {
  shadow_ = std::thread([this] { ShadowLoop(); });
}

LiveMonitor::~LiveMonitor() { Stop(); }

void LiveMonitor::Stop() {
  if (!stop_.HasBeenNotified()) stop_.Notify();
  if (shadow_.joinable()) shadow_.join();
  std::thread repair;
  {
    absl::MutexLock lock(&mu_);
    repair = std::move(repair_);
  }
  if (repair.joinable()) repair.join();
}

void LiveMonitor::Prepare(const Servable& servable) {
  auto state = std::make_shared<VariantState>(options_.window);
  state->serial = servable.serial();
  state->manifest = servable.variant();
  state->variant = servable.variant().id();
  state->num_classes = servable.executor().model().num_classes();
  state->max_disagreement = MaxDisagreement(servable.variant());
  if (metrics_) {
    state->metrics =
        metrics_->ForMonitor(servable, state->max_disagreement, options_.loop != LoopMode::kOff);
  }
  absl::StatusOr<CalibrationTable> table = ReferenceTable(repository_, servable);
  absl::StatusOr<DriftReference> reference =
      table.ok() ? DriftReference::Create(*table, servable.executor().design())
                 : absl::StatusOr<DriftReference>(table.status());
  if (reference.ok()) {
    state->reference = std::make_unique<DriftReference>(*std::move(reference));
    state->detector = std::make_unique<DriftDetector>(state->reference.get(), options_.drift_window,
                                                      options_.drift_alpha);
  } else {
    LOG(WARNING) << "variant " << state->variant
                 << ": no drift test (no reference behaviour): " << reference.status();
  }
  absl::MutexLock lock(&mu_);
  states_[servable.serial()] = std::move(state);
}

std::shared_ptr<LiveMonitor::VariantState> LiveMonitor::StateOf(uint64_t serial) const {
  auto it = states_.find(serial);
  return it == states_.end() ? nullptr : it->second;
}

void LiveMonitor::Observe(const std::shared_ptr<const Servable>& servable,
                          const std::vector<float>& pixels, const SampleResult& result,
                          const std::function<bool()>& busy) {
  if (result.exits_evaluated == 0) return;
  thread_local absl::InsecureBitGen gen;
  const bool sampled = absl::Bernoulli(gen, options_.fraction);
  const bool skip_load = sampled && busy && busy();
  absl::MutexLock lock(&mu_);
  // A newer variant answering retires the states before it.
  states_.erase(states_.begin(), states_.lower_bound(servable->serial()));
  std::shared_ptr<VariantState> state = StateOf(servable->serial());
  if (!state) return;
  if (state->detector && !result.cut_short && !result.steps.empty()) {
    std::optional<DriftResult> r =
        state->detector->Observe(result.depth, result.steps[0].confidence);
    if (r) {
      state->last_drift = r;
      ++state->drift_windows;
      if (r->detected) {
        ++state->drift_alarms;
        if (!state->drift_pending && options_.loop == LoopMode::kRepair) {
          // Shadowed requests from before the change no longer describe
          // the traffic to re-plan on.
          state->window = ShadowWindow(options_.window);
          if (MonitorMetrics* m = state->metrics.get()) {
            m->window_samples->Set(0);
            m->rate->Set(0);
            m->upper->Set(1);
          }
        }
        state->drift_pending = true;
      }
      if (MonitorMetrics* m = state->metrics.get()) {
        m->drift_statistic[0]->Set(r->exits.statistic);
        m->drift_p_value[0]->Set(r->exits.p_value);
        m->drift_statistic[1]->Set(r->confidence.statistic);
        m->drift_p_value[1]->Set(r->confidence.p_value);
        m->drift_detected->Set(r->detected);
        if (r->detected) m->drift_alarms->Increment();
      }
    }
  }
  if (!sampled) return;
  int skip = -1;
  if (skip_load) {
    skip = MonitorMetrics::kLoad;
  } else if (static_cast<int>(jobs_.size()) >= options_.shadow_queue) {
    skip = pausing_ ? MonitorMetrics::kCpuShare : MonitorMetrics::kQueue;
  }
  if (skip >= 0) {
    ++state->skipped;
    if (state->metrics) state->metrics->skipped[skip]->Increment();
    return;
  }
  jobs_.push_back(ShadowJob{servable, pixels, result.label});
}

void LiveMonitor::ShadowLoop() {
  // Below the serving threads: under load the scheduler runs requests first.
  setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
  while (!stop_.HasBeenNotified()) {
    ShadowJob job;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !jobs_.empty() || stop_.HasBeenNotified();
      };
      // Wakes at least once a second so the loop sees drift alarms too.
      if (!mu_.AwaitWithTimeout(absl::Condition(&ready), absl::Seconds(1))) {
        for (auto& [serial, state] : states_) Check(*state);
        continue;
      }
      if (jobs_.empty()) continue;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    const absl::Time start = absl::Now();
    Shadow(job);
    // The CPU share: a pass of t seconds is followed by t (1 / share - 1)
    // seconds of rest.
    const absl::Duration rest = (absl::Now() - start) * (1 / options_.cpu_share - 1);
    absl::MutexLock lock(&mu_);
    pausing_ = true;
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](absl::Notification* n) { return n->HasBeenNotified(); }, &stop_),
                         rest);
    pausing_ = false;
  }
}

void LiveMonitor::Shadow(const ShadowJob& job) {
  absl::StatusOr<std::vector<ExitScores>> exits =
      RunAllExits(job.servable->executor().model(), job.pixels.data());
  if (!exits.ok()) {
    LOG_EVERY_N(WARNING, 100) << "shadow pass failed: " << exits.status();
    return;
  }
  ShadowRow row{*std::move(exits), job.served_label};
  const bool disagrees = row.disagrees();
  absl::MutexLock lock(&mu_);
  std::shared_ptr<VariantState> state = StateOf(job.servable->serial());
  if (!state) return;  // retired meanwhile
  state->window.Add(std::move(row));
  ++state->samples;
  if (MonitorMetrics* m = state->metrics.get()) {
    m->samples->Increment();
    if (disagrees) m->disagreements->Increment();
    m->window_samples->Set(state->window.size());
    m->rate->Set(state->window.rate());
    m->upper->Set(state->window.Upper(options_.confidence));
  }
  Check(*state);
}

std::optional<LiveMonitor::Trigger> LiveMonitor::Triggered(VariantState& state) {
  const int n = state.window.size();
  if (state.drift_pending) {
    // Repair re-plans on traffic from after the change only.
    if (options_.loop == LoopMode::kRepair && n < options_.loop_min_samples) return std::nullopt;
    const DriftResult& d = *state.last_drift;
    return Trigger{"drift",
                   absl::StrFormat("exit-ratio p=%.3g, confidence p=%.3g (alpha %.3g); %d "
                                   "shadowed requests since",
                                   d.exits.p_value, d.confidence.p_value, options_.drift_alpha, n)};
  }
  if (state.max_disagreement < 0 || n < options_.loop_min_samples) return std::nullopt;
  const double upper = state.window.Upper(options_.confidence);
  if (upper <= state.max_disagreement) return std::nullopt;
  // A bound above the limit means the SLA is not certified live: worth an
  // alert. Re-planning needs more: a variant re-planned to the limit on one
  // sample would fail to certify on the next about half the time, and swap
  // back and forth. Repair acts once the disagreement is above the limit
  // beyond doubt (its lower bound is).
  const double lower = ClopperPearsonLower(state.window.disagreements(), n, options_.confidence);
  if (options_.loop == LoopMode::kRepair && lower <= state.max_disagreement) return std::nullopt;
  return Trigger{"bound",
                 absl::StrFormat("disagreement %d/%d, bounds [%.4f, %.4f] at %.2f, limit %.4f",
                                 state.window.disagreements(), n, lower, upper, options_.confidence,
                                 state.max_disagreement)};
}

void LiveMonitor::Check(VariantState& state) {
  if (options_.loop == LoopMode::kOff || repairing_) return;
  // Only the variant being served: one just swapped out may still hold an
  // alarm, and in-flight requests of it still arrive.
  std::shared_ptr<const Servable> current = servables_ ? servables_->current() : nullptr;
  if (!current || current->serial() != state.serial) return;
  if (absl::Now() < last_decision_ + options_.cooldown) return;
  std::optional<Trigger> trigger = Triggered(state);
  if (!trigger) return;
  state.drift_pending = false;
  if (options_.loop == LoopMode::kAlert) {
    Record(Origin{state.variant, state.metrics}, *trigger, "alert", "", "");
    return;
  }
  absl::StatusOr<CalibrationTable> table = state.window.ToTable(state.num_classes);
  if (!table.ok()) return;
  repairing_ = true;
  last_decision_ = absl::Now();
  if (repair_.joinable()) repair_.join();  // finished: repairing_ was false
  repair_ =
      std::thread([this, from = state.manifest, origin = Origin{state.variant, state.metrics},
                   t = *trigger, bytes = table->Serialize()] { Repair(from, origin, t, bytes); });
}

void LiveMonitor::Record(const Origin& from, const Trigger& trigger, const std::string& action,
                         const std::string& job, const std::string& to) {
  v1::LoopDecision d;
  d.set_time(Now3339());
  d.set_reason(trigger.reason);
  d.set_action(action);
  d.set_from_variant(from.variant);
  d.set_to_variant(to);
  d.set_job(job);
  d.set_detail(trigger.detail);
  LOG(WARNING) << "live monitor: " << action << " (" << trigger.reason << ") variant "
               << d.from_variant() << (to.empty() ? "" : " -> " + to)
               << (job.empty() ? "" : " job " + job) << ": " << trigger.detail;
  if (from.metrics) from.metrics->Decision(trigger.reason, action);
  decisions_.push_back(std::move(d));
  while (decisions_.size() > kDecisionsKept) decisions_.pop_front();
  last_decision_ = absl::Now();
}

void LiveMonitor::Repair(const v1::VariantManifest& from, const Origin& origin,
                         const Trigger& trigger, std::string table) {
  std::string job;
  absl::StatusOr<std::string> to = ReplanAndWait(from, origin, trigger, std::move(table), &job);
  if (to.ok() && servables_ == nullptr) to = absl::InternalError("no servable manager");
  if (to.ok()) {
    absl::Status st = servables_->Load(*to).status();
    if (!st.ok()) to = st;
  }
  absl::MutexLock lock(&mu_);
  if (to.ok()) {
    Record(origin, trigger, "swap", job, *to);
  } else {
    Record(origin, Trigger{trigger.reason, std::string(to.status().ToString())}, "failed", job, "");
  }
  repairing_ = false;
}

absl::StatusOr<std::string> LiveMonitor::ReplanAndWait(const v1::VariantManifest& from,
                                                       const Origin& origin, const Trigger& trigger,
                                                       std::string table, std::string* job_id) {
  auto stub = v1::Optimizer::NewStub(
      grpc::CreateChannel(options_.optimizer, grpc::InsecureChannelCredentials()));
  v1::CreateVariantRequest request;
  request.set_model(from.model());
  request.set_device(from.device());
  *request.mutable_sla() = from.sla();
  request.set_exit_policy(from.exit_policy());
  request.set_per_exit_thresholds(from.search().per_exit_thresholds());
  request.set_live_calibration(std::move(table));
  request.set_live_from_variant(from.id());
  request.set_live_reason(trigger.reason);
  // The shadowed rows ran in the variant's precision: plan in it again.
  request.add_precisions(from.precision());
  v1::Job job;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status st = stub->CreateVariant(&ctx, request, &job);
    if (!st.ok()) {
      return absl::UnavailableError(
          absl::StrCat("CreateVariant at ", options_.optimizer, ": ", st.error_message()));
    }
  }
  *job_id = job.id();
  {
    absl::MutexLock lock(&mu_);
    Record(origin, trigger, "replan", job.id(), "");
  }
  const absl::Time give_up = absl::Now() + options_.repair_timeout;
  while (job.state() == v1::QUEUED || job.state() == v1::RUNNING) {
    if (stop_.WaitForNotificationWithTimeout(absl::Milliseconds(250))) {
      return absl::CancelledError("server shutting down");
    }
    if (absl::Now() > give_up) return absl::DeadlineExceededError("re-plan job timed out");
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::GetJobRequest get;
    get.set_id(*job_id);
    grpc::Status st = stub->GetJob(&ctx, get, &job);
    if (!st.ok()) return absl::UnavailableError(absl::StrCat("GetJob: ", st.error_message()));
  }
  if (job.state() != v1::SUCCEEDED) {
    return absl::AbortedError(absl::StrCat("re-plan job ", job.id(), " ended ",
                                           v1::JobState_Name(job.state()), ": ", job.error()));
  }
  return job.variant();
}

void LiveMonitor::FillStatus(const Servable& current, v1::LiveMonitorStatus* status) const {
  status->set_sample_fraction(options_.fraction);
  status->set_confidence(options_.confidence);
  status->set_drift_alpha(options_.drift_alpha);
  status->set_loop_mode(std::string(LoopModeName(options_.loop)));
  absl::MutexLock lock(&mu_);
  for (const v1::LoopDecision& d : decisions_) *status->add_decisions() = d;
  std::shared_ptr<VariantState> state = StateOf(current.serial());
  status->set_max_disagreement(MaxDisagreement(current.variant()));
  if (!state) return;
  status->set_samples(state->samples);
  status->set_skipped(state->skipped);
  status->set_window_samples(state->window.size());
  status->set_window_disagreements(state->window.disagreements());
  status->set_disagreement_rate(state->window.rate());
  status->set_disagreement_upper(state->window.Upper(options_.confidence));
  status->set_bound_breached(state->max_disagreement >= 0 && state->window.size() > 0 &&
                             status->disagreement_upper() > state->max_disagreement);
  if (state->last_drift) {
    status->set_drift_exit_statistic(state->last_drift->exits.statistic);
    status->set_drift_exit_p_value(state->last_drift->exits.p_value);
    status->set_drift_confidence_statistic(state->last_drift->confidence.statistic);
    status->set_drift_confidence_p_value(state->last_drift->confidence.p_value);
    status->set_drift_detected(state->last_drift->detected);
  } else {
    status->set_drift_exit_p_value(1);
    status->set_drift_confidence_p_value(1);
  }
  status->set_drift_windows(state->drift_windows);
  status->set_drift_alarms(state->drift_alarms);
}

}  // namespace hapi
