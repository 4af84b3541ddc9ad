// The early-exit executor against the calibration table: for every sample it
// must answer at the exit, with the label, that the table says the design
// answers — at batch 1 and batched with compaction.
#include "core/executor.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "core/fashion_mnist.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/torch_model.h"
#include "model/trainer.h"
#include "tests/status_matchers.h"
#include "tests/tiny_model.h"

namespace hapi {
namespace {

using ::hapi::testing::StatusIs;

struct Fixture {
  std::shared_ptr<EarlyExitModel> trained;  // weights and calibration tables
  std::shared_ptr<const Model> model;       // the same, ready for inference
  ImageSet test;
  std::vector<float> pixels;  // test images in [0,1]
};

// Trains a tiny model once for the whole test binary (a few seconds).
const Fixture& Shared() {
  static const Fixture* fixture = [] {
    auto* f = new Fixture();
    FashionMnist data = testing::TinyTrainingData(600);
    auto model = testing::TrainTinyModel("tiny", data);
    if (!model.ok()) {
      ADD_FAILURE() << model.status();
      std::abort();
    }
    f->trained = *std::move(model);
    auto served = MakeTorchModel(*f->trained);
    if (!served.ok()) {
      ADD_FAILURE() << served.status();
      std::abort();
    }
    f->model = *std::move(served);
    f->test = data.test;
    f->pixels.resize(f->test.pixels.size());
    for (size_t i = 0; i < f->pixels.size(); ++i) f->pixels[i] = f->test.pixels[i] / 255.0f;
    return f;
  }();
  return *fixture;
}

// Thresholds at the median score of each enabled exit, so that a good share
// of the samples leaves at every exit.
Design MedianDesign(const CalibrationTable& table, std::vector<int> exits, ExitPolicy policy) {
  Design d;
  d.exits = std::move(exits);
  d.policy = policy;
  for (int e : d.exits) {
    std::vector<float> scores;
    for (int s = 0; s < table.num_samples(); ++s) scores.push_back(table.score(policy, e, s));
    std::nth_element(scores.begin(), scores.begin() + scores.size() / 2, scores.end());
    d.thresholds.push_back(scores[scores.size() / 2]);
  }
  return d;
}

struct Expected {
  int exit = 0;
  int label = 0;
  bool near_threshold = false;  // some score within float noise of its threshold
};

Expected Simulate(const CalibrationTable& table, const Design& d, int sample) {
  Expected out;
  for (size_t k = 0; k < d.exits.size(); ++k) {
    float score = table.score(d.policy, d.exits[k], sample);
    if (std::fabs(score - d.thresholds[k]) < 1e-5f) out.near_threshold = true;
    if (score >= d.thresholds[k]) {
      out.exit = d.exits[k];
      out.label = table.predicted(out.exit, sample);
      return out;
    }
  }
  out.exit = table.num_exits() - 1;
  out.label = table.predicted(out.exit, sample);
  return out;
}

// Runs the design over the test images in batches of `batch` and compares
// every answer with the table.
void ExpectMatchesTable(const Design& design, int batch) {
  const Fixture& f = Shared();
  const CalibrationTable& table = f.trained->test_table();
  ASSERT_EQ(table.num_samples(), f.test.size());
  auto executor = EarlyExitExecutor::Create(f.model, design);
  ASSERT_TRUE(executor.ok()) << executor.status();
  int compared = 0, skipped = 0;
  std::vector<int> per_exit(table.num_exits(), 0);
  for (int begin = 0; begin < f.test.size(); begin += batch) {
    int n = std::min(batch, f.test.size() - begin);
    auto results = (*executor)->Run(f.pixels.data() + static_cast<size_t>(begin) * kImagePixels, n);
    ASSERT_TRUE(results.ok()) << results.status();
    ASSERT_EQ(results->size(), static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      Expected want = Simulate(table, design, begin + i);
      if (want.near_threshold) {
        ++skipped;
        continue;
      }
      const SampleResult& got = (*results)[i];
      ++compared;
      ++per_exit[got.exit_index];
      EXPECT_EQ(got.exit_index, want.exit) << "sample " << begin + i << " batch " << batch;
      EXPECT_EQ(got.label, want.label) << "sample " << begin + i << " batch " << batch;
      EXPECT_FALSE(got.cut_short);
      EXPECT_EQ(got.exits_evaluated, got.depth);
      ASSERT_FALSE(got.steps.empty());
      EXPECT_EQ(got.steps.back().exit_index, got.exit_index);
      EXPECT_NEAR(got.confidence, table.confidence(got.exit_index, begin + i), 1e-4);
    }
  }
  EXPECT_LE(skipped, f.test.size() / 100) << "too many samples at a threshold";
  EXPECT_GT(compared, 0);
  // The design must actually exercise early exits, or the test proves little.
  if (!design.exits.empty()) {
    EXPECT_GT(per_exit[design.exits.front()], compared / 10);
    EXPECT_GT(per_exit.back(), 0);
  }
}

TEST(ExecutorTest, BatchOneMatchesCalibrationTable) {
  const CalibrationTable& table = Shared().trained->test_table();
  ExpectMatchesTable(MedianDesign(table, {0, 2, 4}, ExitPolicy::kMaxSoftmax), 1);
}

TEST(ExecutorTest, BatchedWithCompactionMatchesCalibrationTable) {
  const CalibrationTable& table = Shared().trained->test_table();
  ExpectMatchesTable(MedianDesign(table, {0, 2, 4}, ExitPolicy::kMaxSoftmax), 64);
  ExpectMatchesTable(MedianDesign(table, {1, 3}, ExitPolicy::kMaxSoftmax), 37);
}

TEST(ExecutorTest, EntropyAndMarginPoliciesMatchCalibrationTable) {
  const CalibrationTable& table = Shared().trained->test_table();
  ExpectMatchesTable(MedianDesign(table, {1, 3}, ExitPolicy::kEntropy), 16);
  ExpectMatchesTable(MedianDesign(table, {0, 3}, ExitPolicy::kMargin), 1);
}

TEST(ExecutorTest, FinalOnlyAnswersAtTheFinalExit) { ExpectMatchesTable(Design::FinalOnly(), 50); }

TEST(ExecutorTest, EarlySamplesAreAnsweredBeforeTheRestOfTheirBatch) {
  const Fixture& f = Shared();
  Design d = MedianDesign(f.trained->test_table(), {0, 3}, ExitPolicy::kMaxSoftmax);
  auto executor = EarlyExitExecutor::Create(f.model, d);
  ASSERT_TRUE(executor.ok());
  std::vector<int> order_depths;
  std::vector<int> steps_seen(64, 0);
  RunHooks hooks;
  hooks.on_answer = [&](int, const SampleResult& r) { order_depths.push_back(r.depth); };
  hooks.on_step = [&](int sample, const ExitStep&) { ++steps_seen[sample]; };
  auto results = (*executor)->Run(f.pixels.data(), 64, hooks);
  ASSERT_TRUE(results.ok());
  ASSERT_EQ(order_depths.size(), 64u);
  // Answers arrive in depth order: every depth-1 answer before any depth-2 one.
  EXPECT_TRUE(std::is_sorted(order_depths.begin(), order_depths.end()));
  EXPECT_LT(order_depths.front(), order_depths.back());
  for (int i = 0; i < 64; ++i) EXPECT_EQ(steps_seen[i], (*results)[i].exits_evaluated);
}

TEST(ExecutorTest, MayContinueCutsShortFromTheMostConfidentExit) {
  const Fixture& f = Shared();
  Design d = Design::Shared({0, 1, 2}, 1.0f);  // nothing clears 1.0 before the final exit
  auto executor = EarlyExitExecutor::Create(f.model, d);
  ASSERT_TRUE(executor.ok());
  // Sample 1 may not even reach exit 0; every other one is cut after two exits.
  constexpr int kN = 64;
  RunHooks hooks;
  hooks.may_continue = [](int sample, int next_depth) {
    return sample != 1 ? next_depth <= 2 : next_depth <= 0;
  };
  auto results = (*executor)->Run(f.pixels.data(), kN, hooks);
  ASSERT_TRUE(results.ok());
  ASSERT_EQ(results->size(), static_cast<size_t>(kN));
  int first_surer = 0, second_surer = 0;
  for (int i = 0; i < kN; ++i) {
    if (i == 1) continue;
    const SampleResult& a = (*results)[i];
    EXPECT_TRUE(a.cut_short) << "sample " << i;
    EXPECT_EQ(a.exits_evaluated, 2) << "sample " << i;
    ASSERT_EQ(a.steps.size(), 2u) << "sample " << i;
    if (a.steps[0].score == a.steps[1].score) {  // a tie: either is the most confident
      EXPECT_THAT(a.exit_index, ::testing::AnyOf(a.steps[0].exit_index, a.steps[1].exit_index));
      continue;
    }
    const bool first = a.steps[0].score > a.steps[1].score;
    first_surer += first;
    second_surer += !first;
    const ExitStep& best = first ? a.steps[0] : a.steps[1];
    EXPECT_EQ(a.exit_index, best.exit_index) << "sample " << i;
    EXPECT_EQ(a.label, best.label) << "sample " << i;
    EXPECT_EQ(a.confidence, best.confidence) << "sample " << i;
  }
  // Both orders occur, or "the last exit evaluated" (or "the first") would pass.
  EXPECT_GT(first_surer, 0);
  EXPECT_GT(second_surer, 0);
  const SampleResult& b = (*results)[1];
  EXPECT_TRUE(b.cut_short);
  EXPECT_EQ(b.exits_evaluated, 0);
}

TEST(ExecutorTest, FoldedBatchNormGivesTheSameAnswers) {
  const Fixture& f = Shared();
  Design d = MedianDesign(f.trained->test_table(), {1, 3}, ExitPolicy::kMaxSoftmax);
  ModelOptions unfused;
  unfused.fuse_batch_norm = false;
  ModelOptions channels_first;
  channels_first.channels_last = false;
  auto unfused_model = MakeTorchModel(*f.trained, unfused);
  auto channels_first_model = MakeTorchModel(*f.trained, channels_first);
  ASSERT_TRUE(unfused_model.ok() && channels_first_model.ok());
  auto a = EarlyExitExecutor::Create(f.model, d);
  auto b = EarlyExitExecutor::Create(*unfused_model, d);
  auto c = EarlyExitExecutor::Create(*channels_first_model, d);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  auto ra = (*a)->Run(f.pixels.data(), 200);
  auto rb = (*b)->Run(f.pixels.data(), 200);
  auto rc = (*c)->Run(f.pixels.data(), 200);
  ASSERT_TRUE(ra.ok() && rb.ok() && rc.ok());
  int differ = 0;
  for (int i = 0; i < 200; ++i) {
    for (const auto* other : {&*rb, &*rc}) {
      if ((*other)[i].exit_index != (*ra)[i].exit_index) {
        ++differ;  // allowed only on a float tie at a threshold
        continue;
      }
      EXPECT_EQ((*other)[i].label, (*ra)[i].label);
      EXPECT_NEAR((*other)[i].confidence, (*ra)[i].confidence, 1e-4);
    }
  }
  EXPECT_LE(differ, 2);
}

TEST(ExecutorTest, RejectsInvalidDesigns) {
  const Fixture& f = Shared();
  const int final_exit = f.model->manifest().exits_size() - 1;
  EXPECT_THAT(EarlyExitExecutor::Create(f.model, Design::Shared({final_exit}, 0.5f)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(EarlyExitExecutor::Create(f.model, Design::Shared({2, 1}, 0.5f)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(EarlyExitExecutor::Create(nullptr, Design::FinalOnly()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  auto ok = EarlyExitExecutor::Create(f.model, Design::FinalOnly());
  ASSERT_TRUE(ok.ok());
  auto empty = (*ok)->Run(f.pixels.data(), 0);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

}  // namespace
}  // namespace hapi
