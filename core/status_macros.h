// Status propagation macros (Abseil 20220623 ships none).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define HAPI_STATUS_CONCAT_INNER(a, b) a##b
#define HAPI_STATUS_CONCAT(a, b) HAPI_STATUS_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define HAPI_RETURN_IF_ERROR(expr)               \
  do {                                           \
    ::absl::Status hapi_status_ = (expr);        \
    if (!hapi_status_.ok()) return hapi_status_; \
  } while (false)

// `lhs = value of expr` where expr is an absl::StatusOr<T>; returns the error
// from the enclosing function otherwise. lhs may declare a variable.
#define HAPI_ASSIGN_OR_RETURN(lhs, expr) \
  HAPI_ASSIGN_OR_RETURN_IMPL(HAPI_STATUS_CONCAT(hapi_statusor_, __LINE__), lhs, expr)

#define HAPI_ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                               \
  if (!statusor.ok()) return statusor.status();         \
  lhs = std::move(statusor).value()
