#include "server/batcher.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "server/metrics.h"

namespace hapi {

namespace {
BatcherOptions Clamped(BatcherOptions o) {
  o.max_batch = std::max(1, o.max_batch);
  o.workers = std::max(1, o.workers);
  o.queue_capacity = std::max(1, o.queue_capacity);
  if (o.max_wait < absl::ZeroDuration()) o.max_wait = absl::ZeroDuration();
  return o;
}
}  // namespace

Batcher::Batcher(BatcherOptions options) : options_(Clamped(options)) {
  {
    absl::MutexLock lock(&mu_);
    warm_up_pending_.assign(options_.workers, false);
  }
  for (int i = 0; i < options_.workers; ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

Batcher::~Batcher() {
  std::deque<std::unique_ptr<InferenceRequest>> left;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    left.swap(queue_);
  }
  for (auto& r : left) {
    InferenceOutcome out;
    out.status = absl::UnavailableError("server shutting down");
    if (r->servable->metrics()) r->servable->metrics()->PendingAdd(-1);
    r->on_done(out);
  }
  for (std::thread& t : workers_) t.join();
}

int Batcher::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

absl::Status Batcher::Submit(std::unique_ptr<InferenceRequest> request) {
  request->enqueued = absl::Now();
  VariantMetrics* metrics = request->servable->metrics();
  bool run_here = false, warm_here = false;
  {
    absl::ReleasableMutexLock lock(&mu_);
    if (stopping_) return absl::UnavailableError("server shutting down");
    run_here = options_.run_inline && options_.max_batch == 1 && queue_.empty() &&
               executing_ < options_.workers && !request->on_step;
    // A cold thread hands its first request to a (warm) worker instead.
    warm_here = run_here && !request->servable->WarmOnThisThread();
    run_here = run_here && !warm_here;
    if (!run_here && static_cast<int>(queue_.size()) >= options_.queue_capacity) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "server queue is full (", options_.queue_capacity, " requests); retry later"));
    }
    if (metrics) metrics->PendingAdd(1);  // before a worker can take it
    if (!run_here) {
      std::shared_ptr<const Servable> servable = warm_here ? request->servable : nullptr;
      queue_.push_back(std::move(request));
      if (!warm_here) return absl::OkStatus();
      lock.Release();
      // Off the request's path: a worker answers it meanwhile.
      if (absl::Status st = servable->WarmUpThisThread(); !st.ok()) {
        LOG(WARNING) << "warm-up of variant " << servable->variant().id() << " failed: " << st;
      }
      return absl::OkStatus();
    }
    ++executing_;
  }
  std::vector<std::unique_ptr<InferenceRequest>> batch;
  batch.push_back(std::move(request));
  RunBatch(std::move(batch));
  absl::MutexLock lock(&mu_);
  --executing_;
  return absl::OkStatus();
}

absl::Status Batcher::WarmUpWorkers(const Servable& servable) {
  absl::MutexLock lock(&mu_);
  // One warm-up at a time.
  mu_.Await(absl::Condition(
      +[](Batcher* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) { return b->warm_up_ == nullptr; },
      this));
  if (stopping_) return absl::UnavailableError("server shutting down");
  warm_up_ = &servable;
  warm_up_status_ = absl::OkStatus();
  warm_up_pending_.assign(options_.workers, true);
  warm_ups_left_ = options_.workers;
  mu_.Await(absl::Condition(
      +[](Batcher* b)
           ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) { return b->stopping_ || b->warm_ups_left_ == 0; },
      this));
  absl::Status st = stopping_ && warm_ups_left_ > 0 ? absl::UnavailableError("server shutting down")
                                                    : warm_up_status_;
  warm_up_ = nullptr;
  return st;
}

// Called with mu_ held by a worker whose warm-up is pending; runs it unlocked.
void Batcher::RunWarmUp(int worker) {
  warm_up_pending_[worker] = false;
  const Servable* servable = warm_up_;
  mu_.Unlock();
  absl::Status st = servable->WarmUpThisThread(options_.max_batch);
  mu_.Lock();
  if (!st.ok() && warm_up_status_.ok()) {
    warm_up_status_ =
        absl::Status(st.code(), absl::StrCat("warm-up on worker ", worker, ": ", st.message()));
  }
  --warm_ups_left_;
}

void Batcher::WorkerLoop(int worker) {
  while (true) {
    std::vector<std::unique_ptr<InferenceRequest>> batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this, worker]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || warm_up_pending_[worker] ||
               (!queue_.empty() && executing_ < options_.workers);
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      if (warm_up_pending_[worker]) {
        RunWarmUp(worker);
        continue;
      }
      if (options_.max_batch > 1) {
        // Wait (bounded by max_wait from the oldest request's arrival) for
        // the batch to fill.
        const absl::Time until = queue_.front()->enqueued + options_.max_wait;
        auto full = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || static_cast<int>(queue_.size()) >= options_.max_batch;
        };
        mu_.AwaitWithDeadline(absl::Condition(&full), until);
        if (stopping_) return;
        if (queue_.empty()) continue;  // another worker took them
      }
      // Same-servable requests only: during a swap old and new never mix.
      const Servable* servable = queue_.front()->servable.get();
      for (auto it = queue_.begin();
           it != queue_.end() && static_cast<int>(batch.size()) < options_.max_batch;) {
        if ((*it)->servable.get() == servable) {
          batch.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      ++executing_;
    }
    RunBatch(std::move(batch));
    absl::MutexLock lock(&mu_);
    --executing_;
  }
}

void Batcher::RunBatch(std::vector<std::unique_ptr<InferenceRequest>> batch) {
  const int n = static_cast<int>(batch.size());
  const Servable& servable = *batch.front()->servable;
  VariantMetrics* metrics = servable.metrics();
  const absl::Time start = absl::Now();
  const size_t sample_size = servable.executor().model().input_size();
  std::vector<float> pixels(n * sample_size);
  for (int i = 0; i < n; ++i) {
    std::copy(batch[i]->pixels.begin(), batch[i]->pixels.end(), pixels.begin() + i * sample_size);
    if (metrics) metrics->Queued(absl::ToDoubleSeconds(start - batch[i]->enqueued));
  }
  if (metrics) metrics->Batch(n);
  std::vector<bool> answered(n, false);
  std::vector<int> depth_reached(n, 0);

  RunHooks hooks;
  hooks.on_step = [&](int i, const ExitStep& step) {
    depth_reached[i] = step.depth;
    if (metrics) metrics->ExitConfidence(step.exit_index, step.confidence);
    if (batch[i]->on_step) batch[i]->on_step(step);
  };
  hooks.may_continue = [&](int i, int next_depth) {
    const InferenceRequest& r = *batch[i];
    if (r.cancelled && r.cancelled->load()) return false;
    if (r.deadline == absl::InfiniteFuture()) return true;
    // Predicted time to evaluate the next exit, from where this sample is.
    double need = servable.SecondsBetweenDepths(depth_reached[i], next_depth);
    return absl::Now() + absl::Seconds(need) <= r.deadline;
  };
  hooks.on_answer = [&](int i, const SampleResult& result) {
    answered[i] = true;
    InferenceOutcome out;
    out.result = result;
    out.batch_size = n;
    out.queue_s = absl::ToDoubleSeconds(start - batch[i]->enqueued);
    out.compute_s = absl::ToDoubleSeconds(absl::Now() - start);
    if (result.exits_evaluated == 0) {
      out.status =
          batch[i]->cancelled && batch[i]->cancelled->load()
              ? absl::CancelledError("request cancelled")
              : absl::DeadlineExceededError("the deadline leaves no time to reach the first exit");
    } else if (metrics) {
      metrics->Answered(result.exit_index, out.compute_s, result.confidence);
    }
    if (metrics) metrics->PendingAdd(-1);
    batch[i]->on_done(out);
    if (out.status.ok() && options_.on_answered) options_.on_answered(*batch[i], result);
  };
  absl::StatusOr<std::vector<SampleResult>> results =
      servable.executor().Run(pixels.data(), n, hooks);
  for (int i = 0; i < n; ++i) {
    if (answered[i]) continue;
    InferenceOutcome out;
    out.status = results.ok() ? absl::InternalError("sample was not answered") : results.status();
    if (metrics) metrics->PendingAdd(-1);
    batch[i]->on_done(out);
  }
}

}  // namespace hapi
