#include "core/deadline_timer.h"

#include <atomic>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hapi {
namespace {

using ::testing::ElementsAre;

TEST(DeadlineTimerTest, RunsCallbacksInTimeOrderNotInsertionOrder) {
  DeadlineTimer timer;
  absl::Mutex mu;
  std::vector<int> order;
  absl::BlockingCounter done(3);
  const absl::Time now = absl::Now();
  for (int k : {3, 1, 2}) {
    timer.At(now + absl::Milliseconds(20 * k), [&, k] {
      {
        absl::MutexLock lock(&mu);
        order.push_back(k);
      }
      done.DecrementCount();
    });
  }
  done.Wait();
  absl::MutexLock lock(&mu);
  EXPECT_THAT(order, ElementsAre(1, 2, 3));
}

TEST(DeadlineTimerTest, ACallbackRunsNoEarlierThanItsTime) {
  DeadlineTimer timer;
  absl::Notification ran;
  absl::Time at_run;
  const absl::Time when = absl::Now() + absl::Milliseconds(30);
  timer.At(when, [&] {
    at_run = absl::Now();
    ran.Notify();
  });
  ran.WaitForNotification();
  EXPECT_GE(at_run, when);
}

TEST(DeadlineTimerTest, APastTimeRunsAtOnce) {
  DeadlineTimer timer;
  absl::Notification ran;
  timer.At(absl::Now() - absl::Seconds(1), [&] { ran.Notify(); });
  EXPECT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
}

TEST(DeadlineTimerTest, CancelledCallbacksNeverRun) {
  DeadlineTimer timer;
  std::atomic<bool> cancelled_ran{false};
  absl::Notification later_ran;
  const DeadlineTimer::Id id =
      timer.At(absl::Now() + absl::Milliseconds(20), [&] { cancelled_ran = true; });
  EXPECT_EQ(timer.pending(), 1u);
  EXPECT_TRUE(timer.Cancel(id));
  EXPECT_FALSE(timer.Cancel(id));
  EXPECT_EQ(timer.pending(), 0u);
  timer.At(absl::Now() + absl::Milliseconds(40), [&] { later_ran.Notify(); });
  later_ran.WaitForNotification();
  EXPECT_FALSE(cancelled_ran);
  EXPECT_EQ(timer.pending(), 0u);
}

TEST(DeadlineTimerTest, DestroyingDropsWhatIsNotDue) {
  std::atomic<bool> ran{false};
  {
    DeadlineTimer timer;
    timer.At(absl::Now() + absl::Hours(1), [&] { ran = true; });
  }
  EXPECT_FALSE(ran);
}

}  // namespace
}  // namespace hapi
