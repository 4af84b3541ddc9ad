// Dynamic batching in front of the executor. Requests wait in a bounded queue;
// a worker takes up to max_batch requests for the same servable (waiting at
// most max_wait for the batch to fill; with max_wait 0 it takes whatever is
// queued when it frees up, so batches form only under load), runs them
// through the executor with exit compaction, and answers each request the
// moment its sample exits.
//
// With batching off (max_batch 1) and run_inline, a request that finds an
// idle execution slot and nobody queued ahead of it runs on the submitting
// thread instead: no hand-off to a worker and back, which at batch 1 is a
// large share of a request's time outside the network (not for progressive
// requests, see on_step). At most `workers` requests execute at once either
// way.
//
// Warm threads only: a servable is warmed up (every stage and head of its
// design run once) on every worker before it serves (WarmUpWorkers), and a
// submitting thread runs a request inline only once it has warmed that
// servable itself. A thread's first request for a servable goes to a worker;
// the thread then warms up, off that request's path, for the next ones.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/executor.h"
#include "server/servable.h"

namespace hapi {

struct InferenceOutcome {
  absl::Status status;  // OK, DEADLINE_EXCEEDED, CANCELLED, INTERNAL
  SampleResult result;
  double queue_s = 0;
  double compute_s = 0;
  int batch_size = 0;
};

struct InferenceRequest {
  std::shared_ptr<const Servable> servable;
  std::vector<float> pixels;  // the model's input shape, in [0,1]
  absl::Time deadline = absl::InfiniteFuture();
  absl::Time enqueued;
  // Optional: every exit evaluated, in order (progressive streaming). A
  // request with on_step never runs inline: a streaming call's messages leave
  // only once its handler has returned.
  std::function<void(const ExitStep&)> on_step;
  // Exactly once, from a worker thread, as soon as the sample has its answer.
  std::function<void(const InferenceOutcome&)> on_done;
  // Set by the caller when the client went away: the sample stops at the
  // next exit boundary.
  std::shared_ptr<std::atomic<bool>> cancelled;
};

struct BatcherOptions {
  int max_batch = 1;  // 1 = no batching
  absl::Duration max_wait = absl::ZeroDuration();
  int queue_capacity = 256;  // queued requests beyond this are refused
  int workers = 1;           // batches executing at once
  bool run_inline = true;    // see above; only with max_batch 1
  // Optional: every request answered from an exit, from the thread that
  // answered it, after its on_done (the live monitor).
  std::function<void(const InferenceRequest&, const SampleResult&)> on_answered;
};

class Batcher {
 public:
  explicit Batcher(BatcherOptions options);
  ~Batcher();  // answers queued requests UNAVAILABLE and joins the workers

  // RESOURCE_EXHAUSTED at once when the queue is full; otherwise the request
  // is answered through on_done: later from a worker, or before Submit
  // returns when it ran inline.
  absl::Status Submit(std::unique_ptr<InferenceRequest> request);
  int queued() const;

  // Runs `servable`'s warm-up on every worker thread, at batch 1 and at
  // max_batch, and returns once all are done (the first error, if any).
  // Requests keep flowing meanwhile; a worker warms up between batches.
  absl::Status WarmUpWorkers(const Servable& servable);
  const BatcherOptions& options() const { return options_; }

 private:
  void WorkerLoop(int worker);
  void RunBatch(std::vector<std::unique_ptr<InferenceRequest>> batch);
  void RunWarmUp(int worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BatcherOptions options_;
  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<InferenceRequest>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int executing_ ABSL_GUARDED_BY(mu_) = 0;  // batches running, inline or on workers
  // The warm-up in progress (WarmUpWorkers), and the workers yet to run it.
  const Servable* warm_up_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::vector<bool> warm_up_pending_ ABSL_GUARDED_BY(mu_);
  int warm_ups_left_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status warm_up_status_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_;  // constant after construction
};

}  // namespace hapi
