#include "core/exit_policy.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace hapi {

absl::string_view ExitPolicyName(ExitPolicy policy) {
  switch (policy) {
    case ExitPolicy::kMaxSoftmax:
      return "max_softmax";
    case ExitPolicy::kEntropy:
      return "entropy";
    case ExitPolicy::kMargin:
      return "margin";
  }
  return "unknown";
}

absl::StatusOr<ExitPolicy> ParseExitPolicy(absl::string_view name) {
  for (int p = 0; p < kNumExitPolicies; ++p) {
    if (ExitPolicyName(static_cast<ExitPolicy>(p)) == name) return static_cast<ExitPolicy>(p);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown exit policy '", name, "' (max_softmax, entropy, margin)"));
}

ExitScores ScoreProbabilities(const float* probs, int num_classes) {
  ExitScores out;
  int best = 0;
  float top1 = -1.0f, top2 = -1.0f;
  double entropy = 0.0;
  for (int c = 0; c < num_classes; ++c) {
    float p = probs[c];
    if (p > top1) {
      top2 = top1;
      top1 = p;
      best = c;
    } else if (p > top2) {
      top2 = p;
    }
    if (p > 0.0f) entropy -= static_cast<double>(p) * std::log(static_cast<double>(p));
  }
  out.label = best;
  out.scores[static_cast<int>(ExitPolicy::kMaxSoftmax)] = top1;
  out.scores[static_cast<int>(ExitPolicy::kEntropy)] =
      static_cast<float>(1.0 - entropy / std::log(static_cast<double>(num_classes)));
  out.scores[static_cast<int>(ExitPolicy::kMargin)] = top1 - (top2 < 0.0f ? 0.0f : top2);
  return out;
}

}  // namespace hapi
