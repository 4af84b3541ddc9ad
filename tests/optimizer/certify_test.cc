// Certified selection: the exact bounds against values computed
// independently (closed forms and binomial sums done by hand), the
// validation split, certification of designs that only look good on the
// selection part, and the fallbacks when nothing certifies.
#include "core/certify.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/calibration_table.h"
#include "core/design_search.h"
#include "core/latency_model.h"
#include "core/sla.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/optimizer/synthetic_model.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace {

using ::hapi::testing::MakeSyntheticManifest;
using ::hapi::testing::MakeSyntheticProfile;
using ::hapi::testing::MakeSyntheticTable;
using ::hapi::testing::StatusIs;
using ::testing::HasSubstr;

TEST(BinomialBoundsTest, CdfMatchesAHandSum) {
  // P(X <= 2), X ~ Bin(5, 0.3) = 0.7^5 + 5 0.3 0.7^4 + 10 0.09 0.7^3.
  EXPECT_NEAR(BinomialCdf(2, 5, 0.3), 0.16807 + 0.36015 + 0.3087, 1e-12);
  EXPECT_EQ(BinomialCdf(-1, 5, 0.3), 0);
  EXPECT_EQ(BinomialCdf(5, 5, 0.3), 1);
  EXPECT_EQ(BinomialCdf(0, 5, 0.0), 1);
  EXPECT_EQ(BinomialCdf(4, 5, 1.0), 0);
}

TEST(BinomialBoundsTest, ClopperPearsonClosedForms) {
  // No failures: P(X = n) = p^n = 1 - c gives the lower bound; no
  // successes: (1 - p)^n = 1 - c gives the upper one.
  for (int n : {1, 20, 400}) {
    for (double c : {0.9, 0.95, 0.99}) {
      EXPECT_NEAR(ClopperPearsonLower(n, n, c), std::pow(1 - c, 1.0 / n), 1e-9) << n << " " << c;
      EXPECT_NEAR(ClopperPearsonUpper(0, n, c), 1 - std::pow(1 - c, 1.0 / n), 1e-9)
          << n << " " << c;
    }
  }
  EXPECT_EQ(ClopperPearsonLower(0, 10, 0.9), 0);
  EXPECT_EQ(ClopperPearsonUpper(10, 10, 0.9), 1);
}

TEST(BinomialBoundsTest, ClopperPearsonAgainstIndependentValues) {
  // Solved by bisection on exact rational binomial sums outside the project.
  EXPECT_NEAR(ClopperPearsonLower(8, 10, 0.9), 0.550396111326414, 1e-9);
  EXPECT_NEAR(ClopperPearsonUpper(2, 10, 0.9), 0.4496038886735859, 1e-9);
  EXPECT_NEAR(ClopperPearsonLower(45, 50, 0.95), 0.8011669974835816, 1e-9);
  // The defining tail: at the lower bound, P(X >= 8) is 1 - confidence.
  const double p = ClopperPearsonLower(8, 10, 0.9);
  double tail = 0;
  for (int i = 8; i <= 10; ++i) {
    double choose = 1;
    for (int j = 0; j < i; ++j) choose = choose * (10 - j) / (j + 1);
    tail += choose * std::pow(p, i) * std::pow(1 - p, 10 - i);
  }
  EXPECT_NEAR(tail, 0.1, 1e-9);
}

TEST(BinomialBoundsTest, QuantileUpperRank) {
  // Smallest r with P(Bin(n, q) <= r - 1) >= confidence, summed by hand.
  EXPECT_EQ(QuantileUpperRank(0.95, 100, 0.9), 99);
  EXPECT_EQ(QuantileUpperRank(0.5, 20, 0.9), 14);
  // 0.95^20 = 0.358 of the time all 20 samples sit below the p95: no order
  // statistic of 20 bounds it at 90%, nor one of 200 the p99.
  EXPECT_EQ(QuantileUpperRank(0.95, 20, 0.9), 21);
  EXPECT_EQ(QuantileUpperRank(0.99, 200, 0.9), 201);
  // More confidence never lowers the rank.
  EXPECT_LE(QuantileUpperRank(0.95, 2000, 0.9), QuantileUpperRank(0.95, 2000, 0.99));
}

TEST(SampleSplitTest, DeterministicDisjointAndComplete) {
  const SampleSplit a = SplitSamples(5000, 0.4, 7), b = SplitSamples(5000, 0.4, 7);
  EXPECT_EQ(a.first, b.first);
  EXPECT_EQ(a.second, b.second);
  EXPECT_EQ(a.first.size(), 3000u);
  EXPECT_EQ(a.second.size(), 2000u);
  std::vector<int> all = a.first;
  all.insert(all.end(), a.second.begin(), a.second.end());
  std::sort(all.begin(), all.end());
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(all[i], i) << "every sample exactly once";
  EXPECT_TRUE(std::is_sorted(a.first.begin(), a.first.end()));
  EXPECT_NE(SplitSamples(5000, 0.4, 8).second, a.second) << "the seed matters";
  // Not a block: both parts span the table.
  EXPECT_LT(a.second.front(), 50);
  EXPECT_GT(a.second.back(), 4950);
  // Both parts keep a sample at the extremes.
  EXPECT_EQ(SplitSamples(10, 0.0, 1).second.size(), 1u);
  EXPECT_EQ(SplitSamples(10, 1.0, 1).first.size(), 1u);
}

TEST(SampleSplitTest, SubsetCopiesTheSamples) {
  const CalibrationTable table = MakeSyntheticTable(100, 4, 10, 3);
  const std::vector<int> samples = {97, 3, 50};
  const CalibrationTable sub = table.Subset(samples);
  ASSERT_EQ(sub.num_samples(), 3);
  ASSERT_EQ(sub.num_exits(), 4);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(sub.true_label(i), table.true_label(samples[i]));
    for (int e = 0; e < 4; ++e) {
      EXPECT_EQ(sub.predicted(e, i), table.predicted(e, samples[i]));
      for (int p = 0; p < kNumExitPolicies; ++p) {
        const auto policy = static_cast<ExitPolicy>(p);
        EXPECT_EQ(sub.score(policy, e, i), table.score(policy, e, samples[i]));
      }
    }
  }
}

// Three exits (0, 1, final 2), every sample right and sure at the final
// exit, unsure (0.3) at exit 1. On the selection part of the default split
// exit 0 is sure (0.95) and right, except on every tenth sample, where it is
// unsure (0.1) and wrong; on the certification part it is `cert_right` and
// `cert_score` sure.
CalibrationTable SplitSensitiveTable(int n, bool cert_right, float cert_score) {
  const CertifyOptions options;
  const SampleSplit split = SplitSamples(n, options.certify_fraction, options.split_seed);
  std::vector<bool> held_out(n, false);
  for (int s : split.second) held_out[s] = true;
  CalibrationTable table(n, 3, 10);
  auto scores = [](int label, float score) {
    ExitScores x;
    x.label = label;
    for (float& v : x.scores) v = score;
    return x;
  };
  for (int s = 0; s < n; ++s) {
    const int label = s % 10;
    table.SetTrueLabel(s, label);
    table.Set(2, s, scores(label, 0.99f));
    table.Set(1, s, scores(label, 0.3f));
    const int wrong = (label + 1) % 10;
    if (held_out[s]) {
      table.Set(0, s, scores(cert_right ? label : wrong, cert_score));
    } else {
      table.Set(0, s, s % 10 == 0 ? scores(wrong, 0.1f) : scores(label, 0.95f));
    }
  }
  return table;
}

class CertifiedSearchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    manifest_ = MakeSyntheticManifest("m", 3);
    auto latency = LatencyModel::Create(MakeSyntheticProfile("dev", manifest_), manifest_);
    ASSERT_OK(latency.status());
    latency_ = std::make_unique<LatencyModel>(*std::move(latency));
    auto search = MakeDesignSearch("hapi");
    ASSERT_OK(search.status());
    search_ = *std::move(search);
  }

  absl::StatusOr<CertifiedSearchResult> Run(const CalibrationTable& table, const Sla& sla,
                                            Multiplicity multiplicity) {
    SearchProblem problem;
    problem.table = &table;
    problem.latency = latency_.get();
    problem.space = DefaultSearchSpace(table, ExitPolicy::kMaxSoftmax);
    problem.sla = sla;
    CertifyOptions options;
    options.multiplicity = multiplicity;
    return SearchAndCertify(*search_, problem, options);
  }

  v1::ModelManifest manifest_;
  std::unique_ptr<LatencyModel> latency_;
  std::unique_ptr<DesignSearch> search_;
};

Sla MaxDrop(double drop) {
  Sla sla;
  sla.objective = SlaObjective::kMinLatency;
  sla.max_accuracy_drop = drop;
  sla.accuracy_confidence = 0.9;
  sla.latency_confidence = 0.9;
  return sla;
}

TEST_F(CertifiedSearchTest, RejectsADesignThatOnlyLooksGoodOnTheSelectionPart) {
  // Exit 0 is right on every selection sample and wrong on every held-out
  // one: the search must want it, and certification must refuse it.
  const CalibrationTable table = SplitSensitiveTable(1000, /*cert_right=*/false, 0.95f);
  for (Multiplicity m : {Multiplicity::kFixedSequence, Multiplicity::kBonferroni}) {
    SCOPED_TRACE(MultiplicityName(m));
    ASSERT_OK_AND_ASSIGN(CertifiedSearchResult r, Run(table, MaxDrop(0.01), m));
    EXPECT_EQ(r.selection_samples, 600);
    EXPECT_EQ(r.certification_samples, 400);
    EXPECT_GE(r.candidates_searched, 1);
    EXPECT_TRUE(r.certified) << r.note;
    EXPECT_EQ(r.candidate, -1) << "the full network, which certifies a drop trivially";
    EXPECT_TRUE(r.result.design.exits.empty()) << DescribeDesign(r.result.design);
    EXPECT_EQ(r.certificate.accuracy_drop_upper, 0);
    EXPECT_THAT(r.note, HasSubstr("the full network"));
  }
  // Without certification the same search serves exit 0.
  SearchProblem problem;
  problem.table = &table;
  problem.latency = latency_.get();
  problem.space = DefaultSearchSpace(table, ExitPolicy::kMaxSoftmax);
  problem.sla = MaxDrop(0.01);
  CertifyOptions off;
  off.certify_fraction = 0;
  // On the whole split exit 0 is 60% right: it fails there, so compare with
  // the selection part alone, where the candidates came from.
  const SampleSplit split = SplitSamples(1000, 0.4, CertifyOptions().split_seed);
  const CalibrationTable selection = table.Subset(split.first);
  problem.table = &selection;
  ASSERT_OK_AND_ASSIGN(CertifiedSearchResult uncertified, SearchAndCertify(*search_, problem, off));
  EXPECT_FALSE(uncertified.certified);
  ASSERT_FALSE(uncertified.result.design.exits.empty());
  EXPECT_EQ(uncertified.result.design.exits.front(), 0);
}

TEST_F(CertifiedSearchTest, CertifiesADesignThatHoldsOnBothParts) {
  const CalibrationTable table = SplitSensitiveTable(1000, /*cert_right=*/true, 0.95f);
  ASSERT_OK_AND_ASSIGN(CertifiedSearchResult r,
                       Run(table, MaxDrop(0.01), Multiplicity::kFixedSequence));
  EXPECT_TRUE(r.certified) << r.note;
  ASSERT_FALSE(r.result.design.exits.empty());
  EXPECT_EQ(r.result.design.exits.front(), 0);
  EXPECT_GE(r.candidate, 0);
  // All 400 held-out samples are right at exit 0 and at the final exit.
  EXPECT_EQ(r.certificate.accuracy, 1.0);
  EXPECT_NEAR(r.certificate.accuracy_lower, std::pow(0.1, 1.0 / 400), 1e-9);
  EXPECT_EQ(r.certificate.accuracy_drop, 0);
  EXPECT_NEAR(r.certificate.accuracy_drop_upper, 1.0 / 400, 1e-12) << "the continuity term";
  EXPECT_NEAR(r.certificate.latency_s, (0.05 + 0.4 + 0.04) * 1e-3, 1e-12);
}

TEST_F(CertifiedSearchTest, FallsBackToTheStrictestCandidateWhenLatencyFails) {
  // Held-out samples are unsure at exit 0, so they run to the final exit:
  // a budget only exit 0 meets holds on the selection part alone.
  const CalibrationTable table = SplitSensitiveTable(1000, /*cert_right=*/true, 0.1f);
  Sla sla;
  sla.objective = SlaObjective::kMaxAccuracy;
  sla.latency_confidence = 0.9;
  // Exit 0 alone at 0.95 on the selection part, with a margin for the
  // widest candidate: 90% leave there, 10% take the full path.
  const double exit0 = 0.05 + 0.4 + 0.04, full = 0.05 + 0.4 + 0.5 + 0.6 + 0.02 + 0.04;
  sla.latency_budget_s = (0.9 * exit0 + 0.1 * full) * 1.1e-3;
  for (Multiplicity m : {Multiplicity::kFixedSequence, Multiplicity::kBonferroni}) {
    SCOPED_TRACE(MultiplicityName(m));
    ASSERT_OK_AND_ASSIGN(CertifiedSearchResult r, Run(table, sla, m));
    EXPECT_FALSE(r.certified);
    EXPECT_THAT(r.note, HasSubstr("NOT certified"));
    ASSERT_FALSE(r.result.design.exits.empty()) << "a candidate, not the full network";
    EXPECT_EQ(r.result.design.exits.front(), 0);
    EXPECT_GT(r.certificate.latency_upper_s, sla.latency_budget_s);
  }
}

TEST_F(CertifiedSearchTest, FallsBackToTheFullNetworkWhenAFloorCannotBeCertified) {
  // 400 held-out samples cannot show 99.9% at 90%: 0.1^(1/400) = 99.43%.
  const CalibrationTable table = SplitSensitiveTable(1000, /*cert_right=*/true, 0.95f);
  Sla sla = MaxDrop(-1);
  sla.min_accuracy = 0.999;
  ASSERT_OK_AND_ASSIGN(CertifiedSearchResult r, Run(table, sla, Multiplicity::kFixedSequence));
  EXPECT_FALSE(r.certified);
  EXPECT_TRUE(r.result.design.exits.empty()) << "the safest design for a floor";
  EXPECT_EQ(r.candidate, -1);
  EXPECT_NEAR(r.certificate.accuracy_lower, std::pow(0.1, 1.0 / 400), 1e-9);
}

TEST_F(CertifiedSearchTest, BoundsOnARealisticTable) {
  const CalibrationTable table = MakeSyntheticTable(5000, 3, 10, 42);
  for (LatencyStatistic stat : {LatencyStatistic::kMean, LatencyStatistic::kP95}) {
    SCOPED_TRACE(LatencyStatisticName(stat));
    Sla sla;
    sla.objective = SlaObjective::kMaxAccuracy;
    sla.statistic = stat;
    sla.latency_budget_s = 1.2e-3;
    sla.accuracy_confidence = 0.9;
    sla.latency_confidence = 0.9;
    ASSERT_OK_AND_ASSIGN(CertifiedSearchResult r, Run(table, sla, Multiplicity::kFixedSequence));
    EXPECT_TRUE(r.certified) << r.note;
    const Certificate& c = r.certificate;
    EXPECT_EQ(c.num_samples, 2000);
    EXPECT_LE(c.accuracy_lower, c.accuracy);
    EXPECT_GE(c.accuracy_drop_upper, c.accuracy_drop);
    EXPECT_GE(c.latency_upper_s, c.latency_s);
    EXPECT_LE(c.latency_upper_s, sla.latency_budget_s);
    // The bound recomputed from the held-out part by hand.
    const SampleSplit split = SplitSamples(5000, 0.4, CertifyOptions().split_seed);
    const CalibrationTable held_out = table.Subset(split.second);
    ASSERT_OK_AND_ASSIGN(LatencyPrediction p, latency_->Predict(r.result.design, held_out));
    const double expected = stat == LatencyStatistic::kMean
                                ? p.mean_s + NormalQuantile(0.9) * MeanLatencyStandardError(p)
                                : PredictedAtRank(p, QuantileUpperRank(0.95, 2000, 0.9));
    EXPECT_NEAR(c.latency_upper_s, expected, 1e-15);
    EXPECT_NEAR(c.accuracy_lower, ClopperPearsonLower(p.correct, 2000, 0.9), 1e-15);
  }
}

TEST_F(CertifiedSearchTest, RejectsABadFraction) {
  const CalibrationTable table = MakeSyntheticTable(100, 3, 10, 1);
  SearchProblem problem;
  problem.table = &table;
  problem.latency = latency_.get();
  problem.space = DefaultSearchSpace(table, ExitPolicy::kMaxSoftmax);
  problem.sla = MaxDrop(0.01);
  CertifyOptions options;
  options.certify_fraction = 1;
  EXPECT_THAT(SearchAndCertify(*search_, problem, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fraction")));
  EXPECT_THAT(ParseMultiplicity("holm"), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace hapi
