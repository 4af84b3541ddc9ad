#include "optimizer/job_manager.h"

#include <chrono>
#include <filesystem>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/files.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "optimizer/metrics.h"

namespace hapi {

std::string NowRfc3339() {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
}

std::string NewId(const std::string& prefix) {
  static std::mt19937_64 rng(std::random_device{}());
  static absl::Mutex mu;
  uint64_t r;
  {
    absl::MutexLock lock(&mu);
    r = rng();
  }
  std::string stamp = absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::UTCTimeZone());
  std::string id = absl::StrFormat("%s-%s-%08x", prefix.substr(0, 36), stamp, r & 0xffffffffULL);
  return absl::AsciiStrToLower(id);
}

void MarkSucceeded(const v1::VariantManifest& variant, v1::Job* job) {
  job->set_state(v1::SUCCEEDED);
  job->set_phase("done");
  job->set_percent(100);
  job->set_variant(variant.id());
  job->set_designs_evaluated(variant.search().designs_evaluated());
  job->clear_error();
  job->set_error_code(0);
  job->set_updated_at(NowRfc3339());
}

JobManager::JobManager(StateStore* store, VariantBuilder* builder, OptimizerMetrics* metrics,
                       JobManagerOptions options)
    : store_(store), builder_(builder), metrics_(metrics), options_(options) {
  for (int i = 0; i < std::max(1, options_.workers); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

JobManager::~JobManager() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& [id, r] : active_) r.cancel = true;
  }
  for (std::thread& t : workers_) t.join();
}

absl::StatusOr<v1::Job> JobManager::Submit(const VariantSpec& spec) {
  HAPI_ASSIGN_OR_RETURN(v1::DeviceProfile profile, store_->GetDevice(spec.device));
  HAPI_RETURN_IF_ERROR(builder_->CheckModelAndDevice(spec, profile));
  v1::Job job;
  job.set_id(NewId("job"));
  job.set_state(v1::QUEUED);
  job.set_phase("queued");
  job.set_model(spec.model);
  job.set_device(spec.device);
  *job.mutable_sla() = spec.request.sla();
  job.set_created_at(NowRfc3339());
  job.set_updated_at(job.created_at());
  {
    absl::MutexLock lock(&mu_);
    if (static_cast<int>(queue_.size()) >= options_.max_pending) {
      return absl::ResourceExhaustedError(absl::StrCat("the optimizer already has ", queue_.size(),
                                                       " queued jobs; try again later"));
    }
  }
  HAPI_RETURN_IF_ERROR(store_->PutJob(job, spec.request));
  Running running{job, spec, false};
  // The table's bytes are stored with the job; in memory its parsed copy
  // (spec.live_table) is all the job needs.
  running.spec.request.clear_live_calibration();
  absl::MutexLock lock(&mu_);
  active_[job.id()] = std::move(running);
  queue_.push_back(job.id());
  LOG(INFO) << "job " << job.id() << " queued: model " << spec.model << " device " << spec.device;
  return job;
}

absl::StatusOr<v1::Job> JobManager::Get(const std::string& id) {
  {
    absl::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it != active_.end()) return it->second.job;
  }
  return store_->GetJob(id);
}

absl::StatusOr<v1::Job> JobManager::Cancel(const std::string& id) {
  bool was_queued = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it == active_.end()) return store_->GetJob(id);  // finished or unknown
    it->second.cancel = true;
    for (auto q = queue_.begin(); q != queue_.end(); ++q) {
      if (*q == id) {
        queue_.erase(q);
        was_queued = true;
        break;
      }
    }
  }
  if (was_queued) {
    Publish(
        id,
        [](v1::Job* j) {
          j->set_state(v1::CANCELLED);
          j->set_phase("cancelled");
          j->set_error("cancelled before it started");
          j->set_error_code(static_cast<int>(absl::StatusCode::kCancelled));
        },
        /*persist=*/true);
    if (metrics_) metrics_->JobFinished("cancelled", 0, 0);
  }
  return Get(id);
}

absl::StatusOr<int64_t> JobManager::Watch(const std::string& id,
                                          std::function<void(const v1::Job&)> on_update) {
  v1::Job snapshot;
  int64_t handle = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it != active_.end()) {
      handle = next_watch_++;
      watchers_[handle] = Watcher{id, on_update};
      snapshot = it->second.job;
    }
  }
  if (handle == 0) {
    absl::StatusOr<v1::Job> done = store_->GetJob(id);
    if (!done.ok()) return done.status();
    on_update(*done);
    return int64_t{0};
  }
  on_update(snapshot);
  return handle;
}

void JobManager::Unwatch(int64_t handle) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(handle);
}

void JobManager::Publish(const std::string& id, const std::function<void(v1::Job*)>& change,
                         bool persist) {
  v1::Job job;
  {
    absl::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it == active_.end()) return;
    change(&it->second.job);
    it->second.job.set_updated_at(NowRfc3339());
    job = it->second.job;
  }
  const bool finished =
      job.state() == v1::SUCCEEDED || job.state() == v1::FAILED || job.state() == v1::CANCELLED;
  // Persist while the job is still in memory: a reader that misses it in
  // active_ then finds the new state in the store, never an older one.
  if (persist && job.state() != v1::SUCCEEDED) {
    if (absl::Status st = store_->UpdateJob(job); !st.ok()) {
      LOG(ERROR) << "job " << id << ": cannot persist state: " << st;
    }
  }
  std::vector<std::function<void(const v1::Job&)>> targets;
  {
    absl::MutexLock lock(&mu_);
    for (auto w = watchers_.begin(); w != watchers_.end();) {
      if (w->second.job != id) {
        ++w;
        continue;
      }
      targets.push_back(w->second.fn);
      w = finished ? watchers_.erase(w) : std::next(w);
    }
    if (finished) active_.erase(id);
  }
  for (auto& fn : targets) fn(job);
}

void JobManager::WorkerLoop() {
  while (true) {
    std::string id;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](JobManager* m)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(m->mu_) { return m->stopping_ || !m->queue_.empty(); },
          this));
      if (stopping_) return;
      id = queue_.front();
      queue_.pop_front();
    }
    RunJob(id);
  }
}

void JobManager::RunJob(const std::string& id) {
  VariantSpec spec;
  {
    absl::MutexLock lock(&mu_);
    auto it = active_.find(id);
    if (it == active_.end()) return;
    spec = it->second.spec;
  }
  const auto start = std::chrono::steady_clock::now();
  Publish(
      id,
      [](v1::Job* j) {
        j->set_state(v1::RUNNING);
        j->set_phase("loading");
      },
      /*persist=*/true);
  LOG(INFO) << "job " << id << " running";

  ProgressState progress{std::chrono::steady_clock::now(), 0};
  auto report = [&](const std::string& phase, double percent, int64_t designs) {
    return ReportProgress(id, phase, percent, designs, &progress);
  };
  if (spec.variant_id.empty()) {
    spec.variant_id = NewId(absl::StrCat(spec.device.substr(0, 24), "-v"));
  }
  absl::StatusOr<v1::DeviceProfile> profile = store_->GetDevice(spec.device);
  absl::StatusOr<v1::VariantManifest> variant =
      profile.ok() ? builder_->Build(spec, *profile, id, report)
                   : absl::StatusOr<v1::VariantManifest>(profile.status());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  absl::Status status = variant.status();
  if (variant.ok()) {
    status = Succeed(id, *variant, seconds);
    if (status.ok()) return;
  }
  Fail(id, status, seconds, progress.evaluated);
}

bool JobManager::ReportProgress(const std::string& id, const std::string& phase, double percent,
                                int64_t designs, ProgressState* state) {
  state->evaluated = designs;
  const auto now = std::chrono::steady_clock::now();
  if (now - state->last_published >= std::chrono::milliseconds(100) || phase != "searching") {
    state->last_published = now;
    Publish(
        id,
        [&](v1::Job* j) {
          j->set_phase(phase);
          j->set_percent(percent);
          j->set_designs_evaluated(designs);
        },
        /*persist=*/false);
  }
  absl::MutexLock lock(&mu_);
  auto it = active_.find(id);
  return it != active_.end() && !it->second.cancel;
}

absl::Status JobManager::Succeed(const std::string& id, const v1::VariantManifest& variant,
                                 double seconds) {
  v1::Job done;
  {
    absl::MutexLock lock(&mu_);
    done = active_[id].job;
  }
  MarkSucceeded(variant, &done);
  // The variant directory is already published; index it and finish the
  // job in one transaction, before anyone is told it succeeded. A crash
  // before this commit leaves the directory and a RUNNING job; restart
  // recovery (RecoverState) commits the two then.
  if (absl::Status committed = store_->CommitVariant(variant, done); !committed.ok()) {
    LOG(ERROR) << "job " << id << ": cannot index variant " << variant.id() << ": " << committed;
    std::error_code ec;
    std::filesystem::remove_all(builder_->layout().VariantDir(variant.id()), ec);
    return committed;
  }
  Publish(
      id, [&](v1::Job* j) { *j = done; }, /*persist=*/false);
  LOG(INFO) << "job " << id << " succeeded in " << seconds << " s: variant " << variant.id() << " ("
            << variant.search().designs_evaluated() << " designs)";
  if (metrics_) metrics_->JobFinished("succeeded", seconds, variant.search().designs_evaluated());
  return absl::OkStatus();
}

void JobManager::Fail(const std::string& id, const absl::Status& status, double seconds,
                      int64_t evaluated) {
  const bool cancelled = absl::IsCancelled(status);
  Publish(
      id,
      [&](v1::Job* j) {
        j->set_state(cancelled ? v1::CANCELLED : v1::FAILED);
        j->set_phase(cancelled ? "cancelled" : "failed");
        j->set_error(std::string(status.message()));
        j->set_error_code(static_cast<int>(status.code()));
      },
      /*persist=*/true);
  LOG(INFO) << "job " << id << (cancelled ? " cancelled: " : " failed: ") << status;
  if (metrics_) metrics_->JobFinished(cancelled ? "cancelled" : "failed", seconds, evaluated);
}

}  // namespace hapi
