// The load generator's shift and observer hooks (client/load_generator.h)
// over a fake LoadClient: requests from shift_after on take the shifted half
// of the images, and `observe` follows the requests sent.
#include "client/load_generator.h"

#include <chrono>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hapi {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Answers image i with label i % kImages: right for the clean half (labels
// 0..kImages-1), and wrong (label + 1) for the shifted half.
constexpr int kImages = 10;

class FakeLoadClient : public LoadClient {
 public:
  grpc::Status Call(const std::vector<int64_t>& images, std::vector<Answer>* answers) override {
    answers->clear();
    for (int64_t i : images) {
      Answer a;
      a.label = static_cast<int>(i % kImages + (i >= kImages ? 1 : 0)) % kImages;
      answers->push_back(a);
    }
    absl::MutexLock lock(&mu_);
    calls_.push_back(images);
    return grpc::Status::OK;
  }
  void Send(const std::vector<int64_t>& images, Done done) override {
    std::vector<Answer> answers;
    grpc::Status status = Call(images, &answers);
    done(status, answers);
  }
  std::vector<std::vector<int64_t>> Calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::vector<int64_t>> calls_ ABSL_GUARDED_BY(mu_);
};

std::vector<int> Labels() {
  std::vector<int> labels;
  for (int i = 0; i < kImages; ++i) labels.push_back(i);
  return labels;
}

TEST(LoadGeneratorTest, RequestsFromShiftAfterOnSendTheShiftedImages) {
  for (int concurrency : {1, 4}) {
    FakeLoadClient client;
    LoadOptions options;
    options.concurrency = concurrency;
    options.count = 50;
    options.progress = false;
    options.shift_after = 20;
    const LoadReport report = RunLoad(&client, kImages, Labels(), options);
    ASSERT_EQ(report.requests(), 50);
    int shifted_calls = 0;
    for (const auto& call : client.Calls()) {
      ASSERT_EQ(call.size(), 1u);
      ASSERT_LT(call[0], 2 * kImages);
      shifted_calls += call[0] >= kImages;
    }
    EXPECT_EQ(shifted_calls, 30) << concurrency;
    // In the order sent: 20 clean, then 30 shifted, each half cycling
    // through its images.
    if (concurrency == 1) {
      const auto calls = client.Calls();
      for (int i = 0; i < 50; ++i) {
        EXPECT_EQ(calls[i][0], i % kImages + (i >= 20 ? kImages : 0)) << i;
      }
    }
    int shifted_samples = 0;
    for (const LoadSample& s : report.samples) {
      shifted_samples += s.shifted;
      EXPECT_EQ(s.label == s.truth, !s.shifted);
    }
    EXPECT_EQ(shifted_samples, 30);
    EXPECT_THAT(SummariseLoad(report),
                HasSubstr("accuracy before the shift 100.00% (20), after 0.00% (30)"));
    EXPECT_THAT(LoadReportJson(report),
                HasSubstr("\"shift\": {\"clean\": 20, \"clean_accuracy\": 1.000000, "
                          "\"shifted\": 30, \"shifted_accuracy\": 0.000000}"));
  }
}

TEST(LoadGeneratorTest, WithoutAShiftTheOutputIsAsBefore) {
  FakeLoadClient client;
  LoadOptions options;
  options.concurrency = 2;
  options.count = 12;
  options.progress = false;
  const LoadReport report = RunLoad(&client, kImages, Labels(), options);
  for (const auto& call : client.Calls()) EXPECT_LT(call[0], kImages);
  EXPECT_THAT(SummariseLoad(report), Not(HasSubstr("shift")));
  EXPECT_THAT(LoadReportJson(report), Not(HasSubstr("shift")));
}

// A client slow enough that the observer keeps up.
class SlowClient : public FakeLoadClient {
 public:
  grpc::Status Call(const std::vector<int64_t>& images, std::vector<Answer>* answers) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return FakeLoadClient::Call(images, answers);
  }
};

TEST(LoadGeneratorTest, ObserveFollowsTheRequestsSent) {
  for (double rate : {0.0, 2000.0}) {  // closed loop, open loop
    SlowClient client;
    LoadOptions options;
    options.concurrency = 2;
    options.rate = rate;
    options.count = 45;
    options.progress = false;
    options.observe_every = 10;
    std::vector<LoadProgress> seen;  // only the observer thread appends
    options.observe = [&seen](const LoadProgress& p) { seen.push_back(p); };
    RunLoad(&client, kImages, Labels(), options);
    ASSERT_FALSE(seen.empty());
    // Marks in increasing order (a slow observer skips to the latest), then
    // the end of the run.
    for (size_t i = 0; i + 1 < seen.size(); ++i) {
      EXPECT_EQ(seen[i].sent % 10, 0) << i;
      EXPECT_LT(seen[i].sent, seen[i + 1].sent) << i;
      EXPECT_LE(seen[i].done, seen[i].sent);
      EXPECT_LE(seen[i].seconds, seen[i + 1].seconds);
    }
    EXPECT_EQ(seen.back().sent, 45);
    EXPECT_EQ(seen.back().done, 45);
  }
}

}  // namespace
}  // namespace hapi
