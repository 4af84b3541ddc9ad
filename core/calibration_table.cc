#include "core/calibration_table.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace hapi {
namespace {

// The format Serialize writes (u16 labels and predictions), and the earlier
// one Parse still reads (u8).
constexpr char kMagic[8] = {'H', 'A', 'P', 'I', 'C', 'A', 'L', '2'};
constexpr char kMagicV1[8] = {'H', 'A', 'P', 'I', 'C', 'A', 'L', '1'};
constexpr uint64_t kMaxClassesV1 = 255;

void PutU16s(std::string* out, const std::vector<uint16_t>& values) {
  const size_t at = out->size();
  out->resize(at + 2 * values.size());
  char* p = out->data() + at;
  for (uint16_t v : values) {
    *p++ = static_cast<char>(v);
    *p++ = static_cast<char>(v >> 8);
  }
}
// `count` labels of `width` bytes (1 or 2), little-endian, at `p`.
void GetLabels(const char* p, int width, uint64_t count, std::vector<uint16_t>* out) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  if (width == 1) {
    for (uint64_t i = 0; i < count; ++i) (*out)[i] = u[i];
  } else {
    for (uint64_t i = 0; i < count; ++i) {
      (*out)[i] = static_cast<uint16_t>(u[2 * i] | (u[2 * i + 1] << 8));
    }
  }
}

void PutU32(std::string* out, uint32_t v) {
  char b[4] = {static_cast<char>(v), static_cast<char>(v >> 8), static_cast<char>(v >> 16),
               static_cast<char>(v >> 24)};
  out->append(b, 4);
}
uint32_t GetU32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{u[0]} | (uint32_t{u[1]} << 8) | (uint32_t{u[2]} << 16) | (uint32_t{u[3]} << 24);
}

// splitmix64's finaliser: a bijection on 64 bits that mixes every input bit.
uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

CalibrationTable::CalibrationTable(int num_samples, int num_exits, int num_classes)
    : num_samples_(num_samples),
      num_exits_(num_exits),
      num_classes_(num_classes),
      true_labels_(static_cast<size_t>(num_samples)),
      predicted_(static_cast<size_t>(num_samples) * num_exits) {
  for (auto& s : scores_) s.assign(static_cast<size_t>(num_samples) * num_exits, 0.0f);
}

void CalibrationTable::Set(int exit, int sample, const ExitScores& scores) {
  size_t i = Index(exit, sample);
  predicted_[i] = static_cast<uint16_t>(scores.label);
  for (int p = 0; p < kNumExitPolicies; ++p) scores_[p][i] = scores.scores[p];
}

double CalibrationTable::Accuracy(int exit) const {
  if (num_samples_ == 0) return 0.0;
  int hits = 0;
  for (int s = 0; s < num_samples_; ++s) hits += correct(exit, s);
  return static_cast<double>(hits) / num_samples_;
}

absl::Status CalibrationTable::SetReference(const CalibrationTable& reference) {
  if (reference.num_samples_ != num_samples_ || reference.true_labels_ != true_labels_) {
    return absl::InvalidArgumentError(
        absl::StrCat("the reference table does not hold the same samples (", reference.num_samples_,
                     " samples vs ", num_samples_, ", or different true labels)"));
  }
  reference_correct_.resize(num_samples_);
  for (int s = 0; s < num_samples_; ++s) reference_correct_[s] = reference.reference_correct(s);
  return absl::OkStatus();
}

double CalibrationTable::ReferenceAccuracy() const {
  if (num_samples_ == 0) return 0;
  int right = 0;
  for (int s = 0; s < num_samples_; ++s) right += reference_correct(s);
  return static_cast<double>(right) / num_samples_;
}

CalibrationTable CalibrationTable::Subset(absl::Span<const int> samples) const {
  CalibrationTable out(static_cast<int>(samples.size()), num_exits_, num_classes_);
  if (has_reference()) out.reference_correct_.resize(samples.size());
  for (size_t i = 0; i < samples.size(); ++i) {
    const int s = samples[i];
    out.true_labels_[i] = true_labels_[s];
    if (has_reference()) out.reference_correct_[i] = reference_correct_[s];
    for (int e = 0; e < num_exits_; ++e) {
      const size_t from = Index(e, s), to = out.Index(e, static_cast<int>(i));
      out.predicted_[to] = predicted_[from];
      for (int p = 0; p < kNumExitPolicies; ++p) out.scores_[p][to] = scores_[p][from];
    }
  }
  return out;
}

SampleSplit SplitSamples(int num_samples, double second_fraction, uint64_t seed) {
  SampleSplit split;
  if (num_samples <= 0) return split;
  int second = static_cast<int>(std::lround(std::clamp(second_fraction, 0.0, 1.0) * num_samples));
  if (num_samples >= 2) second = std::clamp(second, 1, num_samples - 1);
  // Samples ordered by a keyed hash of their index (ties, which a bijection
  // rules out for distinct indices, would go to the lower index).
  std::vector<std::pair<uint64_t, int>> keyed(num_samples);
  const uint64_t key = Mix64(seed);
  for (int s = 0; s < num_samples; ++s) keyed[s] = {Mix64(key ^ static_cast<uint64_t>(s)), s};
  std::sort(keyed.begin(), keyed.end());
  for (int i = 0; i < num_samples; ++i) {
    (i < second ? split.second : split.first).push_back(keyed[i].second);
  }
  std::sort(split.first.begin(), split.first.end());
  std::sort(split.second.begin(), split.second.end());
  return split;
}

std::string CalibrationTable::Serialize() const {
  static_assert(sizeof(float) == 4, "IEEE float expected");
  std::string out(kMagic, sizeof(kMagic));
  PutU32(&out, static_cast<uint32_t>(num_samples_));
  PutU32(&out, static_cast<uint32_t>(num_exits_));
  PutU32(&out, static_cast<uint32_t>(num_classes_));
  PutU16s(&out, true_labels_);
  PutU16s(&out, predicted_);
  for (const auto& s : scores_) {
    for (float f : s) {
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      PutU32(&out, bits);
    }
  }
  PutU32(&out,
         static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(out.data()), out.size())));
  return out;
}

absl::StatusOr<CalibrationTable> CalibrationTable::Parse(absl::string_view data) {
  auto corrupt = [](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("corrupt calibration table: ", why));
  };
  if (data.size() < sizeof(kMagic) + 16) return corrupt("too short");
  // Bytes per label and prediction, and the most classes they can name.
  int width;
  uint64_t max_classes;
  if (std::memcmp(data.data(), kMagic, sizeof(kMagic)) == 0) {
    width = 2;
    max_classes = kMaxClasses;
  } else if (std::memcmp(data.data(), kMagicV1, sizeof(kMagicV1)) == 0) {
    width = 1;
    max_classes = kMaxClassesV1;
  } else {
    return corrupt("bad magic");
  }
  uint32_t stored_crc = GetU32(data.data() + data.size() - 4);
  uint32_t actual_crc = static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(data.data()), data.size() - 4));
  if (stored_crc != actual_crc) return corrupt("checksum mismatch");
  const char* p = data.data() + sizeof(kMagic);
  uint64_t samples = GetU32(p), exits = GetU32(p + 4), classes = GetU32(p + 8);
  p += 12;
  if (exits == 0 || classes < 2 || classes > max_classes) return corrupt("bad dimensions");
  // Without samples nothing below bounds the exit count by the bytes present,
  // and a table without samples scores no design.
  if (samples == 0) return corrupt("declares no samples");
  // Both are 32-bit, so cells cannot overflow uint64_t. The table holds counts
  // and indices as int, so each count and their product must fit in one;
  // bounding cells by the bytes present keeps the size formula below from
  // overflowing on a crafted header.
  constexpr uint64_t kMaxInt = std::numeric_limits<int>::max();
  uint64_t cells = samples * exits;
  if (samples > kMaxInt || exits > kMaxInt || cells > kMaxInt) {
    return corrupt(absl::StrCat(samples, " samples x ", exits, " exits exceeds ", kMaxInt));
  }
  if (cells > data.size()) return corrupt("dimensions larger than the file");
  uint64_t expected =
      sizeof(kMagic) + 12 + (samples + cells) * width + kNumExitPolicies * cells * 4 + 4;
  if (data.size() != expected) {
    return corrupt(absl::StrCat("size ", data.size(), ", expected ", expected));
  }
  CalibrationTable table(static_cast<int>(samples), static_cast<int>(exits),
                         static_cast<int>(classes));
  GetLabels(p, width, samples, &table.true_labels_);
  p += samples * width;
  GetLabels(p, width, cells, &table.predicted_);
  p += cells * width;
  for (auto& s : table.scores_) {
    for (uint64_t i = 0; i < cells; ++i, p += 4) {
      uint32_t bits = GetU32(p);
      std::memcpy(&s[i], &bits, 4);
    }
  }
  for (uint64_t i = 0; i < samples; ++i) {
    if (table.true_labels_[i] >= classes) return corrupt("label out of range");
  }
  for (uint64_t i = 0; i < cells; ++i) {
    if (table.predicted_[i] >= classes) return corrupt("prediction out of range");
  }
  return table;
}

}  // namespace hapi
