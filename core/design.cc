#include "core/design.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace hapi {

absl::Status ValidateDesign(const Design& design, int num_exits) {
  if (design.thresholds.size() != design.exits.size()) {
    return absl::InvalidArgumentError(absl::StrCat("design has ", design.exits.size(),
                                                   " exits but ", design.thresholds.size(),
                                                   " thresholds"));
  }
  for (size_t i = 0; i < design.exits.size(); ++i) {
    int e = design.exits[i];
    if (e < 0 || e >= num_exits - 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("exit ", e, " is not an early exit of this model (0..", num_exits - 2, ")"));
    }
    if (i > 0 && e <= design.exits[i - 1]) {
      return absl::InvalidArgumentError("design exits must be strictly ascending");
    }
    float t = design.thresholds[i];
    if (!std::isfinite(t) || t < 0.0f || t > 1.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat("threshold ", t, " of exit ", e, " is outside [0, 1]"));
    }
  }
  return absl::OkStatus();
}

std::string DescribeDesign(const Design& design) {
  if (design.exits.empty()) return "final exit only";
  return absl::StrFormat(
      "exits [%s] thresholds [%s] %s", absl::StrJoin(design.exits, ", "),
      absl::StrJoin(design.thresholds, ", ",
                    [](std::string* out, float t) { absl::StrAppendFormat(out, "%.3f", t); }),
      ExitPolicyName(design.policy));
}

}  // namespace hapi
