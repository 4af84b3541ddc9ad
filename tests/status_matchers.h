// gMock matchers for absl::Status and absl::StatusOr<T> (Abseil 20220623
// ships none):
//
//   EXPECT_THAT(DoIt(), IsOk());
//   EXPECT_THAT(Parse(bytes), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
//   EXPECT_THAT(Load(dir), StatusIs(absl::StatusCode::kNotFound));
//   ASSERT_OK_AND_ASSIGN(auto table, CalibrationTable::Parse(bytes));
//
// As in gMock generally, a plain string passed as the message matcher means
// equality; use HasSubstr(...) for a substring.
#pragma once

#include <ostream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

#if defined(ABSL_LTS_RELEASE_VERSION) && ABSL_LTS_RELEASE_VERSION <= 20220623
namespace absl {
ABSL_NAMESPACE_BEGIN
// So that failed expectations print "OK: <value>" or the error, not raw bytes.
template <typename T>
void PrintTo(const StatusOr<T>& status_or, std::ostream* os) {
  if (status_or.ok()) {
    *os << "OK: " << ::testing::PrintToString(*status_or);
  } else {
    *os << status_or.status();
  }
}
ABSL_NAMESPACE_END
}  // namespace absl
#endif

namespace hapi {
namespace testing {
namespace internal {

inline const absl::Status& GetStatus(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

// Monomorphic implementation for one status type (Status or StatusOr<T>).
template <typename StatusType>
class StatusIsMatcherImpl : public ::testing::MatcherInterface<StatusType> {
 public:
  StatusIsMatcherImpl(::testing::Matcher<absl::StatusCode> code,
                      ::testing::Matcher<const std::string&> message)
      : code_(std::move(code)), message_(std::move(message)) {}

  void DescribeTo(std::ostream* os) const override {
    *os << "has a status code that ";
    code_.DescribeTo(os);
    *os << ", and has an error message that ";
    message_.DescribeTo(os);
  }
  void DescribeNegationTo(std::ostream* os) const override {
    *os << "has a status code that ";
    code_.DescribeNegationTo(os);
    *os << ", or has an error message that ";
    message_.DescribeNegationTo(os);
  }

  bool MatchAndExplain(StatusType actual, ::testing::MatchResultListener* listener) const override {
    const absl::Status& status = GetStatus(actual);
    ::testing::StringMatchResultListener inner;
    if (!code_.MatchAndExplain(status.code(), &inner)) {
      *listener << "whose status code " << absl::StatusCodeToString(status.code())
                << " is wrong (status: " << status << ")";
      return false;
    }
    const std::string message(status.message());
    if (!message_.MatchAndExplain(message, &inner)) {
      *listener << "whose error message is wrong: \"" << message << "\"";
      if (!inner.str().empty()) *listener << ", " << inner.str();
      return false;
    }
    return true;
  }

 private:
  const ::testing::Matcher<absl::StatusCode> code_;
  const ::testing::Matcher<const std::string&> message_;
};

// Polymorphic matcher: converts to Matcher<Status> or Matcher<StatusOr<T>>.
class StatusIsMatcher {
 public:
  StatusIsMatcher(::testing::Matcher<absl::StatusCode> code,
                  ::testing::Matcher<const std::string&> message)
      : code_(std::move(code)), message_(std::move(message)) {}

  template <typename StatusType>
  operator ::testing::Matcher<StatusType>() const {  // NOLINT(google-explicit-constructor)
    return ::testing::Matcher<StatusType>(
        new StatusIsMatcherImpl<const StatusType&>(code_, message_));
  }

 private:
  ::testing::Matcher<absl::StatusCode> code_;
  ::testing::Matcher<const std::string&> message_;
};

template <typename StatusType>
class IsOkMatcherImpl : public ::testing::MatcherInterface<StatusType> {
 public:
  void DescribeTo(std::ostream* os) const override { *os << "is OK"; }
  void DescribeNegationTo(std::ostream* os) const override { *os << "is not OK"; }
  bool MatchAndExplain(StatusType actual, ::testing::MatchResultListener* listener) const override {
    const absl::Status& status = GetStatus(actual);
    if (!status.ok()) *listener << "whose status is " << status;
    return status.ok();
  }
};

class IsOkMatcher {
 public:
  template <typename StatusType>
  operator ::testing::Matcher<StatusType>() const {  // NOLINT(google-explicit-constructor)
    return ::testing::Matcher<StatusType>(new IsOkMatcherImpl<const StatusType&>());
  }
};

}  // namespace internal

// Matches a Status or StatusOr<T> whose code matches `code` and whose message
// matches `message` (a matcher such as HasSubstr("x"), or a string: equality).
template <typename CodeMatcher, typename MessageMatcher>
internal::StatusIsMatcher StatusIs(CodeMatcher&& code, MessageMatcher&& message) {
  return internal::StatusIsMatcher(
      ::testing::MatcherCast<absl::StatusCode>(std::forward<CodeMatcher>(code)),
      ::testing::MatcherCast<const std::string&>(std::forward<MessageMatcher>(message)));
}
// Matches a Status or StatusOr<T> whose code matches `code`, any message.
template <typename CodeMatcher>
internal::StatusIsMatcher StatusIs(CodeMatcher&& code) {
  return StatusIs(std::forward<CodeMatcher>(code), ::testing::_);
}

// Matches an OK Status or a StatusOr<T> holding a value.
inline internal::IsOkMatcher IsOk() { return internal::IsOkMatcher(); }

}  // namespace testing
}  // namespace hapi

#define HAPI_TEST_CONCAT_INNER(a, b) a##b
#define HAPI_TEST_CONCAT(a, b) HAPI_TEST_CONCAT_INNER(a, b)

#define EXPECT_OK(expr) EXPECT_THAT((expr), ::hapi::testing::IsOk())
#define ASSERT_OK(expr) ASSERT_THAT((expr), ::hapi::testing::IsOk())

// `lhs = *expr` where expr is a StatusOr<T>; fails the test (fatally) if it is
// not OK. lhs may declare a variable. Only in void functions (like ASSERT_*).
#define ASSERT_OK_AND_ASSIGN(lhs, expr) \
  ASSERT_OK_AND_ASSIGN_IMPL(HAPI_TEST_CONCAT(hapi_test_statusor_, __LINE__), lhs, expr)
#define ASSERT_OK_AND_ASSIGN_IMPL(statusor, lhs, expr)              \
  auto statusor = (expr);                                           \
  ASSERT_THAT(statusor.status(), ::hapi::testing::IsOk()) << #expr; \
  lhs = std::move(statusor).value()
