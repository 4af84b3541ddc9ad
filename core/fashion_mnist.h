// Fashion-MNIST from IDX files (gzip), split train/validation/test.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace hapi {

inline constexpr char kDefaultFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";
inline constexpr int kImageSide = 28;
inline constexpr int kImagePixels = kImageSide * kImageSide;
inline constexpr int kNumClasses = 10;
extern const std::array<const char*, kNumClasses> kFashionMnistClassNames;

// Images as uint8 pixels, row-major, num x 28 x 28.
struct ImageSet {
  std::vector<uint8_t> pixels;
  std::vector<uint8_t> labels;
  int size() const { return static_cast<int>(labels.size()); }
  const uint8_t* image(int i) const {
    return pixels.data() + static_cast<size_t>(i) * kImagePixels;
  }
  // Keeps the first n samples (n >= size() keeps all).
  void Truncate(int n);
};

struct FashionMnist {
  ImageSet train;       // 55,000 of the official training set
  ImageSet validation;  // the other 5,000: designs are chosen here only
  ImageSet test;        // the official 10,000 test set: reporting only
  uint64_t split_seed = 0;
};

inline constexpr int kValidationSize = 5000;
inline constexpr uint64_t kDefaultSplitSeed = 20200807;

// Reads an IDX3 image file (magic 2051) of 28x28 images; `path` may be gzip.
absl::StatusOr<ImageSet> ReadIdxImages(const std::string& path);
// Reads an IDX1 label file (magic 2049) into `set->labels`; counts must match.
absl::Status ReadIdxLabels(const std::string& path, ImageSet* set);

// Loads the four files from `dir` and splits the training set with a
// permutation fixed by `split_seed` (portable: the same split on every
// platform). Errors name the file and the Debian package to install.
absl::StatusOr<FashionMnist> LoadFashionMnist(const std::string& dir,
                                              uint64_t split_seed = kDefaultSplitSeed);

// Deterministic Fisher-Yates permutation of 0..n-1 (splitmix64-based, so it
// does not depend on the standard library's distributions).
std::vector<int> SeededPermutation(int n, uint64_t seed);

}  // namespace hapi
