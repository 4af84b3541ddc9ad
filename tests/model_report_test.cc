#include "core/model_report.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hapi {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// `predicted[e][s]` for every exit, true labels `truth`; scores unused.
CalibrationTable MakeTable(const std::vector<int>& truth,
                           const std::vector<std::vector<int>>& predicted, int num_classes = 10) {
  CalibrationTable t(static_cast<int>(truth.size()), static_cast<int>(predicted.size()),
                     num_classes);
  for (size_t s = 0; s < truth.size(); ++s) t.SetTrueLabel(static_cast<int>(s), truth[s]);
  for (size_t e = 0; e < predicted.size(); ++e) {
    for (size_t s = 0; s < truth.size(); ++s) {
      ExitScores scores;
      scores.label = predicted[e][s];
      t.Set(static_cast<int>(e), static_cast<int>(s), scores);
    }
  }
  return t;
}

TEST(FinalErrorsFixedByEarlierExitTest, HandMadeTable) {
  // 6 samples, 3 exits (exit 2 = final).
  //   sample:        0  1  2  3  4  5
  //   truth:         0  1  2  3  4  5
  //   exit 0:        0  1  9  3  9  9
  //   exit 1:        9  9  2  9  9  9
  //   final:         0  9  9  9  9  5
  // Final wrong on 1, 2, 3, 4 (4 errors); fixed earlier: 1 (exit 0),
  // 2 (exit 1), 3 (exit 0); 4 by none -> 3/4. Sample 0, which both exit 0
  // and the final get right, must not count.
  CalibrationTable t =
      MakeTable({0, 1, 2, 3, 4, 5}, {{0, 1, 9, 3, 9, 9}, {9, 9, 2, 9, 9, 9}, {0, 9, 9, 9, 9, 5}});
  EXPECT_DOUBLE_EQ(FinalErrorsFixedByEarlierExit(t), 0.75);
}

TEST(FinalErrorsFixedByEarlierExitTest, SampleFixedByTwoExitsCountsOnce) {
  CalibrationTable t = MakeTable({1, 2}, {{1, 0}, {1, 0}, {0, 0}});
  EXPECT_DOUBLE_EQ(FinalErrorsFixedByEarlierExit(t), 0.5);
}

TEST(FinalErrorsFixedByEarlierExitTest, NoFinalErrorsGivesZero) {
  CalibrationTable t = MakeTable({1, 2}, {{0, 0}, {1, 2}});
  EXPECT_DOUBLE_EQ(FinalErrorsFixedByEarlierExit(t), 0.0);
  EXPECT_DOUBLE_EQ(FinalErrorsFixedByEarlierExit(CalibrationTable(0, 3, 10)), 0.0);
}

TEST(FillExitReportsTest, FillsAccuracyAndCostPerExit) {
  v1::ModelManifest m;
  m.set_name("m");
  m.set_backbone_macs(1000);
  for (int e = 0; e < 2; ++e) {
    v1::ExitInfo* info = m.add_exits();
    info->set_index(e);
    info->set_after_stage(e);
    info->set_name(e == 0 ? "exit0.stem" : "final");
    info->set_macs(e == 0 ? 50 : 10);
    info->set_cumulative_macs_fraction(e == 0 ? 0.25 : 1.0);
  }
  m.mutable_report()->add_backbone_epoch_seconds(3.0);  // other fields are kept
  // validation: exit0 1/2, final 2/2; test: exit0 2/4, final 2/4, and of
  // the final's 2 errors (samples 2, 3) exit 0 fixes 1.
  CalibrationTable validation = MakeTable({3, 4}, {{3, 0}, {3, 4}});
  CalibrationTable test = MakeTable({1, 2, 3, 4}, {{1, 0, 3, 0}, {1, 2, 0, 0}});
  FillExitReports(validation, test, &m);

  const v1::TrainingReport& r = m.report();
  ASSERT_EQ(r.exits_size(), 2);
  EXPECT_EQ(r.exits(0).exit_index(), 0);
  EXPECT_EQ(r.exits(0).name(), "exit0.stem");
  EXPECT_DOUBLE_EQ(r.exits(0).accuracy().validation(), 0.5);
  EXPECT_DOUBLE_EQ(r.exits(0).accuracy().test(), 0.5);
  EXPECT_DOUBLE_EQ(r.exits(1).accuracy().validation(), 1.0);
  EXPECT_DOUBLE_EQ(r.exits(1).accuracy().test(), 0.5);
  EXPECT_DOUBLE_EQ(r.exits(0).head_macs_fraction(), 0.05);
  EXPECT_DOUBLE_EQ(r.exits(1).cumulative_macs_fraction(), 1.0);
  EXPECT_DOUBLE_EQ(r.final_errors_fixed_by_earlier_exit(), 0.5);
  EXPECT_EQ(r.backbone_epoch_seconds_size(), 1);

  // Filling again replaces, not appends.
  FillExitReports(validation, test, &m);
  EXPECT_EQ(m.report().exits_size(), 2);

  std::string text = FormatTrainingReport(m);
  EXPECT_THAT(text, HasSubstr("# Model `m`"));
  EXPECT_THAT(text, HasSubstr("| exit0.stem | 0 | 50.00% | 50.00% | 25.0% | 5.00% |"));
  EXPECT_THAT(text, HasSubstr("| final | 1 | 100.00% | 50.00% | 100.0% | 1.00% |"));
  EXPECT_THAT(text, HasSubstr("50.0% are classified correctly"));
  EXPECT_THAT(text, Not(HasSubstr("distilled")));
  m.mutable_training()->set_exit_epochs(16);
  m.mutable_training()->set_exit_learning_rate(0.002);
  m.mutable_training()->set_exit_distillation(0.5);
  m.mutable_training()->set_distillation_temperature(3);
  EXPECT_THAT(FormatTrainingReport(m),
              HasSubstr("exits 16 epochs (Adam, peak rate 0.002, distilled from the final "
                        "classifier: weight 0.5, temperature 3)"));
}

}  // namespace
}  // namespace hapi
