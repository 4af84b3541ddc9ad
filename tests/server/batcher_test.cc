// The Batcher on its own, made deterministic by holding its only worker (or
// its only execution slot) inside a request's on_done callback.
#include "server/batcher.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/servable.h"
#include "tests/server/server_fixture.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace testing {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<const Servable> LoadServable(const std::string& id) {
  auto s = Servable::Load(Fixture().Servables(), id, /*metrics=*/nullptr);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : nullptr;
}

// Outcomes recorded by request index.
class Recorder {
 public:
  std::function<void(const InferenceOutcome&)> OnDone(int index) {
    return [this, index](const InferenceOutcome& out) {
      absl::MutexLock lock(&mu_);
      outcomes_[index] = out;
      order_.push_back(index);
    };
  }
  // Waits until `n` requests were answered.
  bool WaitFor(int n, absl::Duration timeout = absl::Seconds(30)) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return static_cast<int>(order_.size()) >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
  }
  InferenceOutcome outcome(int index) {
    absl::MutexLock lock(&mu_);
    return outcomes_[index];
  }
  std::vector<int> order() {
    absl::MutexLock lock(&mu_);
    return order_;
  }

 private:
  absl::Mutex mu_;
  std::map<int, InferenceOutcome> outcomes_ ABSL_GUARDED_BY(mu_);
  std::vector<int> order_ ABSL_GUARDED_BY(mu_);
};

std::unique_ptr<InferenceRequest> Request(std::shared_ptr<const Servable> servable, int image,
                                          std::function<void(const InferenceOutcome&)> on_done) {
  auto r = std::make_unique<InferenceRequest>();
  r->servable = std::move(servable);
  r->pixels = Fixture().Pixels(image);
  r->on_done = std::move(on_done);
  return r;
}

// A request whose on_done blocks the worker until `release` is notified.
std::unique_ptr<InferenceRequest> Blocker(std::shared_ptr<const Servable> servable,
                                          absl::Notification* started,
                                          absl::Notification* release) {
  return Request(std::move(servable), 0, [started, release](const InferenceOutcome&) {
    started->Notify();
    release->WaitForNotification();
  });
}

TEST(BatcherTest, QueueBeyondCapacityIsRefusedAtOnce) {
  auto servable = LoadServable("v1");
  ASSERT_NE(servable, nullptr);
  BatcherOptions options;
  options.queue_capacity = 2;
  options.workers = 1;
  options.run_inline = false;  // the blocker must hold the worker, not this thread
  auto batcher = std::make_unique<Batcher>(options);
  absl::Notification started, release;
  ASSERT_OK(batcher->Submit(Blocker(servable, &started, &release)));
  started.WaitForNotification();  // the worker is busy and the queue empty
  Recorder rec;
  ASSERT_OK(batcher->Submit(Request(servable, 1, rec.OnDone(1))));
  ASSERT_OK(batcher->Submit(Request(servable, 2, rec.OnDone(2))));
  EXPECT_EQ(batcher->queued(), 2);
  EXPECT_THAT(batcher->Submit(Request(servable, 3, rec.OnDone(3))),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("queue is full")));
  release.Notify();
  ASSERT_TRUE(rec.WaitFor(2));
  EXPECT_OK(rec.outcome(1).status);
  EXPECT_OK(rec.outcome(2).status);
  EXPECT_EQ(rec.order(), (std::vector<int>{1, 2}));  // FIFO
  EXPECT_EQ(rec.outcome(1).result.label, Expected("v1", 1).label);
  EXPECT_EQ(rec.outcome(2).result.exit_index, Expected("v1", 2).exit_index);
  EXPECT_GT(rec.outcome(1).queue_s, 0);
  // Room again.
  EXPECT_OK(batcher->Submit(Request(servable, 3, rec.OnDone(3))));
  ASSERT_TRUE(rec.WaitFor(3));
}

TEST(BatcherTest, BatchesNeverMixServables) {
  auto a = LoadServable("v1");
  auto b = LoadServable("v2");
  ASSERT_TRUE(a && b);
  BatcherOptions options;
  options.max_batch = 4;
  options.max_wait = absl::Milliseconds(1);
  options.workers = 1;
  Batcher batcher(options);
  absl::Notification started, release;
  ASSERT_OK(batcher.Submit(Blocker(a, &started, &release)));
  started.WaitForNotification();
  Recorder rec;
  for (int i = 0; i < 6; ++i) {  // a b a b a b
    ASSERT_OK(batcher.Submit(Request(i % 2 == 0 ? a : b, i, rec.OnDone(i))));
  }
  release.Notify();
  ASSERT_TRUE(rec.WaitFor(6));
  int told_apart = 0;  // requests whose answer depends on the servable
  for (int i = 0; i < 6; ++i) {
    const InferenceOutcome out = rec.outcome(i);
    ASSERT_OK(out.status);
    EXPECT_EQ(out.batch_size, 3) << i;  // the three of its servable
    // The fake model answers alike at any batch size: no float ties.
    const SampleResult& want = Expected(i % 2 == 0 ? "v1" : "v2", i);
    EXPECT_EQ(out.result.exit_index, want.exit_index) << i;
    EXPECT_EQ(out.result.label, want.label) << i;
    told_apart += Expected("v1", i).exit_index != Expected("v2", i).exit_index;
  }
  // Else a request answered by the other servable would pass as well.
  EXPECT_GE(told_apart, 3);
}

TEST(BatcherTest, DeadlineAndCancellation) {
  auto servable = LoadServable("v1");
  ASSERT_NE(servable, nullptr);
  Batcher batcher(BatcherOptions{});
  Recorder rec;
  auto late = Request(servable, 0, rec.OnDone(0));
  late->deadline = absl::Now() - absl::Milliseconds(1);
  ASSERT_OK(batcher.Submit(std::move(late)));
  auto cancelled = Request(servable, 1, rec.OnDone(1));
  cancelled->cancelled = std::make_shared<std::atomic<bool>>(true);
  ASSERT_OK(batcher.Submit(std::move(cancelled)));
  std::vector<ExitStep> steps;
  auto normal = Request(servable, 2, rec.OnDone(2));
  normal->on_step = [&steps](const ExitStep& s) { steps.push_back(s); };
  ASSERT_OK(batcher.Submit(std::move(normal)));
  ASSERT_TRUE(rec.WaitFor(3));
  EXPECT_THAT(rec.outcome(0).status,
              StatusIs(absl::StatusCode::kDeadlineExceeded, HasSubstr("first exit")));
  EXPECT_EQ(rec.outcome(0).result.exits_evaluated, 0);
  EXPECT_THAT(rec.outcome(1).status, StatusIs(absl::StatusCode::kCancelled));
  const InferenceOutcome out = rec.outcome(2);
  ASSERT_OK(out.status);
  const SampleResult& want = Expected("v1", 2);
  ASSERT_EQ(steps.size(), static_cast<size_t>(want.exits_evaluated));
  for (size_t k = 0; k < steps.size(); ++k) {
    EXPECT_EQ(steps[k].depth, static_cast<int>(k) + 1);
    EXPECT_EQ(steps[k].exit_index, want.steps[k].exit_index);
  }
  EXPECT_EQ(out.result.label, want.label);
  EXPECT_EQ(out.batch_size, 1);
}

TEST(BatcherTest, DestructorAnswersQueuedRequestsUnavailable) {
  auto servable = LoadServable("v1");
  ASSERT_NE(servable, nullptr);
  BatcherOptions options;
  options.run_inline = false;
  auto batcher = std::make_unique<Batcher>(options);
  absl::Notification started, release;
  ASSERT_OK(batcher->Submit(Blocker(servable, &started, &release)));
  started.WaitForNotification();
  Recorder rec;
  ASSERT_OK(batcher->Submit(Request(servable, 1, rec.OnDone(1))));
  ASSERT_OK(batcher->Submit(Request(servable, 2, rec.OnDone(2))));
  std::thread destroy([&] { batcher.reset(); });
  // The queued ones are answered before the destructor waits for the busy
  // worker.
  ASSERT_TRUE(rec.WaitFor(2));
  EXPECT_THAT(rec.outcome(1).status, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(rec.outcome(2).status, StatusIs(absl::StatusCode::kUnavailable));
  release.Notify();
  destroy.join();
}

TEST(BatcherTest, IdleSlotRunsTheRequestOnTheSubmittingThread) {
  auto servable = LoadServable("v1");
  ASSERT_NE(servable, nullptr);
  BatcherOptions options;  // batching off, run_inline on: the defaults
  options.workers = 1;
  Batcher batcher(options);
  std::thread::id ran_on;
  InferenceOutcome outcome;
  auto r = Request(servable, 3, [&](const InferenceOutcome& out) {
    ran_on = std::this_thread::get_id();
    outcome = out;
  });
  ASSERT_OK(batcher.Submit(std::move(r)));
  // Answered before Submit returned, on this thread, without queueing.
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  ASSERT_OK(outcome.status);
  EXPECT_EQ(outcome.result.label, Expected("v1", 3).label);
  EXPECT_EQ(outcome.result.exit_index, Expected("v1", 3).exit_index);
  EXPECT_EQ(outcome.batch_size, 1);
}

TEST(BatcherTest, BusySlotsSendRequestsToTheBoundedQueue) {
  auto servable = LoadServable("v1");
  ASSERT_NE(servable, nullptr);
  BatcherOptions options;
  options.workers = 1;
  options.queue_capacity = 1;
  Batcher batcher(options);
  // Another (warm) thread takes the only execution slot, inline.
  absl::Notification started, release;
  std::thread::id holder_id;
  std::thread holder([&] {
    holder_id = std::this_thread::get_id();
    ASSERT_OK(servable->WarmUpThisThread());
    ASSERT_OK(batcher.Submit(Blocker(servable, &started, &release)));
  });
  started.WaitForNotification();
  Recorder rec;
  std::thread::id ran_on;
  ASSERT_OK(batcher.Submit(Request(servable, 1, [&](const InferenceOutcome& out) {
    ran_on = std::this_thread::get_id();
    rec.OnDone(1)(out);
  })));
  // Not run here (the slot is busy): queued, so the queue bound applies.
  EXPECT_EQ(batcher.queued(), 1);
  EXPECT_TRUE(rec.order().empty());
  EXPECT_THAT(batcher.Submit(Request(servable, 2, rec.OnDone(2))),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("queue is full")));
  release.Notify();
  holder.join();
  ASSERT_TRUE(rec.WaitFor(1));
  ASSERT_OK(rec.outcome(1).status);
  EXPECT_EQ(rec.outcome(1).result.label, Expected("v1", 1).label);
  EXPECT_NE(ran_on, std::this_thread::get_id());  // a worker answered it
  EXPECT_NE(ran_on, holder_id);
  EXPECT_GT(rec.outcome(1).queue_s, 0);
}

TEST(BatcherTest, WarmUpWorkersRunsTheServableOnEveryWorker) {
  auto servable = LoadServable("v1");
  ASSERT_NE(servable, nullptr);
  static constexpr int kWorkers = 3;
  BatcherOptions options;
  options.workers = kWorkers;
  options.run_inline = false;
  Batcher batcher(options);
  // Holds all workers at once (so each request is on its own worker), and
  // records whether each one was warm.
  auto on_all_workers = [&](std::vector<bool>* warm) {
    absl::Mutex mu;
    int arrived = 0;
    Recorder rec;
    for (int i = 0; i < kWorkers; ++i) {
      ASSERT_OK(batcher.Submit(Request(servable, i, [&, i](const InferenceOutcome& out) {
        {
          absl::MutexLock lock(&mu);
          (*warm)[i] = servable->WarmOnThisThread();
          ++arrived;
          mu.Await(absl::Condition(
              +[](int* a) { return *a == kWorkers; }, &arrived));
        }
        rec.OnDone(i)(out);  // last: `mu` and `rec` end with on_all_workers
      })));
    }
    ASSERT_TRUE(rec.WaitFor(kWorkers));
  };
  std::vector<bool> before(kWorkers), after(kWorkers);
  on_all_workers(&before);
  EXPECT_THAT(before, ::testing::Each(false)) << "loading warms only the loading thread";
  ASSERT_OK(batcher.WarmUpWorkers(*servable));
  on_all_workers(&after);
  EXPECT_THAT(after, ::testing::Each(true));
}

TEST(BatcherTest, AColdThreadHandsItsFirstRequestToAWorkerAndWarmsUp) {
  auto servable = LoadServable("v1");
  ASSERT_NE(servable, nullptr);
  Batcher batcher(BatcherOptions{});  // run_inline on
  ASSERT_OK(batcher.WarmUpWorkers(*servable));
  std::thread cold([&] {
    for (int i = 0; i < 2; ++i) {
      Recorder rec;
      std::thread::id ran_on;
      bool warm_when_run = false;
      ASSERT_OK(batcher.Submit(Request(servable, i, [&](const InferenceOutcome& out) {
        ran_on = std::this_thread::get_id();
        warm_when_run = servable->WarmOnThisThread();
        rec.OnDone(i)(out);
      })));
      ASSERT_TRUE(rec.WaitFor(1));
      ASSERT_OK(rec.outcome(i).status);
      EXPECT_EQ(rec.outcome(i).result.label, Expected("v1", i).label);
      EXPECT_TRUE(warm_when_run) << "request " << i << " ran on a cold thread";
      // First on a worker, then (warm now) inline.
      EXPECT_EQ(ran_on == std::this_thread::get_id(), i == 1) << "request " << i;
      EXPECT_TRUE(servable->WarmOnThisThread());
    }
  });
  cold.join();
}

}  // namespace
}  // namespace testing
}  // namespace hapi
