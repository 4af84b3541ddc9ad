// Per-sample, per-exit predictions of an early-exit network on one split.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "core/exit_policy.h"

namespace hapi {

// Because the backbone is frozen while exits train, an exit's prediction does
// not depend on which other exits are enabled: this table scores any design
// exactly. Exit index num_exits()-1 is the final classifier.
//
// True labels and predictions are held as uint16_t, so a table has at most
// kMaxClasses = 65,536 classes: far beyond any image classifier the project
// serves (ImageNet-1k has 1,000 classes, ImageNet-21k 21,841). Two bytes per
// cell, next to the 12 of the three policies' scores: a 10^5-sample x
// 20-exit table holds 4 MB of predictions and 24 MB of scores.
class CalibrationTable {
 public:
  static constexpr int kMaxClasses = 65536;

  CalibrationTable() = default;
  // num_classes must be at most kMaxClasses (labels beyond 65,535 would
  // wrap): CalibrateOnImages (hapi-import) and ShadowWindow::ToTable (the
  // live monitor) refuse larger models.
  CalibrationTable(int num_samples, int num_exits, int num_classes);

  int num_samples() const { return num_samples_; }
  int num_exits() const { return num_exits_; }
  int num_classes() const { return num_classes_; }

  void SetTrueLabel(int sample, int label) { true_labels_[sample] = static_cast<uint16_t>(label); }
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

  // What accuracy drops are measured against: by default this table's final
  // exit. An int8 table is scored against the fp32 full network instead:
  // SetReference keeps `reference`'s final-exit correctness per sample
  // (INVALID_ARGUMENT unless it has the same samples, i.e. the same count and
  // true labels). Kept by Subset; not serialised.
  absl::Status SetReference(const CalibrationTable& reference);
  bool has_reference() const { return !reference_correct_.empty(); }
  bool reference_correct(int sample) const {
    return reference_correct_.empty() ? correct(num_exits_ - 1, sample)
                                      : reference_correct_[sample] != 0;
  }
  double ReferenceAccuracy() const;

  // The table of `samples` (indices into this table, in that order).
  CalibrationTable Subset(absl::Span<const int> samples) const;

  // Binary format, little-endian: "HAPICAL2", u32 samples, exits, classes,
  // u16 true labels[samples], u16 predicted[exits][samples], then for each
  // policy float scores[exits][samples], then a CRC-32 (zlib's) of
  // everything before it. Serialize writes HAPICAL2; Parse also reads the
  // earlier "HAPICAL1", the same but for u8 labels and predictions (and so at
  // most 255 classes). Parse refuses (DATA_LOSS) a bad magic, checksum or
  // size, fewer than 2 classes or more than the format holds (255, or
  // kMaxClasses), a table without samples, counts or a samples x exits
  // product beyond INT_MAX, and labels or predictions not below the class
  // count.
  std::string Serialize() const;
  static absl::StatusOr<CalibrationTable> Parse(absl::string_view data);

 private:
  size_t Index(int exit, int sample) const {
    return static_cast<size_t>(exit) * num_samples_ + sample;
  }

  int num_samples_ = 0;
  int num_exits_ = 0;
  int num_classes_ = 0;
  std::vector<uint16_t> true_labels_;
  std::vector<uint16_t> predicted_;              // [exit][sample]
  std::vector<float> scores_[kNumExitPolicies];  // [policy][exit][sample]
  std::vector<uint8_t> reference_correct_;       // [sample]; empty: own final exit
};

// A fixed-seed split of a table's samples into two disjoint parts that
// together hold every sample: `second_fraction` of them (rounded to the
// nearest sample, at least one in each part when there are two or more) go
// to the second part. Each part's indices are ascending. The split depends
// only on (num_samples, second_fraction, seed): a portable hash orders the
// samples, so it is the same on every platform and standard library.
struct SampleSplit {
  std::vector<int> first;
  std::vector<int> second;
};
SampleSplit SplitSamples(int num_samples, double second_fraction, uint64_t seed);

}  // namespace hapi
