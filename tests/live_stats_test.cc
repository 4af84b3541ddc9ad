#include "core/live_stats.h"

#include <cmath>
#include <random>

#include "core/certify.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hapi {
namespace {

TEST(ChiSquareSurvivalTest, MatchesClosedFormsAndTables) {
  // dof 2: P(X > x) = exp(-x / 2); dof 1: erfc(sqrt(x / 2)).
  for (double x : {0.01, 0.5, 1.0, 3.0, 10.0, 40.0}) {
    EXPECT_NEAR(ChiSquareSurvival(x, 2), std::exp(-x / 2), 1e-12) << x;
    EXPECT_NEAR(ChiSquareSurvival(x, 1), std::erfc(std::sqrt(x / 2)), 1e-12) << x;
  }
  // Critical values from standard tables (5% and 0.1%).
  EXPECT_NEAR(ChiSquareSurvival(3.841459, 1), 0.05, 1e-6);
  EXPECT_NEAR(ChiSquareSurvival(11.070498, 5), 0.05, 1e-6);
  EXPECT_NEAR(ChiSquareSurvival(16.918978, 9), 0.05, 1e-6);
  EXPECT_NEAR(ChiSquareSurvival(27.877165, 9), 0.001, 1e-7);
  EXPECT_EQ(ChiSquareSurvival(0, 3), 1);
}

TEST(ChiSquareHomogeneityTest, IdenticalProportionsGiveNoEvidence) {
  const std::vector<int64_t> ref = {400, 300, 200, 100};
  const std::vector<int64_t> obs = {40, 30, 20, 10};
  ChiSquareTest t = ChiSquareHomogeneity(ref, obs);
  EXPECT_EQ(t.dof, 3);
  EXPECT_NEAR(t.statistic, 0, 1e-12);
  EXPECT_NEAR(t.p_value, 1, 1e-12);
}

TEST(ChiSquareHomogeneityTest, MatchesAHandComputedTable) {
  // 2 x 2: rows (30, 70) and (50, 50); expected (40, 60) and (40, 60):
  // 100/40 + 100/60 + 100/40 + 100/60 = 8.3333.
  ChiSquareTest t =
      ChiSquareHomogeneity(std::vector<int64_t>{30, 70}, std::vector<int64_t>{50, 50});
  EXPECT_EQ(t.dof, 1);
  EXPECT_NEAR(t.statistic, 25.0 / 3, 1e-12);
  EXPECT_NEAR(t.p_value, std::erfc(std::sqrt(t.statistic / 2)), 1e-12);
}

TEST(ChiSquareHomogeneityTest, MergesSparseCategoriesInOrder) {
  // The last three categories are too sparse alone and merge into one.
  ChiSquareTest t = ChiSquareHomogeneity(std::vector<int64_t>{500, 480, 3, 1, 0},
                                         std::vector<int64_t>{50, 46, 1, 0, 1});
  EXPECT_EQ(t.dof, 1);  // two merged categories: [0], [1..4]
  ChiSquareTest none = ChiSquareHomogeneity(std::vector<int64_t>{5, 0}, std::vector<int64_t>{0, 1});
  EXPECT_EQ(none.dof, 0);
  EXPECT_EQ(none.p_value, 1);
}

// A table whose first exit's confidence is uniform on [0, 1) (shifted
// upwards by `shift`, clipped), the final exit always 0.99 confident.
CalibrationTable SyntheticTable(int n, double shift, uint64_t seed) {
  CalibrationTable table(n, 2, 10);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  for (int s = 0; s < n; ++s) {
    table.SetTrueLabel(s, 0);
    ExitScores first;
    first.label = 0;
    const float c = std::min(0.999f, static_cast<float>(u(rng) + shift));
    for (float& v : first.scores) v = c;
    table.Set(0, s, first);
    ExitScores final_exit;
    for (float& v : final_exit.scores) v = 0.99f;
    table.Set(1, s, final_exit);
  }
  return table;
}

int CountAlarms(const DriftReference& ref, const CalibrationTable& stream, int window, double alpha,
                const Design& design) {
  DriftDetector detector(&ref, window, alpha);
  int alarms = 0;
  for (int s = 0; s < stream.num_samples(); ++s) {
    auto r = detector.Observe(AnsweringDepth(design, stream, s), stream.confidence(0, s));
    if (r && r->detected) ++alarms;
  }
  return alarms;
}

TEST(DriftDetectorTest, FalseAlarmRateOnAnUnshiftedStreamIsAtMostAlpha) {
  const Design design = Design::Shared({0}, 0.7f);
  CalibrationTable reference = SyntheticTable(20000, 0, 1);
  absl::StatusOr<DriftReference> ref = DriftReference::Create(reference, design);
  ASSERT_TRUE(ref.ok()) << ref.status();
  EXPECT_EQ(ref->depth_counts().size(), 2u);
  EXPECT_NEAR(ref->depth_counts()[0] / 20000.0, 0.3, 0.02);
  // 400 windows of 500 from the same distribution, alpha 0.05: about 20
  // false alarms expected when the test is calibrated (binomial sd ~4.4;
  // the reference's own sampling error adds a little).
  const int alarms = CountAlarms(*ref, SyntheticTable(200000, 0, 2), 500, 0.05, design);
  EXPECT_LE(alarms, 36);
  EXPECT_GE(alarms, 4);  // a test that never rejects is not calibrated either
}

TEST(DriftDetectorTest, DetectsAShiftInEveryWindow) {
  const Design design = Design::Shared({0}, 0.7f);
  CalibrationTable reference = SyntheticTable(20000, 0, 1);
  absl::StatusOr<DriftReference> ref = DriftReference::Create(reference, design);
  ASSERT_TRUE(ref.ok());
  // Confidences 0.1 higher: exit 0 answers 40% instead of 30%.
  EXPECT_EQ(CountAlarms(*ref, SyntheticTable(20000, 0.1, 3), 1000, 0.001, design), 20);
}

TEST(DriftReferenceTest, RefusesADesignThatDoesNotFit) {
  CalibrationTable table = SyntheticTable(100, 0, 1);
  EXPECT_FALSE(DriftReference::Create(table, Design::Shared({1}, 0.5f)).ok());  // final exit
  EXPECT_FALSE(DriftReference::Create(table, Design::Shared({0}, 0.5f), 1).ok());
}

ShadowRow Row(int served, int full) {
  ShadowRow row;
  row.exits.resize(2);
  row.exits[0].label = served;
  row.exits[1].label = full;
  row.served_label = served;
  return row;
}

TEST(ShadowWindowTest, SlidesAndBoundsTheDisagreement) {
  ShadowWindow window(100);
  for (int i = 0; i < 150; ++i) window.Add(Row(i < 50 ? 1 : (i % 10 == 0 ? 1 : 0), 0));
  // The first 50 rows (all disagreeing) slid out; of the last 100, every
  // tenth disagrees.
  EXPECT_EQ(window.size(), 100);
  EXPECT_EQ(window.disagreements(), 10);
  EXPECT_DOUBLE_EQ(window.rate(), 0.1);
  // The bound u solves P(X <= 10; 100, u) = 1 - confidence.
  const double u = window.Upper(0.9);
  EXPECT_GT(u, 0.1);
  EXPECT_NEAR(BinomialCdf(10, 100, u), 0.1, 1e-9);
  // No disagreement at all: 1 - (1 - c)^(1/n).
  ShadowWindow clean(50);
  for (int i = 0; i < 50; ++i) clean.Add(Row(3, 3));
  EXPECT_NEAR(clean.Upper(0.9), 1 - std::pow(0.1, 1.0 / 50), 1e-9);
}

TEST(ShadowWindowTest, BecomesATableLabelledWithTheFullNetworksAnswers) {
  ShadowWindow window(10);
  EXPECT_FALSE(window.ToTable(4).ok());
  window.Add(Row(1, 2));
  window.Add(Row(3, 3));
  absl::StatusOr<CalibrationTable> table = window.ToTable(4);
  ASSERT_TRUE(table.ok());
  EXPECT_EQ(table->num_samples(), 2);
  EXPECT_EQ(table->true_label(0), 2);
  EXPECT_FALSE(table->correct(0, 0));
  EXPECT_TRUE(table->correct(0, 1));
  EXPECT_DOUBLE_EQ(table->Accuracy(1), 1.0);
}

// Live answers of a 1000-class model keep their labels (no longer cut to a
// byte); a model with more classes than a table holds is refused.
TEST(ShadowWindowTest, TableOfAThousandClasses) {
  ShadowWindow window(10);
  window.Add(Row(999, 999));
  window.Add(Row(256, 0));
  absl::StatusOr<CalibrationTable> table = window.ToTable(1000);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->num_classes(), 1000);
  EXPECT_EQ(table->true_label(0), 999);
  EXPECT_EQ(table->predicted(0, 0), 999);
  EXPECT_EQ(table->predicted(0, 1), 256);
  EXPECT_FALSE(table->correct(0, 1));
  EXPECT_DOUBLE_EQ(table->Accuracy(0), 0.5);
  absl::StatusOr<CalibrationTable> reparsed = CalibrationTable::Parse(table->Serialize());
  ASSERT_TRUE(reparsed.ok()) << reparsed.status();
  EXPECT_EQ(reparsed->true_label(0), 999);

  EXPECT_TRUE(window.ToTable(CalibrationTable::kMaxClasses).ok());
  EXPECT_EQ(window.ToTable(CalibrationTable::kMaxClasses + 1).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace hapi
