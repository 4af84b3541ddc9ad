#include "core/deadline_timer.h"

namespace hapi {

DeadlineTimer::DeadlineTimer() : thread_([this] { Loop(); }) {}

DeadlineTimer::~DeadlineTimer() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

DeadlineTimer::Id DeadlineTimer::At(absl::Time when, std::function<void()> f) {
  absl::MutexLock lock(&mu_);
  const Id id = next_id_++;
  due_.emplace(std::make_pair(when, id), std::move(f));
  when_.emplace(id, when);
  ++changes_;
  return id;
}

bool DeadlineTimer::Cancel(Id id) {
  absl::MutexLock lock(&mu_);
  auto it = when_.find(id);
  if (it == when_.end()) return false;
  due_.erase(std::make_pair(it->second, id));
  when_.erase(it);
  return true;
}

size_t DeadlineTimer::pending() const {
  absl::MutexLock lock(&mu_);
  return due_.size();
}

void DeadlineTimer::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    const uint64_t seen = changes_;
    auto changed = [this, seen]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || changes_ != seen; };
    if (due_.empty()) {
      mu_.Await(absl::Condition(&changed));
      continue;
    }
    auto first = due_.begin();
    if (absl::Now() < first->first.first) {
      mu_.AwaitWithDeadline(absl::Condition(&changed), first->first.first);
      continue;
    }
    std::function<void()> f = std::move(first->second);
    when_.erase(first->first.second);
    due_.erase(first);
    mu_.Unlock();
    f();
    mu_.Lock();
  }
}

}  // namespace hapi
