#include "core/calibration_table.h"

#include <zlib.h>

#include <cstring>
#include <string>
#include <utility>

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
  // Documented layout: magic, 3 x u32, labels, predictions, 3 policies of
  // float scores, CRC-32.
  EXPECT_EQ(bytes.size(), 8u + 12u + 4u + 3u * 4u + 3u * 3u * 4u * 4u + 4u);
  EXPECT_EQ(bytes.substr(0, 8), "HAPICAL1");
  EXPECT_EQ(GetU32(bytes, 8), 4u);
  EXPECT_EQ(GetU32(bytes, 12), 3u);
  EXPECT_EQ(GetU32(bytes, 16), 5u);

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
  std::string bytes = HandMadeTable().Serialize();
  bytes[7] = '2';
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
  bytes[20 + 4] = static_cast<char>(200);  // first prediction
  FixCrc(&bytes);
  EXPECT_THAT(CalibrationTable::Parse(bytes),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("prediction out of range")));
}

}  // namespace
}  // namespace hapi
