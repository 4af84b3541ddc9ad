#include "core/exit_policy.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace {

using ::hapi::testing::IsOk;
using ::hapi::testing::StatusIs;
using ::testing::HasSubstr;

constexpr float kTol = 1e-6f;

TEST(ScoreProbabilitiesTest, HandComputedThreeClasses) {
  const std::vector<float> p = {0.1f, 0.6f, 0.3f};
  ExitScores s = ScoreProbabilities(p.data(), 3);
  EXPECT_EQ(s.label, 1);
  EXPECT_FLOAT_EQ(s.score(ExitPolicy::kMaxSoftmax), 0.6f);
  EXPECT_NEAR(s.score(ExitPolicy::kMargin), 0.3f, kTol);
  // H = -(0.1 ln 0.1 + 0.6 ln 0.6 + 0.3 ln 0.3) = 0.8979457..., ln 3 = 1.0986123...
  const double h = -(0.1 * std::log(0.1) + 0.6 * std::log(0.6) + 0.3 * std::log(0.3));
  EXPECT_NEAR(h, 0.8979457, 1e-6);
  EXPECT_NEAR(s.score(ExitPolicy::kEntropy), 1.0 - 0.8979457 / 1.0986123, 1e-6);
  EXPECT_NEAR(s.score(ExitPolicy::kEntropy), 0.1826546, 1e-6);
}

TEST(ScoreProbabilitiesTest, UniformIsLeastConfident) {
  const std::vector<float> p(10, 0.1f);
  ExitScores s = ScoreProbabilities(p.data(), 10);
  EXPECT_EQ(s.label, 0);  // ties go to the lowest class
  EXPECT_FLOAT_EQ(s.score(ExitPolicy::kMaxSoftmax), 0.1f);
  EXPECT_NEAR(s.score(ExitPolicy::kEntropy), 0.0f, kTol);
  EXPECT_NEAR(s.score(ExitPolicy::kMargin), 0.0f, kTol);
}

TEST(ScoreProbabilitiesTest, OneHotIsFullyConfident) {
  for (int hot : {0, 4, 9}) {
    std::vector<float> p(10, 0.0f);
    p[hot] = 1.0f;
    ExitScores s = ScoreProbabilities(p.data(), 10);
    EXPECT_EQ(s.label, hot);
    EXPECT_FLOAT_EQ(s.score(ExitPolicy::kMaxSoftmax), 1.0f);
    EXPECT_NEAR(s.score(ExitPolicy::kEntropy), 1.0f, kTol);
    EXPECT_FLOAT_EQ(s.score(ExitPolicy::kMargin), 1.0f);
  }
}

TEST(ScoreProbabilitiesTest, TopTwoAnywhereInTheVector) {
  // Second-best before the best, and after it.
  const std::vector<float> a = {0.05f, 0.25f, 0.05f, 0.6f, 0.05f};
  ExitScores sa = ScoreProbabilities(a.data(), 5);
  EXPECT_EQ(sa.label, 3);
  EXPECT_NEAR(sa.score(ExitPolicy::kMargin), 0.35f, kTol);
  const std::vector<float> b = {0.7f, 0.05f, 0.05f, 0.05f, 0.15f};
  ExitScores sb = ScoreProbabilities(b.data(), 5);
  EXPECT_EQ(sb.label, 0);
  EXPECT_NEAR(sb.score(ExitPolicy::kMargin), 0.55f, kTol);
  // A tie at the top: margin 0.
  const std::vector<float> c = {0.1f, 0.45f, 0.45f};
  ExitScores sc = ScoreProbabilities(c.data(), 3);
  EXPECT_EQ(sc.label, 1);
  EXPECT_NEAR(sc.score(ExitPolicy::kMargin), 0.0f, kTol);
}

TEST(ScoreProbabilitiesTest, ScoresStayInUnitIntervalAndOrderWithConfidence) {
  // Sharper distributions score higher under every policy.
  const std::vector<float> soft = {0.4f, 0.3f, 0.2f, 0.1f};
  const std::vector<float> sharp = {0.85f, 0.05f, 0.05f, 0.05f};
  ExitScores a = ScoreProbabilities(soft.data(), 4), b = ScoreProbabilities(sharp.data(), 4);
  for (int p = 0; p < kNumExitPolicies; ++p) {
    auto policy = static_cast<ExitPolicy>(p);
    EXPECT_GE(a.score(policy), 0.0f);
    EXPECT_LE(b.score(policy), 1.0f);
    EXPECT_LT(a.score(policy), b.score(policy)) << ExitPolicyName(policy);
  }
}

TEST(ExitPolicyNameTest, NamesAndRoundTrip) {
  EXPECT_EQ(ExitPolicyName(ExitPolicy::kMaxSoftmax), "max_softmax");
  EXPECT_EQ(ExitPolicyName(ExitPolicy::kEntropy), "entropy");
  EXPECT_EQ(ExitPolicyName(ExitPolicy::kMargin), "margin");
  for (int p = 0; p < kNumExitPolicies; ++p) {
    auto policy = static_cast<ExitPolicy>(p);
    absl::StatusOr<ExitPolicy> parsed = ParseExitPolicy(ExitPolicyName(policy));
    ASSERT_THAT(parsed, IsOk());
    EXPECT_EQ(*parsed, policy);
  }
}

TEST(ExitPolicyNameTest, UnknownNameIsInvalidArgument) {
  for (const char* bad : {"", "MaxSoftmax", "max-softmax", "entropy ", "unknown"}) {
    EXPECT_THAT(ParseExitPolicy(bad),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown exit policy")))
        << "'" << bad << "'";
  }
}

}  // namespace
}  // namespace hapi
