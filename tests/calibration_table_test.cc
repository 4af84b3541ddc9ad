#include "core/calibration_table.h"

#include <zlib.h>

#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/files.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace {

using ::hapi::testing::IsOk;
using ::hapi::testing::StatusIs;
using ::testing::HasSubstr;

ExitScores Scores(int label, float max_softmax, float entropy, float margin) {
  ExitScores s;
  s.label = label;
  s.scores[static_cast<int>(ExitPolicy::kMaxSoftmax)] = max_softmax;
  s.scores[static_cast<int>(ExitPolicy::kEntropy)] = entropy;
  s.scores[static_cast<int>(ExitPolicy::kMargin)] = margin;
  return s;
}

// 4 samples, 3 exits, 5 classes. True labels 0 1 2 3.
//   exit 0 predicts 0 1 4 4 -> 2/4 correct
//   exit 1 predicts 0 1 2 4 -> 3/4 correct
//   exit 2 predicts 1 1 0 0 -> 1/4 correct
CalibrationTable HandMadeTable() {
  CalibrationTable t(4, 3, 5);
  const int truth[4] = {0, 1, 2, 3};
  const int predicted[3][4] = {{0, 1, 4, 4}, {0, 1, 2, 4}, {1, 1, 0, 0}};
  for (int s = 0; s < 4; ++s) t.SetTrueLabel(s, truth[s]);
  for (int e = 0; e < 3; ++e) {
    for (int s = 0; s < 4; ++s) {
      // Distinct, exactly representable values per (exit, sample, policy).
      float base = static_cast<float>(e * 4 + s);
      t.Set(e, s, Scores(predicted[e][s], base / 16.0f, base / 32.0f + 0.5f, base / 64.0f));
    }
  }
  return t;
}

void ExpectTablesEqual(const CalibrationTable& a, const CalibrationTable& b) {
  ASSERT_EQ(a.num_samples(), b.num_samples());
  ASSERT_EQ(a.num_exits(), b.num_exits());
  ASSERT_EQ(a.num_classes(), b.num_classes());
  for (int s = 0; s < a.num_samples(); ++s) {
    EXPECT_EQ(a.true_label(s), b.true_label(s)) << "sample " << s;
    for (int e = 0; e < a.num_exits(); ++e) {
      EXPECT_EQ(a.predicted(e, s), b.predicted(e, s)) << "exit " << e << " sample " << s;
      for (int p = 0; p < kNumExitPolicies; ++p) {
        auto policy = static_cast<ExitPolicy>(p);
        // Bit-exact: the format stores raw IEEE floats.
        float x = a.score(policy, e, s), y = b.score(policy, e, s);
        EXPECT_EQ(std::memcmp(&x, &y, sizeof(float)), 0)
            << "exit " << e << " sample " << s << " policy " << ExitPolicyName(policy);
      }
    }
  }
}

uint32_t GetU32(const std::string& s, size_t offset) {
  const auto* u = reinterpret_cast<const unsigned char*>(s.data()) + offset;
  return uint32_t{u[0]} | (uint32_t{u[1]} << 8) | (uint32_t{u[2]} << 16) | (uint32_t{u[3]} << 24);
}
void PutU32(std::string* s, size_t offset, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*s)[offset + i] = static_cast<char>(v >> (8 * i));
}
// Recomputes the trailing CRC-32 after a deliberate edit, so that the parser
// gets past the checksum and its other checks are exercised.
void FixCrc(std::string* s) {
  uint32_t crc = static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(s->data()), static_cast<uInt>(s->size() - 4)));
  PutU32(s, s->size() - 4, crc);
}

TEST(CalibrationTableTest, DefaultIsEmpty) {
  CalibrationTable t;
  EXPECT_EQ(t.num_samples(), 0);
  EXPECT_EQ(t.num_exits(), 0);
  EXPECT_EQ(t.num_classes(), 0);
}

TEST(CalibrationTableTest, SetAndAccessors) {
  CalibrationTable t(3, 2, 10);
  EXPECT_EQ(t.num_samples(), 3);
  EXPECT_EQ(t.num_exits(), 2);
  EXPECT_EQ(t.num_classes(), 10);
  t.SetTrueLabel(0, 7);
  t.SetTrueLabel(1, 2);
  t.SetTrueLabel(2, 9);
  t.Set(1, 2, Scores(9, 0.75f, 0.25f, 0.5f));
  t.Set(0, 2, Scores(3, 0.125f, 0.375f, 0.0625f));
  t.Set(0, 0, Scores(7, 1.0f, 1.0f, 1.0f));

  EXPECT_EQ(t.true_label(0), 7);
  EXPECT_EQ(t.true_label(2), 9);
  EXPECT_EQ(t.predicted(1, 2), 9);
  EXPECT_EQ(t.predicted(0, 2), 3);
  EXPECT_TRUE(t.correct(1, 2));
  EXPECT_FALSE(t.correct(0, 2));
  EXPECT_TRUE(t.correct(0, 0));
  EXPECT_EQ(t.score(ExitPolicy::kMaxSoftmax, 1, 2), 0.75f);
  EXPECT_EQ(t.score(ExitPolicy::kEntropy, 1, 2), 0.25f);
  EXPECT_EQ(t.score(ExitPolicy::kMargin, 1, 2), 0.5f);
  EXPECT_EQ(t.confidence(1, 2), 0.75f);
  EXPECT_EQ(t.score(ExitPolicy::kEntropy, 0, 2), 0.375f);
  EXPECT_EQ(t.confidence(0, 2), 0.125f);
  // Cells never set stay at label 0 / score 0, and do not alias set cells.
  EXPECT_EQ(t.predicted(1, 0), 0);
  EXPECT_EQ(t.confidence(1, 0), 0.0f);
  EXPECT_EQ(t.confidence(0, 1), 0.0f);
}

TEST(CalibrationTableTest, ReferenceIsAnotherTablesFinalExit) {
  // Two exits, three samples with labels 0, 1, 2.
  auto make = [](std::vector<int> final_predictions) {
    CalibrationTable t(3, 2, 3);
    for (int s = 0; s < 3; ++s) {
      t.SetTrueLabel(s, s);
      ExitScores e;
      e.label = s;
      t.Set(0, s, e);
      e.label = final_predictions[s];
      t.Set(1, s, e);
    }
    return t;
  };
  CalibrationTable fp32 = make({0, 1, 0});  // final right on 0 and 1
  CalibrationTable int8 = make({0, 0, 2});  // final right on 0 and 2
  EXPECT_FALSE(int8.has_reference());
  EXPECT_TRUE(int8.reference_correct(2)) << "by default its own final exit";
  EXPECT_DOUBLE_EQ(int8.ReferenceAccuracy(), 2.0 / 3);
  ASSERT_THAT(int8.SetReference(fp32), IsOk());
  EXPECT_TRUE(int8.has_reference());
  EXPECT_TRUE(int8.reference_correct(1));
  EXPECT_FALSE(int8.reference_correct(2));
  EXPECT_FALSE(int8.correct(1, 1)) << "its own answers are unchanged";
  // Subset keeps it, sample by sample.
  CalibrationTable sub = int8.Subset({2, 1});
  EXPECT_TRUE(sub.has_reference());
  EXPECT_FALSE(sub.reference_correct(0));
  EXPECT_TRUE(sub.reference_correct(1));
  // Not serialised: a parsed table measures against itself again.
  ASSERT_OK_AND_ASSIGN(CalibrationTable parsed, CalibrationTable::Parse(int8.Serialize()));
  EXPECT_FALSE(parsed.has_reference());
  // Another set of samples is refused and changes nothing.
  CalibrationTable other(3, 2, 3);
  for (int s = 0; s < 3; ++s) other.SetTrueLabel(s, (s + 1) % 3);
  CalibrationTable fresh = make({0, 0, 2});
  EXPECT_THAT(fresh.SetReference(other),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("same samples")));
  EXPECT_THAT(fresh.SetReference(CalibrationTable(2, 2, 3)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2 samples vs 3")));
  EXPECT_FALSE(fresh.has_reference());
}

TEST(CalibrationTableTest, AccuracyOnHandMadeTable) {
  CalibrationTable t = HandMadeTable();
  EXPECT_DOUBLE_EQ(t.Accuracy(0), 0.5);
  EXPECT_DOUBLE_EQ(t.Accuracy(1), 0.75);
  EXPECT_DOUBLE_EQ(t.Accuracy(2), 0.25);
  EXPECT_DOUBLE_EQ(CalibrationTable(0, 2, 10).Accuracy(1), 0.0);
}

TEST(CalibrationTableTest, SerializeParseRoundTrip) {
  CalibrationTable t = HandMadeTable();
  std::string bytes = t.Serialize();
  // Documented layout: magic, 3 x u32, u16 labels, u16 predictions, 3
  // policies of float scores, CRC-32.
  EXPECT_EQ(bytes.size(), 8u + 12u + 2u * 4u + 2u * 3u * 4u + 3u * 3u * 4u * 4u + 4u);
  EXPECT_EQ(bytes.substr(0, 8), "HAPICAL2");
  EXPECT_EQ(GetU32(bytes, 8), 4u);
  EXPECT_EQ(GetU32(bytes, 12), 3u);
  EXPECT_EQ(GetU32(bytes, 16), 5u);
  // True labels 0 1 2 3, then exit 0's predictions 0 1 4 4, little-endian.
  EXPECT_EQ(bytes.substr(20, 8), std::string("\0\0\1\0\2\0\3\0", 8));
  EXPECT_EQ(bytes.substr(28, 8), std::string("\0\0\1\0\4\0\4\0", 8));

  absl::StatusOr<CalibrationTable> parsed = CalibrationTable::Parse(bytes);
  ASSERT_THAT(parsed, IsOk());
  ExpectTablesEqual(*parsed, t);
  EXPECT_DOUBLE_EQ(parsed->Accuracy(1), 0.75);
  EXPECT_EQ(parsed->Serialize(), bytes);
}

// A table without samples scores nothing (every accuracy would be 0/0), and
// its exit count is bounded by nothing in the file: a 24-byte table could
// declare 2^32-1 exits. Parse refuses it.
TEST(CalibrationTableTest, ParseRejectsZeroSamples) {
  EXPECT_THAT(CalibrationTable::Parse(CalibrationTable(0, 4, 10).Serialize()),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("no samples")));
  for (uint32_t exits : {1u, 0x7fffffffu, 0x80000000u, 0xffffffffu}) {
    std::string bytes = CalibrationTable(0, 2, 10).Serialize();
    PutU32(&bytes, 12, exits);
    FixCrc(&bytes);
    EXPECT_THAT(CalibrationTable::Parse(bytes),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("no samples")))
        << exits << " exits";
  }
}

// Sample and exit counts are stored as u32 but held as int: counts, or a
// product of them, beyond INT_MAX are refused before any size arithmetic.
TEST(CalibrationTableTest, ParseRejectsCountsBeyondInt) {
  const std::pair<uint32_t, uint32_t> samples_exits[] = {
      {0x80000000u, 1u}, {1u, 0x80000000u},          {0xffffffffu, 1u},
      {1u, 0xffffffffu}, {0xffffffffu, 0xffffffffu}, {0x10000u, 0x10000u}};
  for (auto [samples, exits] : samples_exits) {
    std::string bytes = HandMadeTable().Serialize();
    PutU32(&bytes, 8, samples);
    PutU32(&bytes, 12, exits);
    FixCrc(&bytes);
    EXPECT_THAT(CalibrationTable::Parse(bytes), StatusIs(absl::StatusCode::kDataLoss))
        << samples << " samples x " << exits << " exits";
  }
}

TEST(CalibrationTableTest, ParseRejectsBadMagic) {
  for (char version : {'0', '3', 'X'}) {
    std::string bytes = HandMadeTable().Serialize();
    bytes[7] = version;
    FixCrc(&bytes);
    EXPECT_THAT(CalibrationTable::Parse(bytes),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("magic")))
        << version;
  }
  std::string bytes = HandMadeTable().Serialize();
  bytes[0] = 'h';
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("magic")));
}

TEST(CalibrationTableTest, ParseRejectsEveryFlippedByte) {
  const std::string good = HandMadeTable().Serialize();
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bytes = good;
    bytes[i] ^= 0x01;
    EXPECT_THAT(CalibrationTable::Parse(bytes), StatusIs(absl::StatusCode::kDataLoss))
        << "flipped byte " << i;
  }
  // A flipped score byte specifically is caught by the checksum.
  std::string bytes = good;
  bytes[good.size() - 10] ^= 0x40;
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")));
}

TEST(CalibrationTableTest, ParseRejectsTruncatedData) {
  const std::string good = HandMadeTable().Serialize();
  for (size_t len : {size_t{0}, size_t{7}, size_t{23}, good.size() / 2, good.size() - 1}) {
    EXPECT_THAT(CalibrationTable::Parse(good.substr(0, len)), StatusIs(absl::StatusCode::kDataLoss))
        << "length " << len;
  }
  EXPECT_THAT(CalibrationTable::Parse(good + "x"), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(CalibrationTableTest, ParseRejectsWrongSizeEvenWithValidChecksum) {
  std::string bytes = HandMadeTable().Serialize();
  PutU32(&bytes, 8, 5);  // claims 5 samples
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("size")));
}

TEST(CalibrationTableTest, ParseRejectsBadDimensions) {
  std::string bytes = CalibrationTable(0, 2, 10).Serialize();
  PutU32(&bytes, 12, 0);  // zero exits
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("dimensions")));
}

TEST(CalibrationTableTest, ParseRejectsOutOfRangeLabelsWithValidChecksum) {
  std::string bytes = HandMadeTable().Serialize();
  bytes[20] = 5;  // first true label; 5 classes -> 0..4
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("label out of range")));

  bytes = HandMadeTable().Serialize();
  bytes[20 + 2 * 4] = static_cast<char>(200);  // first prediction
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("prediction out of range")));
}

// Labels and predictions beyond a byte. 1000 samples, 3 exits, 1000 classes:
// sample s has true label s (0..999);
//   exit 0 predicts s             -> all correct
//   exit 1 predicts (s + 256) % 1000, the same low byte as s for s < 744,
//          so a table truncating to 8 bits would count those correct -> none
//   exit 2 predicts 3s % 1000     -> correct for s = 0 and 500 only
// Scores: distinct bit patterns per cell and policy, and a few special values.
constexpr int kWideSamples = 1000, kWideExits = 3, kWideClasses = 1000;
int WidePrediction(int exit, int sample) {
  return exit == 0 ? sample : exit == 1 ? (sample + 256) % 1000 : 3 * sample % 1000;
}
float WideScore(int policy, int exit, int sample) {
  if (sample == 7) {
    const float special[kNumExitPolicies] = {-0.0f, std::numeric_limits<float>::denorm_min(),
                                             std::numeric_limits<float>::infinity()};
    return special[policy];
  }
  const uint32_t bits = 0x3e000000u + static_cast<uint32_t>((sample * 3 + exit) * 3 + policy) * 97u;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}
CalibrationTable WideTable(int samples = kWideSamples) {
  CalibrationTable t(samples, kWideExits, kWideClasses);
  for (int s = 0; s < samples; ++s) {
    t.SetTrueLabel(s, s);
    for (int e = 0; e < kWideExits; ++e) {
      t.Set(
          e, s,
          Scores(WidePrediction(e, s), WideScore(0, e, s), WideScore(1, e, s), WideScore(2, e, s)));
    }
  }
  return t;
}

// Checks `t` against the formulas above (not against another table, which
// could have lost the same bits).
void ExpectWideTable(const CalibrationTable& t) {
  ASSERT_EQ(t.num_samples(), kWideSamples);
  ASSERT_EQ(t.num_exits(), kWideExits);
  ASSERT_EQ(t.num_classes(), kWideClasses);
  for (int s = 0; s < kWideSamples; ++s) {
    ASSERT_EQ(t.true_label(s), s);
    for (int e = 0; e < kWideExits; ++e) {
      ASSERT_EQ(t.predicted(e, s), WidePrediction(e, s)) << "exit " << e << " sample " << s;
      for (int p = 0; p < kNumExitPolicies; ++p) {
        const float want = WideScore(p, e, s), got = t.score(static_cast<ExitPolicy>(p), e, s);
        ASSERT_EQ(std::memcmp(&want, &got, sizeof(float)), 0)
            << "exit " << e << " sample " << s << " policy " << p;
      }
    }
  }
  EXPECT_EQ(t.true_label(999), 999);
  EXPECT_EQ(t.predicted(1, 743), 999);
  EXPECT_EQ(t.predicted(1, 744), 0);
  EXPECT_DOUBLE_EQ(t.Accuracy(0), 1.0);
  EXPECT_DOUBLE_EQ(t.Accuracy(1), 0.0);
  EXPECT_DOUBLE_EQ(t.Accuracy(2), 0.002);
}

TEST(CalibrationTableTest, ThousandClassesInMemory) { ExpectWideTable(WideTable()); }

TEST(CalibrationTableTest, ThousandClassesRoundTrip) {
  const CalibrationTable t = WideTable();
  const std::string bytes = t.Serialize();
  constexpr size_t kCells = size_t{kWideSamples} * kWideExits;
  EXPECT_EQ(bytes.size(), 8u + 12u + 2u * kWideSamples + 2u * kCells + 3u * 4u * kCells + 4u);
  EXPECT_EQ(bytes.substr(0, 8), "HAPICAL2");
  EXPECT_EQ(GetU32(bytes, 16), 1000u);
  // Sample 999's true label, little-endian: 0x03e7.
  EXPECT_EQ(bytes.substr(20 + 2 * 999, 2), std::string("\xe7\x03", 2));

  absl::StatusOr<CalibrationTable> parsed = CalibrationTable::Parse(bytes);
  ASSERT_THAT(parsed, IsOk());
  ExpectWideTable(*parsed);
  EXPECT_EQ(parsed->Serialize(), bytes);
  // Subset keeps wide labels too.
  const CalibrationTable subset = parsed->Subset({999, 743});
  EXPECT_EQ(subset.true_label(0), 999);
  EXPECT_EQ(subset.predicted(1, 1), 999);
  EXPECT_EQ(subset.predicted(1, 0), 255);
}

// The most classes the format holds: labels up to 65535.
TEST(CalibrationTableTest, MaxClassesRoundTrip) {
  constexpr int kMax = CalibrationTable::kMaxClasses;
  static_assert(kMax == 65536, "u16 labels");
  CalibrationTable t(2, 1, kMax);
  t.SetTrueLabel(0, kMax - 1);
  t.SetTrueLabel(1, 256);
  t.Set(0, 0, Scores(kMax - 1, 0.5f, 0.25f, 0.125f));
  t.Set(0, 1, Scores(0, 1.0f, 1.0f, 1.0f));
  absl::StatusOr<CalibrationTable> parsed = CalibrationTable::Parse(t.Serialize());
  ASSERT_THAT(parsed, IsOk());
  EXPECT_EQ(parsed->num_classes(), kMax);
  EXPECT_EQ(parsed->true_label(0), kMax - 1);
  EXPECT_EQ(parsed->true_label(1), 256);
  EXPECT_EQ(parsed->predicted(0, 0), kMax - 1);
  EXPECT_EQ(parsed->predicted(0, 1), 0);
  EXPECT_DOUBLE_EQ(parsed->Accuracy(0), 0.5);

  // One class more than u16 labels can name is refused.
  std::string bytes = t.Serialize();
  PutU32(&bytes, 16, kMax + 1);
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("dimensions")));
}

// The bytes the HAPICAL1 writer produced, written out here as it did: magic,
// u32 samples, exits, classes, u8 true labels, u8 predicted[exits][samples],
// float scores[policy][exits][samples], zlib's CRC-32 of all that.
std::string Hapical1Bytes(uint32_t samples, uint32_t exits, uint32_t classes,
                          const std::vector<uint8_t>& labels, const std::vector<uint8_t>& predicted,
                          const std::vector<float>& scores) {
  std::string out = "HAPICAL1";
  for (uint32_t v : {samples, exits, classes}) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
  }
  for (uint8_t v : labels) out.push_back(static_cast<char>(v));
  for (uint8_t v : predicted) out.push_back(static_cast<char>(v));
  for (float f : scores) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(bits >> (8 * i)));
  }
  const uint32_t crc = static_cast<uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(out.data()), static_cast<uInt>(out.size())));
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(crc >> (8 * i)));
  return out;
}

// HandMadeTable() as HAPICAL1 bytes.
std::string HandMadeHapical1() {
  std::vector<float> scores;
  for (int p = 0; p < kNumExitPolicies; ++p) {
    for (int e = 0; e < 3; ++e) {
      for (int s = 0; s < 4; ++s) {
        const float base = static_cast<float>(e * 4 + s);
        scores.push_back(p == 0 ? base / 16.0f : p == 1 ? base / 32.0f + 0.5f : base / 64.0f);
      }
    }
  }
  return Hapical1Bytes(4, 3, 5, {0, 1, 2, 3}, {0, 1, 4, 4, 0, 1, 2, 4, 1, 1, 0, 0}, scores);
}

TEST(CalibrationTableTest, ParsesHapical1) {
  const std::string v1 = HandMadeHapical1();
  ASSERT_EQ(v1.size(), 8u + 12u + 4u + 3u * 4u + 3u * 3u * 4u * 4u + 4u);
  absl::StatusOr<CalibrationTable> parsed = CalibrationTable::Parse(v1);
  ASSERT_THAT(parsed, IsOk());
  ExpectTablesEqual(*parsed, HandMadeTable());
  EXPECT_EQ(parsed->true_label(3), 3);
  EXPECT_EQ(parsed->predicted(0, 3), 4);
  EXPECT_EQ(parsed->predicted(2, 0), 1);
  EXPECT_EQ(parsed->score(ExitPolicy::kEntropy, 2, 3), 11.0f / 32.0f + 0.5f);
  EXPECT_DOUBLE_EQ(parsed->Accuracy(1), 0.75);
  // Written back, it is HAPICAL2: the same table as the one made in memory.
  const std::string v2 = parsed->Serialize();
  EXPECT_EQ(v2.substr(0, 8), "HAPICAL2");
  EXPECT_EQ(v2, HandMadeTable().Serialize());

  // The widest HAPICAL1 table: 255 classes, label 254.
  absl::StatusOr<CalibrationTable> widest =
      CalibrationTable::Parse(Hapical1Bytes(1, 1, 255, {254}, {254}, std::vector<float>(3, 0.5f)));
  ASSERT_THAT(widest, IsOk());
  EXPECT_EQ(widest->true_label(0), 254);
  EXPECT_TRUE(widest->correct(0, 0));
}

TEST(CalibrationTableTest, Hapical1CorruptionsAreDataLoss) {
  const std::string good = HandMadeHapical1();
  ASSERT_THAT(CalibrationTable::Parse(good), IsOk());
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bytes = good;
    bytes[i] ^= 0x01;
    EXPECT_THAT(CalibrationTable::Parse(bytes), StatusIs(absl::StatusCode::kDataLoss))
        << "flipped byte " << i;
  }
  for (size_t len : {size_t{23}, size_t{24}, good.size() / 2, good.size() - 1}) {
    EXPECT_THAT(CalibrationTable::Parse(good.substr(0, len)), StatusIs(absl::StatusCode::kDataLoss))
        << "length " << len;
  }
  // A HAPICAL1 header on HAPICAL2's sizes is refused on size.
  std::string bytes = HandMadeTable().Serialize();
  bytes[7] = '1';
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("size")));
  // And the other way round.
  bytes = good;
  bytes[7] = '2';
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("size")));

  // Labels and predictions below the class count, as before; with a valid
  // checksum.
  bytes = good;
  bytes[20 + 3] = 5;  // last true label; 5 classes
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("label out of range")));
  bytes = good;
  bytes[20 + 4 + 11] = static_cast<char>(255);  // last prediction
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("prediction out of range")));
  // At most 255 classes, as before (u8 labels).
  bytes = good;
  PutU32(&bytes, 16, 256);
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("dimensions")));
  bytes = good;
  PutU32(&bytes, 16, 1);
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("dimensions")));
}

TEST(CalibrationTableTest, Hapical2CorruptionsAreDataLoss) {
  const std::string good = WideTable(8).Serialize();
  ASSERT_THAT(CalibrationTable::Parse(good), IsOk());
  // Truncated, or with a byte more.
  for (size_t len : {size_t{0}, size_t{8}, size_t{23}, size_t{24}, size_t{20 + 2 * 8},
                     good.size() / 2, good.size() - 4, good.size() - 1}) {
    EXPECT_THAT(CalibrationTable::Parse(good.substr(0, len)), StatusIs(absl::StatusCode::kDataLoss))
        << "length " << len;
  }
  EXPECT_THAT(CalibrationTable::Parse(good + std::string(2, '\0')),
              StatusIs(absl::StatusCode::kDataLoss));
  // Any flipped bit of the stored CRC, and any flipped byte at all.
  for (size_t i = good.size() - 4; i < good.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bytes = good;
      bytes[i] ^= static_cast<char>(1 << bit);
      EXPECT_THAT(CalibrationTable::Parse(bytes),
                  StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checksum")))
          << "byte " << i << " bit " << bit;
    }
  }
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bytes = good;
    bytes[i] ^= 0x01;
    EXPECT_THAT(CalibrationTable::Parse(bytes), StatusIs(absl::StatusCode::kDataLoss))
        << "flipped byte " << i;
  }
  // A size mismatch with a valid checksum: one sample more declared.
  std::string bytes = good;
  PutU32(&bytes, 8, 9);
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("size")));

  // Labels >= classes (1000), with a valid checksum: in either byte, first or
  // last. Labels start at 20, predictions at 20 + 2 * 8 (8 samples, 3 exits).
  constexpr size_t kLabels = 20, kPredictions = 20 + 2 * 8, kLastPrediction = kPredictions + 2 * 23;
  const std::pair<size_t, uint16_t> labels[] = {
      {kLabels, 1000}, {kLabels, 1024}, {kLabels + 2 * 7, 0xffff}, {kLabels + 2 * 7, 0x0400}};
  for (auto [offset, value] : labels) {
    bytes = good;
    bytes[offset] = static_cast<char>(value);
    bytes[offset + 1] = static_cast<char>(value >> 8);
    FixCrc(&bytes);
    EXPECT_THAT(CalibrationTable::Parse(bytes),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("label out of range")))
        << "label " << value << " at " << offset;
  }
  const std::pair<size_t, uint16_t> predictions[] = {
      {kPredictions, 1000}, {kPredictions + 2 * 8, 0x0800}, {kLastPrediction, 0xffff}};
  for (auto [offset, value] : predictions) {
    bytes = good;
    bytes[offset] = static_cast<char>(value);
    bytes[offset + 1] = static_cast<char>(value >> 8);
    FixCrc(&bytes);
    EXPECT_THAT(CalibrationTable::Parse(bytes),
                StatusIs(absl::StatusCode::kDataLoss, HasSubstr("prediction out of range")))
        << "prediction " << value << " at " << offset;
  }
  // The largest in range is accepted at those places (the edits above are
  // refused for their values, not their positions).
  for (size_t offset : {kLabels, kLabels + 2 * 7, kPredictions, kLastPrediction}) {
    bytes = good;
    bytes[offset] = static_cast<char>(999 & 0xff);
    bytes[offset + 1] = static_cast<char>(999 >> 8);
    FixCrc(&bytes);
    absl::StatusOr<CalibrationTable> parsed = CalibrationTable::Parse(bytes);
    ASSERT_THAT(parsed, IsOk()) << offset;
    const int cell =
        static_cast<int>(offset < kPredictions ? offset - kLabels : offset - kPredictions) / 2;
    EXPECT_EQ(
        offset < kPredictions ? parsed->true_label(cell) : parsed->predicted(cell / 8, cell % 8),
        999)
        << offset;
  }
}

// The repository's own tables are HAPICAL1 files (5,000 validation and
// 10,000 test samples, 10 exits, 10 classes): read as the bytes say, and
// written back as HAPICAL2 holding the same table.
TEST(CalibrationTableTest, ParsesTheRepositorysHapical1Tables) {
  for (const char* name : {"calibration-validation.bin", "calibration-test.bin"}) {
    SCOPED_TRACE(name);
    absl::StatusOr<std::string> bytes =
        ReadFile(std::string(HAPI_REPOSITORY_MODELS) + "/fmnist-resnet/" + name);
    ASSERT_THAT(bytes, IsOk());
    ASSERT_EQ(bytes->substr(0, 8), "HAPICAL1");
    absl::StatusOr<CalibrationTable> table = CalibrationTable::Parse(*bytes);
    ASSERT_THAT(table, IsOk());
    const int samples = table->num_samples(), exits = table->num_exits();
    EXPECT_EQ(samples, static_cast<int>(GetU32(*bytes, 8)));
    EXPECT_TRUE(samples == 5000 || samples == 10000) << samples;
    EXPECT_EQ(exits, 10);
    EXPECT_EQ(table->num_classes(), 10);
    // Labels and predictions against the raw bytes.
    for (int s = 0; s < samples; ++s) {
      ASSERT_EQ(table->true_label(s), static_cast<unsigned char>((*bytes)[20 + s])) << s;
      for (int e = 0; e < exits; ++e) {
        ASSERT_EQ(table->predicted(e, s),
                  static_cast<unsigned char>((*bytes)[20 + samples + e * samples + s]))
            << e << " " << s;
      }
    }
    EXPECT_GT(table->Accuracy(exits - 1), 0.8);
    const std::string v2 = table->Serialize();
    EXPECT_EQ(v2.substr(0, 8), "HAPICAL2");
    EXPECT_EQ(v2.size(), bytes->size() + static_cast<size_t>(samples) * (1 + exits));
    absl::StatusOr<CalibrationTable> again = CalibrationTable::Parse(v2);
    ASSERT_THAT(again, IsOk());
    ExpectTablesEqual(*again, *table);
  }
}

}  // namespace
}  // namespace hapi
