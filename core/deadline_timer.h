// Runs short callbacks at given times, on one thread of its own. The server
// uses it to answer a progressive call from the exits it has streamed when the
// call's deadline comes while the executor is still inside a stage.
//
// (gRPC's public callback Alarm in the gRPC this project builds against runs
// its callbacks on gRPC's internal executor, which delivered them up to a
// stage late under load: a deadline has to be kept by a thread that is free.)
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace hapi {

class DeadlineTimer {
 public:
  DeadlineTimer();
  // Joins the thread; callbacks not yet due never run.
  ~DeadlineTimer();
  DeadlineTimer(const DeadlineTimer&) = delete;
  DeadlineTimer& operator=(const DeadlineTimer&) = delete;

  using Id = uint64_t;
  // Runs `f` at `when` (at once when it is past). `f` runs on the timer's
  // thread with no lock held, and must be short: later callbacks wait for it.
  Id At(absl::Time when, std::function<void()> f);
  // Drops a callback that has not started; false when it ran, runs, or is unknown.
  bool Cancel(Id id);
  size_t pending() const;

 private:
  void Loop();

  mutable absl::Mutex mu_;
  std::map<std::pair<absl::Time, Id>, std::function<void()>> due_ ABSL_GUARDED_BY(mu_);
  std::map<Id, absl::Time> when_ ABSL_GUARDED_BY(mu_);
  Id next_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t changes_ ABSL_GUARDED_BY(mu_) = 0;  // bumped when the earliest entry may be earlier
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once the rest is constructed
};

}  // namespace hapi
