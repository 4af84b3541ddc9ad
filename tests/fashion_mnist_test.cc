// IDX parsing, gzip handling, the seeded split and (if installed) the real data.
#include "core/fashion_mnist.h"

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace {

using ::hapi::testing::IsOk;
using ::hapi::testing::ReadBytes;
using ::hapi::testing::ScopedTempDir;
using ::hapi::testing::StatusIs;
using ::hapi::testing::WriteBytes;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Not;

void AppendBigEndian32(std::string* out, uint32_t v) {
  out->push_back(static_cast<char>(v >> 24));
  out->push_back(static_cast<char>(v >> 16));
  out->push_back(static_cast<char>(v >> 8));
  out->push_back(static_cast<char>(v));
}

// IDX3 header (magic, count, rows, cols) followed by `pixels` as given.
std::string IdxImages(uint32_t count, const std::vector<uint8_t>& pixels, uint32_t magic = 2051,
                      uint32_t rows = 28, uint32_t cols = 28) {
  std::string out;
  AppendBigEndian32(&out, magic);
  AppendBigEndian32(&out, count);
  AppendBigEndian32(&out, rows);
  AppendBigEndian32(&out, cols);
  out.append(pixels.begin(), pixels.end());
  return out;
}

// IDX1 header (magic, count) followed by `labels` as given.
std::string IdxLabels(uint32_t count, const std::vector<uint8_t>& labels, uint32_t magic = 2049) {
  std::string out;
  AppendBigEndian32(&out, magic);
  AppendBigEndian32(&out, count);
  out.append(labels.begin(), labels.end());
  return out;
}

void WriteGzip(const std::string& path, const std::string& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
              static_cast<int>(bytes.size()));
  }
  ASSERT_EQ(gzclose(file), Z_OK);
}

std::vector<uint8_t> RandomPixels(int count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> pixels(static_cast<size_t>(count) * kImagePixels);
  for (auto& p : pixels) p = static_cast<uint8_t>(rng());
  return pixels;
}

class IdxTest : public ::testing::Test {
 protected:
  ScopedTempDir dir_;
};

TEST_F(IdxTest, ParsesGzipImagesAndLabels) {
  std::vector<uint8_t> pixels = RandomPixels(3, 1);
  WriteGzip(dir_.Join("images.gz"), IdxImages(3, pixels));
  WriteGzip(dir_.Join("labels.gz"), IdxLabels(3, {0, 9, 4}));

  absl::StatusOr<ImageSet> set = ReadIdxImages(dir_.Join("images.gz"));
  ASSERT_THAT(set, IsOk());
  EXPECT_EQ(set->size(), 3);
  EXPECT_EQ(set->pixels, pixels);
  ASSERT_THAT(ReadIdxLabels(dir_.Join("labels.gz"), &*set), IsOk());
  EXPECT_THAT(set->labels, ElementsAre(0, 9, 4));
  // image(i) points at the i-th 28x28 block.
  EXPECT_TRUE(
      std::equal(set->image(2), set->image(2) + kImagePixels, pixels.begin() + 2 * kImagePixels));
}

TEST_F(IdxTest, ParsesUncompressedFiles) {
  std::vector<uint8_t> pixels = RandomPixels(2, 2);
  WriteBytes(dir_.Join("images"), IdxImages(2, pixels));
  WriteBytes(dir_.Join("labels"), IdxLabels(2, {7, 3}));

  absl::StatusOr<ImageSet> set = ReadIdxImages(dir_.Join("images"));
  ASSERT_THAT(set, IsOk());
  EXPECT_EQ(set->pixels, pixels);
  ASSERT_THAT(ReadIdxLabels(dir_.Join("labels"), &*set), IsOk());
  EXPECT_THAT(set->labels, ElementsAre(7, 3));
}

TEST_F(IdxTest, EmptySetIsValid) {
  WriteGzip(dir_.Join("images.gz"), IdxImages(0, {}));
  WriteGzip(dir_.Join("labels.gz"), IdxLabels(0, {}));
  absl::StatusOr<ImageSet> set = ReadIdxImages(dir_.Join("images.gz"));
  ASSERT_THAT(set, IsOk());
  EXPECT_EQ(set->size(), 0);
  EXPECT_THAT(ReadIdxLabels(dir_.Join("labels.gz"), &*set), IsOk());
}

TEST_F(IdxTest, MissingFileIsNotFoundNamingFileAndPackage) {
  const std::string path = dir_.Join("no-such-images.gz");
  EXPECT_THAT(ReadIdxImages(path),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr(path), HasSubstr("dataset-fashion-mnist"))));
  ImageSet set;
  const std::string labels = dir_.Join("no-such-labels.gz");
  EXPECT_THAT(ReadIdxLabels(labels, &set),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr(labels), HasSubstr("dataset-fashion-mnist"))));
}

TEST_F(IdxTest, LoadFromEmptyDirectoryNamesTheFirstMissingFile) {
  EXPECT_THAT(LoadFashionMnist(dir_.path()),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr(dir_.Join("train-images-idx3-ubyte.gz")),
                             HasSubstr("dataset-fashion-mnist"))));
}

TEST_F(IdxTest, WrongImageMagicIsDataLoss) {
  WriteGzip(dir_.Join("images.gz"), IdxImages(1, RandomPixels(1, 3), /*magic=*/2049));
  EXPECT_THAT(
      ReadIdxImages(dir_.Join("images.gz")),
      StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr("magic 2049"), HasSubstr("2051"),
                                                  HasSubstr(dir_.Join("images.gz")))));
}

TEST_F(IdxTest, WrongLabelMagicIsDataLoss) {
  WriteGzip(dir_.Join("images.gz"), IdxImages(1, RandomPixels(1, 3)));
  WriteGzip(dir_.Join("labels.gz"), IdxLabels(1, {1}, /*magic=*/2051));
  absl::StatusOr<ImageSet> set = ReadIdxImages(dir_.Join("images.gz"));
  ASSERT_THAT(set, IsOk());
  EXPECT_THAT(
      ReadIdxLabels(dir_.Join("labels.gz"), &*set),
      StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr("magic 2051"), HasSubstr("2049"))));
}

TEST_F(IdxTest, WrongImageSizeIsDataLoss) {
  std::vector<uint8_t> pixels(27 * 28, 0);
  WriteBytes(dir_.Join("images"), IdxImages(1, pixels, 2051, /*rows=*/27, /*cols=*/28));
  EXPECT_THAT(ReadIdxImages(dir_.Join("images")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("27x28")));
}

TEST_F(IdxTest, ShorterThanHeaderIsDataLoss) {
  WriteBytes(dir_.Join("images"), std::string("\x00\x00\x08\x03\x00", 5));
  EXPECT_THAT(ReadIdxImages(dir_.Join("images")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("header")));
  WriteBytes(dir_.Join("empty"), "");
  EXPECT_THAT(ReadIdxImages(dir_.Join("empty")), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(IdxTest, TruncatedImagesAreDataLoss) {
  // Header promises 3 images, the file holds 2 and a half.
  std::vector<uint8_t> pixels = RandomPixels(3, 4);
  pixels.resize(pixels.size() - kImagePixels / 2);
  WriteGzip(dir_.Join("images.gz"), IdxImages(3, pixels));
  EXPECT_THAT(ReadIdxImages(dir_.Join("images.gz")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
}

TEST_F(IdxTest, TrailingBytesAreDataLoss) {
  std::vector<uint8_t> pixels = RandomPixels(2, 5);
  WriteBytes(dir_.Join("images"), IdxImages(1, pixels));  // one image promised, two present
  EXPECT_THAT(ReadIdxImages(dir_.Join("images")), StatusIs(absl::StatusCode::kDataLoss));
}

TEST_F(IdxTest, TruncatedLabelsAreDataLoss) {
  WriteGzip(dir_.Join("images.gz"), IdxImages(3, RandomPixels(3, 6)));
  WriteGzip(dir_.Join("labels.gz"), IdxLabels(3, {1, 2}));
  absl::StatusOr<ImageSet> set = ReadIdxImages(dir_.Join("images.gz"));
  ASSERT_THAT(set, IsOk());
  EXPECT_THAT(ReadIdxLabels(dir_.Join("labels.gz"), &*set),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("truncated")));
}

TEST_F(IdxTest, TruncatedGzipStreamIsAnErrorNotACrash) {
  std::string gz_path = dir_.Join("full.gz");
  WriteGzip(gz_path, IdxImages(4, RandomPixels(4, 7)));
  std::string gz = ReadBytes(gz_path);
  ASSERT_GT(gz.size(), 100u);
  WriteBytes(dir_.Join("half.gz"), gz.substr(0, gz.size() / 2));
  EXPECT_THAT(ReadIdxImages(dir_.Join("half.gz")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(dir_.Join("half.gz"))));
}

TEST_F(IdxTest, GzipStreamWithoutTrailerIsDataLoss) {
  // All the deflate data is there (the payload would parse), but the 8-byte
  // CRC/length trailer is cut off: only the gzip layer can notice.
  std::string gz_path = dir_.Join("full.gz");
  WriteGzip(gz_path, IdxImages(2, RandomPixels(2, 8)));
  std::string gz = ReadBytes(gz_path);
  WriteBytes(dir_.Join("cut.gz"), gz.substr(0, gz.size() - 8));
  EXPECT_THAT(ReadIdxImages(dir_.Join("cut.gz")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt")));
}

TEST_F(IdxTest, GzipCrcMismatchIsDataLoss) {
  std::string gz_path = dir_.Join("full.gz");
  WriteGzip(gz_path, IdxImages(2, RandomPixels(2, 9)));
  std::string gz = ReadBytes(gz_path);
  gz[gz.size() - 8] ^= 0x5a;  // first byte of the CRC-32 trailer
  WriteBytes(dir_.Join("bad-crc.gz"), gz);
  EXPECT_THAT(ReadIdxImages(dir_.Join("bad-crc.gz")),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("corrupt")));
}

TEST_F(IdxTest, LabelOutOfRangeIsDataLoss) {
  WriteGzip(dir_.Join("images.gz"), IdxImages(3, RandomPixels(3, 10)));
  WriteGzip(dir_.Join("labels.gz"), IdxLabels(3, {1, 10, 2}));
  absl::StatusOr<ImageSet> set = ReadIdxImages(dir_.Join("images.gz"));
  ASSERT_THAT(set, IsOk());
  EXPECT_THAT(
      ReadIdxLabels(dir_.Join("labels.gz"), &*set),
      StatusIs(absl::StatusCode::kDataLoss, AllOf(HasSubstr("label 10"), HasSubstr("index 1"))));
}

TEST_F(IdxTest, LabelCountMismatchIsDataLoss) {
  WriteGzip(dir_.Join("images.gz"), IdxImages(3, RandomPixels(3, 11)));
  WriteGzip(dir_.Join("labels.gz"), IdxLabels(2, {1, 2}));
  absl::StatusOr<ImageSet> set = ReadIdxImages(dir_.Join("images.gz"));
  ASSERT_THAT(set, IsOk());
  EXPECT_THAT(ReadIdxLabels(dir_.Join("labels.gz"), &*set),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("2 labels for 3 images")));
}

TEST(ImageSetTest, TruncateKeepsThePrefix) {
  ImageSet set;
  set.pixels = RandomPixels(5, 12);
  set.labels = {0, 1, 2, 3, 4};
  const std::vector<uint8_t> original = set.pixels;
  set.Truncate(10);  // more than size: unchanged
  EXPECT_EQ(set.size(), 5);
  set.Truncate(-1);  // negative: unchanged
  EXPECT_EQ(set.size(), 5);
  set.Truncate(2);
  EXPECT_THAT(set.labels, ElementsAre(0, 1));
  ASSERT_EQ(set.pixels.size(), 2u * kImagePixels);
  EXPECT_TRUE(std::equal(set.pixels.begin(), set.pixels.end(), original.begin()));
}

// --- SeededPermutation -------------------------------------------------------

TEST(SeededPermutationTest, IsAPermutation) {
  for (int n : {0, 1, 2, 17, 1000}) {
    std::vector<int> perm = SeededPermutation(n, 123);
    ASSERT_EQ(perm.size(), static_cast<size_t>(n));
    std::vector<int> sorted = perm;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int> iota(static_cast<size_t>(n));
    std::iota(iota.begin(), iota.end(), 0);
    EXPECT_EQ(sorted, iota) << "n=" << n;
  }
}

TEST(SeededPermutationTest, DeterministicPerSeedAndDifferentAcrossSeeds) {
  EXPECT_EQ(SeededPermutation(1000, 42), SeededPermutation(1000, 42));
  EXPECT_NE(SeededPermutation(1000, 42), SeededPermutation(1000, 43));
  std::vector<int> iota(1000);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_NE(SeededPermutation(1000, 42), iota);
}

TEST(SeededPermutationTest, MatchesReferenceSplitmix64FisherYates) {
  // Golden values from an independent (Python) implementation of the
  // documented algorithm: splitmix64, j = next() % (i + 1) for i = n-1..1.
  // The split of every shipped model depends on these exact values.
  EXPECT_THAT(SeededPermutation(10, 42), ElementsAre(0, 9, 5, 8, 6, 4, 7, 2, 1, 3));
  EXPECT_THAT(SeededPermutation(10, kDefaultSplitSeed), ElementsAre(8, 7, 6, 4, 3, 9, 5, 2, 0, 1));
}

// --- LoadFashionMnist on a synthetic directory ------------------------------

// Image i carries its index in its first three pixels and label i % 10, so
// the split can be checked for disjointness and image/label pairing.
class SyntheticFashionMnistTest : public ::testing::Test {
 protected:
  static constexpr int kTrain = kValidationSize + 37;
  static constexpr int kTest = 23;

  static void WriteSet(const std::string& images, const std::string& labels, int n, int offset) {
    std::vector<uint8_t> pixels(static_cast<size_t>(n) * kImagePixels, 0);
    std::vector<uint8_t> label_bytes(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      int id = i + offset;
      uint8_t* p = pixels.data() + static_cast<size_t>(i) * kImagePixels;
      p[0] = static_cast<uint8_t>(id >> 16);
      p[1] = static_cast<uint8_t>(id >> 8);
      p[2] = static_cast<uint8_t>(id);
      label_bytes[i] = static_cast<uint8_t>(id % kNumClasses);
    }
    WriteGzip(images, IdxImages(n, pixels));
    WriteGzip(labels, IdxLabels(n, label_bytes));
  }
  static int IdOf(const ImageSet& set, int i) {
    const uint8_t* p = set.image(i);
    return (p[0] << 16) | (p[1] << 8) | p[2];
  }

  void SetUp() override {
    WriteSet(dir_.Join("train-images-idx3-ubyte.gz"), dir_.Join("train-labels-idx1-ubyte.gz"),
             kTrain, 0);
    WriteSet(dir_.Join("t10k-images-idx3-ubyte.gz"), dir_.Join("t10k-labels-idx1-ubyte.gz"), kTest,
             100000);
  }

  ScopedTempDir dir_;
};

TEST_F(SyntheticFashionMnistTest, SplitIsDisjointCoversTrainingSetAndKeepsLabels) {
  absl::StatusOr<FashionMnist> data = LoadFashionMnist(dir_.path(), 99);
  ASSERT_THAT(data, IsOk());
  EXPECT_EQ(data->validation.size(), kValidationSize);
  EXPECT_EQ(data->train.size(), kTrain - kValidationSize);
  EXPECT_EQ(data->test.size(), kTest);
  EXPECT_EQ(data->validation.pixels.size(), static_cast<size_t>(kValidationSize) * kImagePixels);
  EXPECT_EQ(data->train.pixels.size(),
            static_cast<size_t>(kTrain - kValidationSize) * kImagePixels);

  std::vector<int> seen(kTrain, 0);
  for (const ImageSet* set : {&data->train, &data->validation}) {
    for (int i = 0; i < set->size(); ++i) {
      int id = IdOf(*set, i);
      ASSERT_GE(id, 0);
      ASSERT_LT(id, kTrain);
      ++seen[id];
      ASSERT_EQ(set->labels[i], id % kNumClasses) << "image/label pairing broken at " << i;
    }
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), kTrain) << "split not disjoint/complete";

  // The test set is kept in file order.
  for (int i = 0; i < data->test.size(); ++i) {
    EXPECT_EQ(IdOf(data->test, i), 100000 + i);
    EXPECT_EQ(data->test.labels[i], (100000 + i) % kNumClasses);
  }
  // The split is shuffled, not the file order.
  std::vector<int> validation_ids;
  for (int i = 0; i < data->validation.size(); ++i)
    validation_ids.push_back(IdOf(data->validation, i));
  EXPECT_FALSE(std::is_sorted(validation_ids.begin(), validation_ids.end()));
  // It follows SeededPermutation: validation = first 5000 of the permutation.
  std::vector<int> perm = SeededPermutation(kTrain, 99);
  EXPECT_EQ(validation_ids, std::vector<int>(perm.begin(), perm.begin() + kValidationSize));
}

TEST_F(SyntheticFashionMnistTest, SplitDependsOnlyOnTheSeed) {
  absl::StatusOr<FashionMnist> a = LoadFashionMnist(dir_.path(), 5);
  absl::StatusOr<FashionMnist> b = LoadFashionMnist(dir_.path(), 5);
  absl::StatusOr<FashionMnist> c = LoadFashionMnist(dir_.path(), 6);
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  ASSERT_THAT(c, IsOk());
  EXPECT_EQ(a->validation.pixels, b->validation.pixels);
  EXPECT_EQ(a->train.pixels, b->train.pixels);
  EXPECT_EQ(a->train.labels, b->train.labels);
  EXPECT_NE(a->validation.pixels, c->validation.pixels);
}

TEST_F(SyntheticFashionMnistTest, TooSmallTrainingSetIsFailedPrecondition) {
  WriteSet(dir_.Join("train-images-idx3-ubyte.gz"), dir_.Join("train-labels-idx1-ubyte.gz"),
           kValidationSize, 0);
  EXPECT_THAT(LoadFashionMnist(dir_.path()),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("5000")));
}

TEST_F(SyntheticFashionMnistTest, CorruptTestLabelsNameTheFile) {
  WriteGzip(dir_.Join("t10k-labels-idx1-ubyte.gz"),
            IdxLabels(kTest + 1, std::vector<uint8_t>(kTest + 1, 0)));
  EXPECT_THAT(LoadFashionMnist(dir_.path()),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("t10k-labels-idx1-ubyte.gz"), Not(HasSubstr("train-")))));
}

// --- The real data set ---------------------------------------------------------

// scripts/install-deps.sh installs the data set (dataset-fashion-mnist), so
// its absence is a failure, not a reason to skip.
TEST(RealFashionMnistTest, LoadsAndSplitsDeterministically) {
  ASSERT_TRUE(
      std::filesystem::exists(std::string(kDefaultFashionMnistDir) + "/train-images-idx3-ubyte.gz"))
      << "Fashion-MNIST not installed at " << kDefaultFashionMnistDir
      << " (bash scripts/install-deps.sh installs it)";
  absl::StatusOr<FashionMnist> data = LoadFashionMnist(kDefaultFashionMnistDir);
  ASSERT_THAT(data, IsOk());
  EXPECT_EQ(data->train.size(), 55000);
  EXPECT_EQ(data->validation.size(), 5000);
  EXPECT_EQ(data->test.size(), 10000);
  EXPECT_EQ(data->train.pixels.size(), 55000u * kImagePixels);
  EXPECT_EQ(data->validation.pixels.size(), 5000u * kImagePixels);
  EXPECT_EQ(data->test.pixels.size(), 10000u * kImagePixels);

  std::vector<int> histogram(kNumClasses, 0);
  for (const ImageSet* set : {&data->train, &data->validation, &data->test}) {
    for (uint8_t label : set->labels) ASSERT_LT(label, kNumClasses);
  }
  for (uint8_t label : data->validation.labels) ++histogram[label];
  for (int c = 0; c < kNumClasses; ++c) {
    // 500 expected per class; a random split stays well within +-100.
    EXPECT_GT(histogram[c], 400) << kFashionMnistClassNames[c];
    EXPECT_LT(histogram[c], 600) << kFashionMnistClassNames[c];
  }
  // The official test set is balanced: exactly 1000 per class.
  std::vector<int> test_histogram(kNumClasses, 0);
  for (uint8_t label : data->test.labels) ++test_histogram[label];
  EXPECT_THAT(test_histogram, ::testing::Each(1000));

  absl::StatusOr<FashionMnist> again = LoadFashionMnist(kDefaultFashionMnistDir);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->validation.labels, data->validation.labels);
  EXPECT_EQ(again->validation.pixels, data->validation.pixels);
  EXPECT_EQ(again->train.labels, data->train.labels);
  EXPECT_EQ(again->train.pixels, data->train.pixels);
  EXPECT_EQ(again->test.pixels, data->test.pixels);
}

}  // namespace
}  // namespace hapi
