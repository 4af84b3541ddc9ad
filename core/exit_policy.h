// Exit policies: when is an exit confident enough to answer?
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hapi {

// Every policy maps class probabilities to a score in [0, 1] where higher
// means more confident; a sample leaves at an exit when score >= threshold.
enum class ExitPolicy : int {
  kMaxSoftmax = 0,  // HAPI: top-1 probability
  kEntropy = 1,     // BranchyNet: 1 - H(p) / ln(C)
  kMargin = 2,      // top-1 minus top-2 probability
};
inline constexpr int kNumExitPolicies = 3;

absl::string_view ExitPolicyName(ExitPolicy policy);
absl::StatusOr<ExitPolicy> ParseExitPolicy(absl::string_view name);

struct ExitScores {
  int label = 0;  // argmax
  float scores[kNumExitPolicies] = {0, 0, 0};
  float score(ExitPolicy p) const { return scores[static_cast<int>(p)]; }
};

// `probs` are softmax outputs of `num_classes` classes. The executor and the
// calibrator both call this, so the table and the served answers agree.
ExitScores ScoreProbabilities(const float* probs, int num_classes);

}  // namespace hapi
