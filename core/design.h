// A design (variant) of the early-exit network: which candidate exits are
// enabled, their confidence thresholds, and the exit policy.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/exit_policy.h"

namespace hapi {

struct Design {
  // Enabled early exits, ascending model exit indices; never the final exit,
  // which always answers whatever reaches it.
  std::vector<int> exits;
  // One threshold per enabled exit (a shared threshold is repeated).
  std::vector<float> thresholds;
  ExitPolicy policy = ExitPolicy::kMaxSoftmax;

  static Design FinalOnly() { return Design{}; }
  static Design Shared(std::vector<int> exits, float threshold,
                       ExitPolicy policy = ExitPolicy::kMaxSoftmax) {
    Design d;
    d.thresholds.assign(exits.size(), threshold);
    d.exits = std::move(exits);
    d.policy = policy;
    return d;
  }
  bool operator==(const Design& o) const {
    return exits == o.exits && thresholds == o.thresholds && policy == o.policy;
  }
};

// INVALID_ARGUMENT unless exits are strictly ascending in [0, num_exits-1),
// there is one finite threshold in [0, 1] per exit.
absl::Status ValidateDesign(const Design& design, int num_exits);

// "exits [1, 4] thresholds [0.90, 0.90] max_softmax"
std::string DescribeDesign(const Design& design);

}  // namespace hapi
