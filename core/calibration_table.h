// Per-sample, per-exit predictions of an early-exit network on one split.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/exit_policy.h"

namespace hapi {

// Because the backbone is frozen while exits train, an exit's prediction does
// not depend on which other exits are enabled: this table scores any design
// exactly. Exit index num_exits()-1 is the final classifier.
class CalibrationTable {
 public:
  CalibrationTable() = default;
  CalibrationTable(int num_samples, int num_exits, int num_classes);

  int num_samples() const { return num_samples_; }
  int num_exits() const { return num_exits_; }
  int num_classes() const { return num_classes_; }

  void SetTrueLabel(int sample, int label) { true_labels_[sample] = static_cast<uint8_t>(label); }
  void Set(int exit, int sample, const ExitScores& scores);

  int true_label(int sample) const { return true_labels_[sample]; }
  int predicted(int exit, int sample) const { return predicted_[Index(exit, sample)]; }
  bool correct(int exit, int sample) const {
    return predicted_[Index(exit, sample)] == true_labels_[sample];
  }
  float score(ExitPolicy policy, int exit, int sample) const {
    return scores_[static_cast<int>(policy)][Index(exit, sample)];
  }
  float confidence(int exit, int sample) const {
    return score(ExitPolicy::kMaxSoftmax, exit, sample);
  }
  double Accuracy(int exit) const;

  // Binary format, little-endian: "HAPICAL1", u32 samples, exits, classes,
  // true labels[samples], predicted[exits][samples], then for each policy
  // float scores[exits][samples], then a CRC-32 of everything before it.
  // Parse refuses (DATA_LOSS) a table without samples, and counts or a
  // samples x exits product beyond INT_MAX.
  std::string Serialize() const;
  static absl::StatusOr<CalibrationTable> Parse(absl::string_view data);

 private:
  size_t Index(int exit, int sample) const {
    return static_cast<size_t>(exit) * num_samples_ + sample;
  }

  int num_samples_ = 0;
  int num_exits_ = 0;
  int num_classes_ = 0;
  std::vector<uint8_t> true_labels_;
  std::vector<uint8_t> predicted_;               // [exit][sample]
  std::vector<float> scores_[kNumExitPolicies];  // [policy][exit][sample]
};

}  // namespace hapi
