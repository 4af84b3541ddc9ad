// Variant jobs: queued in a bounded queue, run by a fixed set of worker
// threads, state persisted in the StateStore, progress pushed to watchers.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "hapi/v1/optimizer.pb.h"
#include "optimizer/state_store.h"
#include "optimizer/variant_builder.h"
#include "optimizer/variant_spec.h"

namespace hapi {

class OptimizerMetrics;

struct JobManagerOptions {
  int workers = 1;       // concurrent searches
  int max_pending = 16;  // queued jobs beyond this: RESOURCE_EXHAUSTED
};

class JobManager {
 public:
  JobManager(StateStore* store, VariantBuilder* builder, OptimizerMetrics* metrics,
             JobManagerOptions options);
  ~JobManager();  // cancels running jobs and joins the workers

  // Checks that the device is registered and fits the model
  // (VariantBuilder::CheckModelAndDevice), records a QUEUED job and returns
  // it at once. The record is refused (NOT_FOUND) if the device was deleted
  // meanwhile: StateStore::PutJob checks it in the insert.
  absl::StatusOr<v1::Job> Submit(const VariantSpec& spec);
  absl::StatusOr<v1::Job> Get(const std::string& id);
  // Cancels a queued or running job; a finished job is returned unchanged.
  absl::StatusOr<v1::Job> Cancel(const std::string& id);

  // Calls `on_update` with the job's current state now and on every change
  // until it finishes (the last call has a finished state). Returns a handle
  // for Unwatch. `on_update` runs on a worker thread and must not block.
  absl::StatusOr<int64_t> Watch(const std::string& id,
                                std::function<void(const v1::Job&)> on_update);
  void Unwatch(int64_t handle);

 private:
  struct Running {
    v1::Job job;
    VariantSpec spec;
    bool cancel = false;
  };
  // What a running job's progress callback remembers between calls.
  struct ProgressState {
    std::chrono::steady_clock::time_point last_published;
    int64_t evaluated = 0;
  };
  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  void RunJob(const std::string& id) ABSL_LOCKS_EXCLUDED(mu_);
  // Publishes progress (searching: at most every 100 ms); false when the job
  // was cancelled.
  bool ReportProgress(const std::string& id, const std::string& phase, double percent,
                      int64_t designs, ProgressState* state) ABSL_LOCKS_EXCLUDED(mu_);
  // Indexes the published variant and finishes the job SUCCEEDED in one
  // transaction; on failure removes the variant directory and says why.
  absl::Status Succeed(const std::string& id, const v1::VariantManifest& variant, double seconds)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Fail(const std::string& id, const absl::Status& status, double seconds, int64_t evaluated)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Updates the in-memory job, notifies watchers, persists when `persist`.
  void Publish(const std::string& id, const std::function<void(v1::Job*)>& change, bool persist)
      ABSL_LOCKS_EXCLUDED(mu_);

  StateStore* const store_;
  VariantBuilder* const builder_;
  OptimizerMetrics* const metrics_;  // may be null
  const JobManagerOptions options_;

  absl::Mutex mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Running> active_ ABSL_GUARDED_BY(mu_);  // queued or running
  struct Watcher {
    std::string job;
    std::function<void(const v1::Job&)> fn;
  };
  std::map<int64_t, Watcher> watchers_ ABSL_GUARDED_BY(mu_);
  int64_t next_watch_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;  // constant after construction
};

// `job` finished SUCCEEDED by `variant`: what JobManager commits with the
// variant, and what restart recovery commits for a job whose variant was
// published just before the process died.
void MarkSucceeded(const v1::VariantManifest& variant, v1::Job* job);

std::string NowRfc3339();
// A fresh id matching the repository name rule, prefixed by `prefix`.
std::string NewId(const std::string& prefix);

}  // namespace hapi
