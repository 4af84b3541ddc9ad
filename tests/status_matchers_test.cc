// The matchers every other test relies on must also be able to fail.
#include "tests/status_matchers.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hapi {
namespace {

using ::hapi::testing::IsOk;
using ::hapi::testing::StatusIs;
using ::testing::DescribeMatcher;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(StatusMatchersTest, IsOkOnStatus) {
  EXPECT_THAT(absl::OkStatus(), IsOk());
  EXPECT_THAT(absl::NotFoundError("x"), Not(IsOk()));
}

TEST(StatusMatchersTest, IsOkOnStatusOr) {
  EXPECT_THAT(absl::StatusOr<int>(3), IsOk());
  EXPECT_THAT(absl::StatusOr<int>(absl::InternalError("boom")), Not(IsOk()));
  // Move-only values work too.
  EXPECT_THAT(absl::StatusOr<std::unique_ptr<int>>(std::make_unique<int>(1)), IsOk());
}

TEST(StatusMatchersTest, StatusIsChecksCodeAndMessage) {
  absl::Status st = absl::DataLossError("file x.bin is truncated");
  EXPECT_THAT(st, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(st, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
  EXPECT_THAT(st, StatusIs(absl::StatusCode::kDataLoss, "file x.bin is truncated"));
  EXPECT_THAT(st, Not(StatusIs(absl::StatusCode::kNotFound)));
  EXPECT_THAT(st, Not(StatusIs(absl::StatusCode::kDataLoss, HasSubstr("missing"))));
  EXPECT_THAT(st, Not(StatusIs(absl::StatusCode::kDataLoss, "truncated")));  // equality
  EXPECT_THAT(absl::OkStatus(), StatusIs(absl::StatusCode::kOk));
  EXPECT_THAT(absl::OkStatus(), Not(StatusIs(absl::StatusCode::kUnknown)));
}

TEST(StatusMatchersTest, StatusIsOnStatusOr) {
  absl::StatusOr<std::string> bad = absl::InvalidArgumentError("bad name 'A'");
  EXPECT_THAT(bad, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'A'")));
  EXPECT_THAT(bad, Not(StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'B'"))));
  EXPECT_THAT(absl::StatusOr<std::string>("v"), StatusIs(absl::StatusCode::kOk));
}

TEST(StatusMatchersTest, ExplainsMismatches) {
  ::testing::Matcher<absl::Status> m = StatusIs(absl::StatusCode::kNotFound, HasSubstr("file"));
  EXPECT_THAT(DescribeMatcher<absl::Status>(m), HasSubstr("NOT_FOUND"));
  ::testing::StringMatchResultListener listener;
  EXPECT_FALSE(m.MatchAndExplain(absl::DataLossError("oops"), &listener));
  EXPECT_THAT(listener.str(), HasSubstr("DATA_LOSS"));
  ::testing::StringMatchResultListener listener2;
  EXPECT_FALSE(m.MatchAndExplain(absl::NotFoundError("dir"), &listener2));
  EXPECT_THAT(listener2.str(), HasSubstr("\"dir\""));
}

TEST(StatusMatchersTest, AssertOkAndAssign) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<int> p,
                       absl::StatusOr<std::unique_ptr<int>>(std::make_unique<int>(42)));
  EXPECT_EQ(*p, 42);
  ASSERT_OK(absl::OkStatus());
  EXPECT_OK(absl::StatusOr<int>(1));
}

}  // namespace
}  // namespace hapi
