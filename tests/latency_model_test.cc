#include "core/latency_model.h"

#include <cmath>
#include <limits>
#include <vector>

#include "core/device_profile.h"
#include "core/latency_statistic.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace {

using ::hapi::testing::IsOk;
using ::hapi::testing::StatusIs;
using ::testing::AllOf;
using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr double kMs = 1e-3;

// Three stages, two early exits and the final classifier.
v1::ModelManifest Manifest() {
  v1::ModelManifest m;
  m.set_name("tiny");
  m.set_full_network_macs(1000);
  for (int s = 0; s < 3; ++s) {
    auto* stage = m.add_stages();
    stage->set_index(s);
    stage->set_macs(300);
    stage->set_layers(2);
    auto* exit = m.add_exits();
    exit->set_index(s);
    exit->set_after_stage(s);
    exit->set_macs(10 * (s + 1));
    exit->set_layers(1);
    exit->set_is_final(s == 2);
  }
  return m;
}

v1::PartLatency Part(double s) {
  v1::PartLatency p;
  p.set_mean_s(s);
  p.set_median_s(s);
  p.set_p95_s(s);
  return p;
}

// Stages 1, 2, 3 ms; heads 0.1, 0.2, 0.3 ms; overhead 0.05 ms.
v1::DeviceProfile Profile() {
  v1::DeviceProfile p;
  p.set_name("dev");
  p.set_model("tiny");
  p.set_model_macs(1000);
  auto* b = p.add_batches();
  b->set_batch_size(1);
  for (int s = 0; s < 3; ++s) {
    *b->add_stages() = Part((s + 1) * kMs);
    *b->add_exits() = Part(0.1 * (s + 1) * kMs);
  }
  *b->mutable_overhead() = Part(0.05 * kMs);
  return p;
}

ExitScores Scores(int label, float max_softmax) {
  ExitScores s;
  s.label = label;
  s.scores[static_cast<int>(ExitPolicy::kMaxSoftmax)] = max_softmax;
  s.scores[static_cast<int>(ExitPolicy::kEntropy)] = 1.0f - max_softmax;  // reversed on purpose
  s.scores[static_cast<int>(ExitPolicy::kMargin)] = max_softmax / 2;
  return s;
}

// Four samples, all with true label 1.
//   sample 0: exit0 confident (0.95) and right
//   sample 1: exit0 unsure, exit1 confident (0.92) but wrong (label 2)
//   sample 2: unsure everywhere; final right
//   sample 3: exit0 confident (0.99) but wrong (label 3)
CalibrationTable Table() {
  CalibrationTable t(4, 3, 10);
  for (int s = 0; s < 4; ++s) t.SetTrueLabel(s, 1);
  t.Set(0, 0, Scores(1, 0.95f));
  t.Set(1, 0, Scores(1, 0.97f));
  t.Set(2, 0, Scores(1, 0.99f));
  t.Set(0, 1, Scores(2, 0.50f));
  t.Set(1, 1, Scores(2, 0.92f));
  t.Set(2, 1, Scores(1, 0.90f));
  t.Set(0, 2, Scores(0, 0.40f));
  t.Set(1, 2, Scores(0, 0.30f));
  t.Set(2, 2, Scores(1, 0.60f));
  t.Set(0, 3, Scores(3, 0.99f));
  t.Set(1, 3, Scores(1, 0.99f));
  t.Set(2, 3, Scores(1, 0.99f));
  return t;
}

TEST(LatencyModelTest, PathLatencyAddsStagesAndEveryHeadEvaluated) {
  ASSERT_OK_AND_ASSIGN(LatencyModel m, LatencyModel::Create(Profile(), Manifest()));
  Design d = Design::Shared({0, 1}, 0.9f);
  EXPECT_NEAR(m.PathLatency(d, 0), (0.05 + 1 + 0.1) * kMs, 1e-12);
  EXPECT_NEAR(m.PathLatency(d, 1), (0.05 + 1 + 2 + 0.1 + 0.2) * kMs, 1e-12);
  EXPECT_NEAR(m.PathLatency(d, 2), (0.05 + 6 + 0.1 + 0.2 + 0.3) * kMs, 1e-12);
  EXPECT_NEAR(m.PathLatency(Design::FinalOnly(), 0), (0.05 + 6 + 0.3) * kMs, 1e-12);
}

TEST(LatencyModelTest, SecondsBetweenCountsWhatRunsFromOneExitToAnother) {
  ASSERT_OK_AND_ASSIGN(LatencyModel m, LatencyModel::Create(Profile(), Manifest()));
  const std::vector<int> exits = {0, 1};
  // From nothing: the overhead, stage 0, head 0.
  EXPECT_NEAR(m.SecondsBetween(exits, 0, 1), (0.05 + 1 + 0.1) * kMs, 1e-12);
  // From exit 0 to exit 1: stage 1 and head 1, no overhead.
  EXPECT_NEAR(m.SecondsBetween(exits, 1, 2), (2 + 0.2) * kMs, 1e-12);
  // From exit 1 to the final classifier: stage 2 and the final head.
  EXPECT_NEAR(m.SecondsBetween(exits, 2, 3), (3 + 0.3) * kMs, 1e-12);
  EXPECT_NEAR(m.SecondsBetween(exits, 1, 3), (2 + 0.2 + 3 + 0.3) * kMs, 1e-12);
  EXPECT_EQ(m.SecondsBetween(exits, 2, 2), 0);
  // A skipped exit costs its stage, not its head.
  EXPECT_NEAR(m.SecondsBetween(std::vector<int>{1}, 0, 1), (0.05 + 1 + 2 + 0.2) * kMs, 1e-12);
  EXPECT_NEAR(m.SecondsBetween({}, 0, 1), (0.05 + 6 + 0.3) * kMs, 1e-12);
  // From nothing to each answer: the paths of PathLatencyAddsStagesAndEveryHeadEvaluated,
  // by hand (PathLatency itself is SecondsBetween(exits, 0, depth + 1)).
  EXPECT_NEAR(m.SecondsBetween(exits, 0, 2), (0.05 + 1 + 2 + 0.1 + 0.2) * kMs, 1e-12);
  EXPECT_NEAR(m.SecondsBetween(exits, 0, 3), (0.05 + 6 + 0.1 + 0.2 + 0.3) * kMs, 1e-12);
  // The pieces add up to the path the search predicts.
  const Design d = Design::Shared(exits, 0.9f);
  for (int depth = 0; depth <= 2; ++depth) {
    EXPECT_NEAR(m.SecondsBetween(exits, 0, 1) + m.SecondsBetween(exits, 1, depth + 1),
                m.PathLatency(d, depth), 1e-12);
  }
}

TEST(LatencyStatisticTest, NamesQuantilesAndProtoValuesRoundTrip) {
  for (LatencyStatistic s :
       {LatencyStatistic::kMean, LatencyStatistic::kP50, LatencyStatistic::kP95,
        LatencyStatistic::kP99, LatencyStatistic::kWorst}) {
    SCOPED_TRACE(LatencyStatisticName(s));
    ASSERT_OK_AND_ASSIGN(LatencyStatistic parsed, ParseLatencyStatistic(LatencyStatisticName(s)));
    EXPECT_EQ(parsed, s);
    ASSERT_OK_AND_ASSIGN(LatencyStatistic from_proto,
                         LatencyStatisticFromProto(LatencyStatisticToProto(s)));
    EXPECT_EQ(from_proto, s);
    EXPECT_EQ(IsPercentile(s), PercentileQuantile(s) > 0);
  }
  EXPECT_EQ(LatencyStatisticName(LatencyStatistic::kP95), "p95");
  EXPECT_EQ(LatencyStatisticToProto(LatencyStatistic::kWorst), v1::WORST);
  EXPECT_DOUBLE_EQ(PercentileQuantile(LatencyStatistic::kP99), 0.99);
  EXPECT_FALSE(IsPercentile(LatencyStatistic::kWorst));
  ASSERT_OK_AND_ASSIGN(LatencyStatistic unspecified,
                       LatencyStatisticFromProto(v1::LATENCY_STATISTIC_UNSPECIFIED));
  EXPECT_EQ(unspecified, LatencyStatistic::kMean);
  EXPECT_THAT(LatencyStatisticFromProto(static_cast<v1::LatencyStatistic>(42)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseLatencyStatistic("p90"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'p90' (mean, p50, p95, p99, worst)")));
}

TEST(LatencyStatisticTest, NearestRankPercentiles) {
  EXPECT_EQ(NearestRank(0.5, 4), 2);
  EXPECT_EQ(NearestRank(0.51, 4), 3);
  EXPECT_EQ(NearestRank(0.0, 4), 1);
  EXPECT_EQ(NearestRank(1.0, 4), 4);
  const std::vector<double> sorted = {1, 2, 3, 4};
  EXPECT_EQ(NearestRankPercentile(sorted, 0.5), 2);
  EXPECT_EQ(NearestRankPercentile(sorted, 0.95), 4);
  EXPECT_EQ(NearestRankPercentile(sorted, 0.01), 1);
  EXPECT_EQ(NearestRankPercentile({}, 0.5), 0);
}

TEST(LatencyModelTest, PredictsExactStatisticsOnHandMadeTable) {
  ASSERT_OK_AND_ASSIGN(LatencyModel m, LatencyModel::Create(Profile(), Manifest()));
  ASSERT_OK_AND_ASSIGN(LatencyPrediction p, m.Predict(Design::Shared({0, 1}, 0.9f), Table()));
  // Samples 0 and 3 leave at exit 0 (1.15 ms), sample 1 at exit 1 (3.35 ms),
  // sample 2 at the final exit (6.65 ms).
  EXPECT_EQ(p.num_samples, 4);
  EXPECT_NEAR(p.mean_s, (1.15 * 2 + 3.35 + 6.65) / 4 * kMs, 1e-12);
  EXPECT_NEAR(p.p50_s, 1.15 * kMs, 1e-12);  // rank 2 of 4
  EXPECT_NEAR(p.p95_s, 6.65 * kMs, 1e-12);  // rank 4 of 4
  EXPECT_NEAR(p.p99_s, 6.65 * kMs, 1e-12);
  EXPECT_NEAR(p.worst_s, 6.65 * kMs, 1e-12);
  EXPECT_NEAR(p.throughput_rps, 1.0 / p.mean_s, 1e-9);
  EXPECT_THAT(p.exit_ratio, ElementsAre(0.5, 0.25, 0.25));
  // Right: sample 0 (exit 0) and sample 2 (final). Wrong: 1 and 3.
  EXPECT_DOUBLE_EQ(p.accuracy, 0.5);
}

TEST(LatencyModelTest, FinalOnlyAndPerExitThresholds) {
  ASSERT_OK_AND_ASSIGN(LatencyModel m, LatencyModel::Create(Profile(), Manifest()));
  ASSERT_OK_AND_ASSIGN(LatencyPrediction f, m.Predict(Design::FinalOnly(), Table()));
  EXPECT_NEAR(f.mean_s, 6.35 * kMs, 1e-12);
  EXPECT_DOUBLE_EQ(f.accuracy, 1.0);  // the final classifier is right on all four
  EXPECT_THAT(f.exit_ratio, ElementsAre(0.0, 0.0, 1.0));

  // Per-exit thresholds: exit 0 needs 0.98 (only sample 3 leaves there),
  // exit 1 needs 0.9 (samples 0, 1 and 3 clear it; 0 and 1 are still in flight).
  Design d;
  d.exits = {0, 1};
  d.thresholds = {0.98f, 0.9f};
  ASSERT_OK_AND_ASSIGN(LatencyPrediction p, m.Predict(d, Table()));
  EXPECT_THAT(p.exit_ratio, ElementsAre(0.25, 0.5, 0.25));
  // sample 0 -> exit1 label 1 right; sample 1 -> exit1 label 2 wrong;
  // sample 2 -> final right; sample 3 -> exit0 wrong.
  EXPECT_DOUBLE_EQ(p.accuracy, 0.5);
}

TEST(LatencyModelTest, PolicySelectsTheScoreColumn) {
  ASSERT_OK_AND_ASSIGN(LatencyModel m, LatencyModel::Create(Profile(), Manifest()));
  // Entropy scores are 1 - max_softmax in this table: only sample 1 (0.5) and
  // sample 2 (0.6) clear 0.5 at exit 0.
  ASSERT_OK_AND_ASSIGN(LatencyPrediction p,
                       m.Predict(Design::Shared({0}, 0.5f, ExitPolicy::kEntropy), Table()));
  EXPECT_THAT(p.exit_ratio, ElementsAre(0.5, 0.0, 0.5));
}

TEST(LatencyModelTest, FromPathCountsMatchesPredict) {
  ASSERT_OK_AND_ASSIGN(LatencyModel m, LatencyModel::Create(Profile(), Manifest()));
  Design d = Design::Shared({0, 1}, 0.9f);
  ASSERT_OK_AND_ASSIGN(LatencyPrediction a, m.Predict(d, Table()));
  // Samples 1 and 3 are wrong at an early exit and right at the final one.
  LatencyPrediction b = m.FromPathCounts(d, {2, 1, 1}, 2, /*lost=*/2, /*gained=*/0);
  EXPECT_DOUBLE_EQ(a.mean_s, b.mean_s);
  EXPECT_DOUBLE_EQ(a.p95_s, b.p95_s);
  EXPECT_DOUBLE_EQ(a.accuracy, b.accuracy);
  EXPECT_EQ(a.exit_ratio, b.exit_ratio);
  EXPECT_DOUBLE_EQ(a.accuracy_se, b.accuracy_se);
  EXPECT_DOUBLE_EQ(a.accuracy_drop_se, b.accuracy_drop_se);
}

TEST(LatencyModelTest, PercentilesAtAnyRankFromThePathDistribution) {
  ASSERT_OK_AND_ASSIGN(LatencyModel m, LatencyModel::Create(Profile(), Manifest()));
  Design d = Design::Shared({0, 1}, 0.9f);
  ASSERT_OK_AND_ASSIGN(LatencyPrediction p, m.Predict(d, Table()));
  // Samples 0 and 3 leave at exit 0, sample 1 at exit 1, sample 2 at the final.
  ASSERT_EQ(p.paths.size(), 3u);
  EXPECT_EQ(p.paths[0], std::make_pair(m.PathLatency(d, 0), 2));
  EXPECT_EQ(p.paths[1], std::make_pair(m.PathLatency(d, 1), 1));
  EXPECT_EQ(p.paths[2], std::make_pair(m.PathLatency(d, 2), 1));
  EXPECT_DOUBLE_EQ(PredictedPercentile(p, 0.5), m.PathLatency(d, 0));   // rank 2 of 4
  EXPECT_DOUBLE_EQ(PredictedPercentile(p, 0.51), m.PathLatency(d, 1));  // rank 3
  EXPECT_DOUBLE_EQ(PredictedPercentile(p, 0.95), m.PathLatency(d, 2));  // rank 4
  EXPECT_DOUBLE_EQ(PredictedPercentile(p, 1.0), m.PathLatency(d, 2));
}

TEST(LatencyModelTest, StandardErrorsOfAccuracyAndOfTheDrop) {
  ASSERT_OK_AND_ASSIGN(LatencyModel m, LatencyModel::Create(Profile(), Manifest()));
  ASSERT_OK_AND_ASSIGN(LatencyPrediction p, m.Predict(Design::Shared({0, 1}, 0.9f), Table()));
  EXPECT_DOUBLE_EQ(p.accuracy, 0.5);
  EXPECT_DOUBLE_EQ(p.accuracy_se, std::sqrt(0.5 * 0.5 / 4));
  // Paired: 2 of 4 lost, 0 gained; variance (d - diff^2 / n) / n^2 = (2 - 1) / 16.
  EXPECT_DOUBLE_EQ(p.accuracy_drop_se, 0.25);
  // The full network against itself: no disagreement, no error.
  ASSERT_OK_AND_ASSIGN(LatencyPrediction full, m.Predict(Design::FinalOnly(), Table()));
  EXPECT_DOUBLE_EQ(full.accuracy_drop_se, 0);
  // Two lost and two gained: the drop is 0 but uncertain.
  LatencyPrediction mixed = m.FromPathCounts(Design::FinalOnly(), {4}, 2, 2, 2);
  EXPECT_DOUBLE_EQ(mixed.accuracy_drop_se, 0.5);
}

TEST(LatencyModelTest, RejectsInvalidDesigns) {
  ASSERT_OK_AND_ASSIGN(LatencyModel m, LatencyModel::Create(Profile(), Manifest()));
  EXPECT_THAT(m.Predict(Design::Shared({2}, 0.9f), Table()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not an early exit")));
  EXPECT_THAT(m.Predict(Design::Shared({1, 0}, 0.9f), Table()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("ascending")));
  EXPECT_THAT(m.Predict(Design::Shared({0}, std::nanf("")), Table()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("threshold")));
  Design d = Design::Shared({0}, 0.9f);
  d.thresholds.push_back(0.5f);
  EXPECT_THAT(m.Predict(d, Table()), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DeviceProfileTest, RejectsBadProfilesWithClearErrors) {
  const v1::ModelManifest manifest = Manifest();
  EXPECT_THAT(ValidateDeviceProfile(Profile(), manifest), IsOk());

  v1::DeviceProfile missing_stage = Profile();
  missing_stage.mutable_batches(0)->mutable_stages()->RemoveLast();
  EXPECT_THAT(LatencyModel::Create(missing_stage, manifest),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 stages")));

  v1::DeviceProfile negative = Profile();
  negative.mutable_batches(0)->mutable_stages(1)->set_mean_s(-1);
  EXPECT_THAT(LatencyModel::Create(negative, manifest),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("stage 1")));

  v1::DeviceProfile nan = Profile();
  nan.mutable_batches(0)->mutable_exits(2)->set_p95_s(std::numeric_limits<double>::quiet_NaN());
  EXPECT_THAT(LatencyModel::Create(nan, manifest),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exit 2")));

  v1::DeviceProfile other_model = Profile();
  other_model.set_model("resnet50");
  EXPECT_THAT(LatencyModel::Create(other_model, manifest),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("resnet50")));

  v1::DeviceProfile other_arch = Profile();
  other_arch.set_model_macs(999);
  EXPECT_THAT(LatencyModel::Create(other_arch, manifest),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("different architecture")));

  v1::DeviceProfile no_batch1 = Profile();
  no_batch1.mutable_batches(0)->set_batch_size(8);
  EXPECT_THAT(LatencyModel::Create(no_batch1, manifest),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch-size-1")));

  v1::DeviceProfile bad_name = Profile();
  bad_name.set_name("../etc");
  EXPECT_THAT(LatencyModel::Create(bad_name, manifest),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("device name")));
}

TEST(DeviceProfileTest, OneTablePerBatchSizeAndPrecision) {
  const v1::ModelManifest manifest = Manifest();
  // An int8 table at batch 1 beside the fp32 one: half the latencies.
  v1::DeviceProfile both = Profile();
  v1::BatchProfile int8 = both.batches(0);
  int8.set_precision(v1::INT8);
  for (auto& s : *int8.mutable_stages()) s = Part(s.mean_s() / 2);
  for (auto& e : *int8.mutable_exits()) e = Part(e.mean_s() / 2);
  *int8.mutable_overhead() = Part(0.05 * kMs);
  *both.add_batches() = int8;
  ASSERT_THAT(ValidateDeviceProfile(both, manifest), IsOk());
  EXPECT_TRUE(HasPrecision(both, v1::INT8));
  EXPECT_FALSE(HasPrecision(Profile(), v1::INT8));
  ASSERT_OK_AND_ASSIGN(LatencyModel fp32, LatencyModel::Create(both, manifest));
  ASSERT_OK_AND_ASSIGN(LatencyModel q, LatencyModel::Create(both, manifest, v1::INT8));
  EXPECT_NEAR(fp32.PathLatency(Design::FinalOnly(), 0), (0.05 + 6 + 0.3) * kMs, 1e-12);
  EXPECT_NEAR(q.PathLatency(Design::FinalOnly(), 0), (0.05 + 3 + 0.15) * kMs, 1e-12);
  // No int8 table: planning int8 on this device is a failed precondition.
  EXPECT_THAT(LatencyModel::Create(Profile(), manifest, v1::INT8),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("no int8 latencies"), HasSubstr("--precisions=int8"))));
  // Two int8 tables at batch 1, an unknown precision, only an int8 table.
  v1::DeviceProfile twice = both;
  *twice.add_batches() = int8;
  EXPECT_THAT(ValidateDeviceProfile(twice, manifest),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("batch_size 1 int8 has more than one table")));
  v1::DeviceProfile unknown = both;
  unknown.mutable_batches(1)->set_precision(static_cast<v1::Precision>(9));
  EXPECT_THAT(ValidateDeviceProfile(unknown, manifest),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown precision 9")));
  // A device measured in int8 only is a valid profile without fp32 latencies.
  v1::DeviceProfile int8_only = Profile();
  int8_only.mutable_batches(0)->set_precision(v1::INT8);
  EXPECT_THAT(ValidateDeviceProfile(int8_only, manifest), IsOk());
  EXPECT_THAT(LatencyModel::Create(int8_only, manifest),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no fp32 latencies")));
  // The names the flags and files use.
  EXPECT_EQ(PrecisionName(v1::FP32), "fp32");
  EXPECT_EQ(PrecisionName(v1::INT8), "int8");
  ASSERT_OK_AND_ASSIGN(v1::Precision parsed, ParsePrecision("INT8"));
  EXPECT_EQ(parsed, v1::INT8);
  EXPECT_THAT(ParsePrecision("fp16"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown precision 'fp16'")));
}

// An int8 table scored against the fp32 full network: the drop counts every
// sample the design gets wrong where the reference is right, also at the
// final exit, and the full network itself is no longer drop-free.
TEST(LatencyModelTest, DropsAreCountedAgainstTheTablesReference) {
  ASSERT_OK_AND_ASSIGN(LatencyModel m, LatencyModel::Create(Profile(), Manifest()));
  CalibrationTable fp32 = Table();  // final exit right on all four samples
  CalibrationTable int8 = Table();
  int8.Set(2, 2, Scores(0, 0.60f));  // the int8 final exit gets sample 2 wrong
  ASSERT_THAT(int8.SetReference(fp32), IsOk());
  ASSERT_OK_AND_ASSIGN(LatencyPrediction full, m.Predict(Design::FinalOnly(), int8));
  EXPECT_EQ(full.correct, 3);
  EXPECT_EQ(full.lost, 1);
  EXPECT_EQ(full.gained, 0);
  EXPECT_GT(full.accuracy_drop_se, 0);
  // Exit 0 at 0.9: samples 0 and 3 leave there (3 wrong); 1 and 2 reach the
  // final exit (2 wrong in int8).
  ASSERT_OK_AND_ASSIGN(LatencyPrediction p, m.Predict(Design::Shared({0}, 0.9f), int8));
  EXPECT_EQ(p.correct, 2);
  EXPECT_EQ(p.lost, 2);
  EXPECT_EQ(p.gained, 0);
  // Without a reference the same table measures drops against its own final exit.
  CalibrationTable own = Table();
  own.Set(2, 2, Scores(0, 0.60f));
  ASSERT_OK_AND_ASSIGN(LatencyPrediction q, m.Predict(Design::Shared({0}, 0.9f), own));
  EXPECT_EQ(q.lost, 1);
}

TEST(DeviceProfileTest, AnalyticProfileFromMacsAndLayers) {
  // 1e6 MAC/s and 1 ms per layer: a stage of 300 MACs and 2 layers costs
  // 0.3 ms + 2 ms; exit e costs 10(e+1) us + 1 ms.
  ASSERT_OK_AND_ASSIGN(v1::DeviceProfile p,
                       MakeAnalyticProfile("edge", Manifest(), 1e6, 1e-3, {1, 4}));
  EXPECT_THAT(ValidateDeviceProfile(p, Manifest()), IsOk());
  ASSERT_EQ(p.batches_size(), 2);
  EXPECT_DOUBLE_EQ(p.batches(0).stages(0).mean_s(), 300 / 1e6 + 2e-3);
  EXPECT_DOUBLE_EQ(p.batches(0).exits(1).median_s(), 20 / 1e6 + 1e-3);
  EXPECT_DOUBLE_EQ(p.batches(1).stages(2).p95_s(), 4 * 300 / 1e6 + 2e-3);
  EXPECT_TRUE(p.has_analytic());
  EXPECT_THAT(MakeAnalyticProfile("edge", Manifest(), 0, 1e-3),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MakeAnalyticProfile("edge", Manifest(), 1e6, -1),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DeviceProfileTest, AnalyticProfileOfHugeMacsDoesNotOverflow) {
  // batch 4 x 6e18 MACs does not fit in int64: computed in double.
  v1::ModelManifest m = Manifest();
  m.mutable_stages(0)->set_macs(6000132701421800945);
  ASSERT_OK_AND_ASSIGN(v1::DeviceProfile p, MakeAnalyticProfile("edge", m, 1e9, 0, {1, 4}));
  EXPECT_DOUBLE_EQ(p.batches(1).stages(0).mean_s(), 4 * 6000132701421800945.0 / 1e9);
}

TEST(LatencyModelTest, NothingToEvaluateTakesNoTime) {
  ASSERT_OK_AND_ASSIGN(LatencyModel m, LatencyModel::Create(Profile(), Manifest()));
  EXPECT_EQ(m.SecondsBetween(std::vector<int>{0, 1}, 0, 0), 0);
  EXPECT_EQ(m.SecondsBetween({}, 0, 0), 0);
}

TEST(LatencyModelTest, AManifestWithoutExitsIsRefused) {
  v1::ModelManifest m = Manifest();
  m.clear_exits();
  m.clear_stages();
  v1::DeviceProfile p = Profile();
  p.mutable_batches(0)->clear_stages();
  p.mutable_batches(0)->clear_exits();
  EXPECT_THAT(LatencyModel::Create(p, m), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(DeviceProfileTest, ScaledProfileMultipliesEveryLatency) {
  ASSERT_OK_AND_ASSIGN(v1::DeviceProfile p, MakeScaledProfile("slow", Profile(), 2.5));
  EXPECT_EQ(p.name(), "slow");
  EXPECT_EQ(p.scaled().base_device(), "dev");
  EXPECT_DOUBLE_EQ(p.batches(0).stages(2).mean_s(), 2.5 * 3 * kMs);
  EXPECT_DOUBLE_EQ(p.batches(0).overhead().p95_s(), 2.5 * 0.05 * kMs);
  ASSERT_OK_AND_ASSIGN(LatencyModel base, LatencyModel::Create(Profile(), Manifest()));
  ASSERT_OK_AND_ASSIGN(LatencyModel slow, LatencyModel::Create(p, Manifest()));
  Design d = Design::Shared({0, 1}, 0.9f);
  ASSERT_OK_AND_ASSIGN(LatencyPrediction a, base.Predict(d, Table()));
  ASSERT_OK_AND_ASSIGN(LatencyPrediction b, slow.Predict(d, Table()));
  EXPECT_NEAR(b.mean_s, 2.5 * a.mean_s, 1e-12);
  EXPECT_THAT(MakeScaledProfile("slow", Profile(), 0),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(MakeScaledProfile("slow", Profile(), std::nan("")),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace hapi
