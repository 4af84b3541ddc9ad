// The image shifts hapi-client bench applies (client/image_shift.h): each one
// moves an image by the amount it says, deterministically, and bad parameters
// are INVALID_ARGUMENT.
#include "client/image_shift.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace hapi::client {
namespace {

using ::hapi::testing::IsOk;
using ::hapi::testing::StatusIs;
using ::testing::HasSubstr;

std::vector<float> RandomImage(int size, uint32_t seed) {
  std::mt19937 random(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> image(size);
  for (float& v : image) v = uniform(random);
  return image;
}

std::vector<uint8_t> RandomBytes(int size, uint32_t seed) {
  std::mt19937 random(seed);
  std::vector<uint8_t> image(size);
  for (uint8_t& v : image) v = static_cast<uint8_t>(random() % 256);
  return image;
}

ImageShift Shift(ShiftKind kind, double level) {
  ImageShift shift;
  shift.kind = kind;
  shift.level = level;
  return shift;
}

double Mean(const std::vector<double>& v) {
  double sum = 0;
  for (double x : v) sum += x;
  return sum / v.size();
}

double Variance(const std::vector<float>& v) {
  double sum = 0, squares = 0;
  for (float x : v) {
    sum += x;
    squares += double{x} * x;
  }
  const double mean = sum / v.size();
  return squares / v.size() - mean * mean;
}

TEST(ImageShiftTest, ParsesNamesAndRefusesOthers) {
  for (auto [name, kind] : {std::pair{"none", ShiftKind::kNone},
                            {"noise", ShiftKind::kNoise},
                            {"contrast", ShiftKind::kContrast},
                            {"blur", ShiftKind::kBlur},
                            {"rotate", ShiftKind::kRotate}}) {
    ASSERT_THAT(ParseShiftKind(name), IsOk());
    EXPECT_EQ(*ParseShiftKind(name), kind);
    EXPECT_EQ(ShiftKindName(kind), name);
  }
  EXPECT_THAT(ParseShiftKind("fog"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'fog'")));
  EXPECT_EQ(*ParseBlurKernel("box"), BlurKernel::kBox);
  EXPECT_EQ(*ParseBlurKernel("gaussian"), BlurKernel::kGaussian);
  EXPECT_THAT(ParseBlurKernel("median"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ImageShiftTest, BadParametersAreErrors) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (double level : {-0.01, 1.5, nan, inf}) {
    EXPECT_THAT(ValidateShift(Shift(ShiftKind::kNoise, level)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("sigma")))
        << level;
    EXPECT_THAT(ValidateShift(Shift(ShiftKind::kContrast, level)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("factor")))
        << level;
  }
  for (double level : {-1.0, kMaxBlurRadius + 1, nan}) {
    EXPECT_THAT(ValidateShift(Shift(ShiftKind::kBlur, level)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("radius")))
        << level;
  }
  ImageShift box = Shift(ShiftKind::kBlur, 1.5);
  EXPECT_THAT(ValidateShift(box), IsOk());  // a gaussian's sigma
  box.blur = BlurKernel::kBox;
  EXPECT_THAT(ValidateShift(box),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("whole number")));
  for (double level : {-181.0, 180.5, inf, nan}) {
    EXPECT_THAT(ValidateShift(Shift(ShiftKind::kRotate, level)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("degrees")))
        << level;
  }
  // The shift is checked before the image is touched.
  std::vector<float> image(4, 0.5f);
  EXPECT_THAT(ApplyShift(Shift(ShiftKind::kNoise, -1), 1, 2, 2, 0, image.data()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(image, std::vector<float>(4, 0.5f));
  // Shapes without pixels.
  EXPECT_THAT(ApplyShift(Shift(ShiftKind::kNoise, 0.1), 0, 2, 2, 0, image.data()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("0x2x2")));
  EXPECT_THAT(ApplyShift(Shift(ShiftKind::kNoise, 0.1), 1, 2, -2, 0, image.data()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ApplyShift(Shift(ShiftKind::kNoise, 0.1), 1, 2, 2, 0, static_cast<float*>(nullptr)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ApplyShift(Shift(ShiftKind::kNoise, 0.1), 1, 2, 2, 0, static_cast<uint8_t*>(nullptr)),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ImageShiftTest, NeutralLevelsLeaveTheImage) {
  const std::vector<float> original = RandomImage(3 * 9 * 7, 1);
  const std::vector<uint8_t> bytes = RandomBytes(3 * 9 * 7, 2);
  for (const ImageShift& shift :
       {Shift(ShiftKind::kNone, 0), Shift(ShiftKind::kNoise, 0), Shift(ShiftKind::kContrast, 1),
        Shift(ShiftKind::kBlur, 0), Shift(ShiftKind::kRotate, 0)}) {
    std::vector<float> image = original;
    ASSERT_THAT(ApplyShift(shift, 3, 9, 7, 5, image.data()), IsOk());
    EXPECT_EQ(image, original) << DescribeShift(shift);
    std::vector<uint8_t> b = bytes;
    ASSERT_THAT(ApplyShift(shift, 3, 9, 7, 5, b.data()), IsOk());
    EXPECT_EQ(b, bytes) << DescribeShift(shift);
  }
}

// Every pixel's deviation from its channel's mean is multiplied by the factor.
TEST(ImageShiftTest, ContrastScalesDeviationsFromTheChannelMean) {
  const int channels = 2, height = 6, width = 5, plane = height * width;
  std::vector<float> image = RandomImage(channels * plane, 3);
  for (int i = plane; i < 2 * plane; ++i) image[i] = 0.6f + 0.3f * image[i];  // another mean
  const std::vector<float> original = image;
  ASSERT_THAT(
      ApplyShift(Shift(ShiftKind::kContrast, 0.5), channels, height, width, 0, image.data()),
      IsOk());
  for (int c = 0; c < channels; ++c) {
    double mean = 0;
    for (int i = 0; i < plane; ++i) mean += original[c * plane + i];
    mean /= plane;
    for (int i = 0; i < plane; ++i) {
      const int k = c * plane + i;
      EXPECT_NEAR(image[k] - mean, 0.5 * (original[k] - mean), 1e-6) << c << " " << i;
    }
  }
  // uint8: the same, to the nearest level.
  const std::vector<uint8_t> bytes = RandomBytes(plane, 4);
  std::vector<uint8_t> b = bytes;
  ASSERT_THAT(ApplyShift(Shift(ShiftKind::kContrast, 0.25), 1, height, width, 0, b.data()), IsOk());
  double mean = 0;
  for (uint8_t v : bytes) mean += v;
  mean /= plane;
  for (int i = 0; i < plane; ++i) {
    EXPECT_NEAR(b[i], mean + 0.25 * (bytes[i] - mean), 0.5 + 1e-3) << i;
  }
  // Factor 0: flat at the mean.
  std::vector<float> flat = original;
  ASSERT_THAT(ApplyShift(Shift(ShiftKind::kContrast, 0), channels, height, width, 0, flat.data()),
              IsOk());
  EXPECT_NEAR(flat[0], flat[plane - 1], 1e-6);
}

TEST(ImageShiftTest, RotationByQuarterTurnsMovesWholePixels) {
  for (int n : {5, 6, 28}) {
    const std::vector<uint8_t> in = RandomBytes(n * n, n);
    auto at = [&](int row, int col) { return in[row * n + col]; };
    std::vector<uint8_t> ccw = in, cw = in, half = in;
    ASSERT_THAT(ApplyShift(Shift(ShiftKind::kRotate, 90), 1, n, n, 0, ccw.data()), IsOk());
    ASSERT_THAT(ApplyShift(Shift(ShiftKind::kRotate, -90), 1, n, n, 0, cw.data()), IsOk());
    ASSERT_THAT(ApplyShift(Shift(ShiftKind::kRotate, 180), 1, n, n, 0, half.data()), IsOk());
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < n; ++c) {
        // Counter-clockwise on screen: the transpose, rows flipped (the top
        // right corner goes to the top left).
        ASSERT_EQ(ccw[r * n + c], at(c, n - 1 - r)) << n << ": " << r << "," << c;
        // Clockwise: the transpose, columns flipped.
        ASSERT_EQ(cw[r * n + c], at(n - 1 - c, r)) << n << ": " << r << "," << c;
        ASSERT_EQ(half[r * n + c], at(n - 1 - r, n - 1 - c)) << n << ": " << r << "," << c;
      }
    }
  }
  // Float, several channels: each is turned alike.
  const int n = 7;
  const std::vector<float> in = RandomImage(2 * n * n, 9);
  std::vector<float> out = in;
  ASSERT_THAT(ApplyShift(Shift(ShiftKind::kRotate, 90), 2, n, n, 0, out.data()), IsOk());
  for (int ch = 0; ch < 2; ++ch) {
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < n; ++c) {
        EXPECT_FLOAT_EQ(out[ch * n * n + r * n + c], in[ch * n * n + c * n + (n - 1 - r)]);
      }
    }
  }
}

TEST(ImageShiftTest, SmallRotationTurnsAboutTheCentre) {
  const int n = 29, centre = n / 2;
  std::vector<float> image(n * n, 0.0f);
  // A bright horizontal bar from the centre to the right.
  for (int c = centre; c < n - 2; ++c) image[centre * n + c] = 1.0f;
  const std::vector<float> original = image;
  ASSERT_THAT(ApplyShift(Shift(ShiftKind::kRotate, 10), 1, n, n, 0, image.data()), IsOk());
  EXPECT_FLOAT_EQ(image[centre * n + centre], 1.0f);  // the centre stays
  EXPECT_NE(image, original);
  // The bar's far end moved up on screen (counter-clockwise): 10 pixels out,
  // sin(10 degrees) * 10 = 1.7 rows up.
  double above = 0, below = 0;
  for (int c = centre + 8; c < n - 2; ++c) {
    for (int r = 0; r < centre; ++r) above += image[r * n + c];
    for (int r = centre + 1; r < n; ++r) below += image[r * n + c];
  }
  EXPECT_GT(above, 1.0);
  EXPECT_LT(below, 0.01);
}

TEST(ImageShiftTest, NoiseHasTheStatedSigmaAndIsDeterministic) {
  const int side = 200;
  std::vector<float> image(side * side, 0.5f);
  ASSERT_THAT(ApplyShift(Shift(ShiftKind::kNoise, 0.05), 1, side, side, 7, image.data()), IsOk());
  std::vector<double> deltas;
  for (float v : image) deltas.push_back(v - 0.5);
  const double mean = Mean(deltas);
  double squares = 0;
  for (double d : deltas) squares += (d - mean) * (d - mean);
  EXPECT_NEAR(mean, 0.0, 0.001);
  EXPECT_NEAR(std::sqrt(squares / deltas.size()), 0.05, 0.05 * 0.02);

  // uint8: sigma in units of the full scale.
  std::vector<uint8_t> bytes(side * side, 128);
  ASSERT_THAT(ApplyShift(Shift(ShiftKind::kNoise, 0.1), 1, side, side, 7, bytes.data()), IsOk());
  std::vector<float> levels(bytes.begin(), bytes.end());
  EXPECT_NEAR(std::sqrt(Variance(levels)), 25.5, 25.5 * 0.03);

  // The same image index and seed: the same noise; another of either: other noise.
  auto noisy = [](int64_t index, uint64_t seed) {
    ImageShift shift = Shift(ShiftKind::kNoise, 0.1);
    shift.seed = seed;
    std::vector<uint8_t> b(28 * 28, 100);
    EXPECT_THAT(ApplyShift(shift, 1, 28, 28, index, b.data()), IsOk());
    return b;
  };
  EXPECT_EQ(noisy(3, 1), noisy(3, 1));
  EXPECT_NE(noisy(3, 1), noisy(4, 1));
  EXPECT_NE(noisy(3, 1), noisy(3, 2));
}

TEST(ImageShiftTest, NoiseIsClampedToTheRange) {
  std::vector<float> image(1000, 1.0f);
  ASSERT_THAT(ApplyShift(Shift(ShiftKind::kNoise, 0.5), 1, 10, 100, 0, image.data()), IsOk());
  for (float v : image) {
    ASSERT_GE(v, 0.0f);
    ASSERT_LE(v, 1.0f);
  }
}

TEST(ImageShiftTest, BlurKeepsAFlatImageAndLowersVariance) {
  for (BlurKernel kernel : {BlurKernel::kGaussian, BlurKernel::kBox}) {
    ImageShift blur = Shift(ShiftKind::kBlur, 2);
    blur.blur = kernel;
    std::vector<float> flat(2 * 12 * 10, 0.37f);
    ASSERT_THAT(ApplyShift(blur, 2, 12, 10, 0, flat.data()), IsOk());
    for (float v : flat) ASSERT_NEAR(v, 0.37f, 1e-6);

    const std::vector<float> random = RandomImage(64 * 64, 5);
    std::vector<float> blurred = random;
    ASSERT_THAT(ApplyShift(blur, 1, 64, 64, 0, blurred.data()), IsOk());
    // Independent pixels: a 5x5 mean keeps 1/25 of the variance inside the
    // image, a gaussian of sigma 2 about 1/(4 pi sigma^2) = 1/50.
    EXPECT_LT(Variance(blurred), 0.1 * Variance(random)) << DescribeShift(blur);
    double mean_before = 0, mean_after = 0;
    for (size_t i = 0; i < random.size(); ++i) {
      mean_before += random[i];
      mean_after += blurred[i];
    }
    EXPECT_NEAR(mean_after / random.size(), mean_before / random.size(), 0.01);
  }
  // A box of radius 1 spreads an inner bright pixel evenly over its 3x3.
  ImageShift box = Shift(ShiftKind::kBlur, 1);
  box.blur = BlurKernel::kBox;
  std::vector<float> dot(7 * 7, 0.0f);
  dot[3 * 7 + 3] = 0.9f;
  ASSERT_THAT(ApplyShift(box, 1, 7, 7, 0, dot.data()), IsOk());
  for (int r = 0; r < 7; ++r) {
    for (int c = 0; c < 7; ++c) {
      const bool inside = std::abs(r - 3) <= 1 && std::abs(c - 3) <= 1;
      EXPECT_NEAR(dot[r * 7 + c], inside ? 0.1f : 0.0f, 1e-6) << r << "," << c;
    }
  }
}

TEST(ImageShiftTest, DescribesItself) {
  EXPECT_EQ(DescribeShift(Shift(ShiftKind::kNoise, 0.1)), "noise sigma 0.1 (seed 1)");
  EXPECT_EQ(DescribeShift(Shift(ShiftKind::kContrast, 0.5)), "contrast factor 0.5");
  EXPECT_EQ(DescribeShift(Shift(ShiftKind::kBlur, 1.5)), "blur gaussian radius 1.5");
  EXPECT_EQ(DescribeShift(Shift(ShiftKind::kRotate, -15)), "rotate -15 degrees");
  EXPECT_EQ(DescribeShift(ImageShift()), "none");
}

}  // namespace
}  // namespace hapi::client
