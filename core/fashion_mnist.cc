#include "core/fashion_mnist.h"

#include <zlib.h>

#include <filesystem>

#include "absl/strings/str_cat.h"

namespace hapi {

const std::array<const char*, kNumClasses> kFashionMnistClassNames = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

namespace {

constexpr char kPackageHint[] =
    " (install the Debian package dataset-fashion-mnist, or pass --data-dir)";

// gzread also reads uncompressed files transparently.
absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  if (!std::filesystem::exists(path)) {
    return absl::NotFoundError(absl::StrCat("dataset file ", path, " is missing", kPackageHint));
  }
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open dataset file ", path, kPackageHint));
  }
  std::string out;
  char buffer[1 << 16];
  while (true) {
    int n = gzread(file, buffer, sizeof(buffer));
    if (n < 0) {
      int errnum = 0;
      std::string message = gzerror(file, &errnum);
      gzclose(file);
      return absl::DataLossError(
          absl::StrCat("dataset file ", path, " is corrupt: ", message, kPackageHint));
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  // gzread reports a truncated gzip stream only at close / via gzerror.
  int errnum = 0;
  const char* message = gzerror(file, &errnum);
  std::string error_text = message ? message : "";
  if (gzclose(file) != Z_OK || (errnum != Z_OK && errnum != Z_STREAM_END)) {
    return absl::DataLossError(absl::StrCat(
        "dataset file ", path, " is corrupt or truncated: ", error_text, kPackageHint));
  }
  return out;
}

uint32_t BigEndian32(const std::string& data, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data()) + offset;
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

absl::Status Malformed(const std::string& path, absl::string_view why) {
  return absl::DataLossError(
      absl::StrCat("dataset file ", path, " is not a valid IDX file: ", why, kPackageHint));
}

}  // namespace

void ImageSet::Truncate(int n) {
  if (n >= size() || n < 0) return;
  labels.resize(static_cast<size_t>(n));
  pixels.resize(static_cast<size_t>(n) * kImagePixels);
}

absl::StatusOr<ImageSet> ReadIdxImages(const std::string& path) {
  absl::StatusOr<std::string> data = ReadMaybeGzip(path);
  if (!data.ok()) return data.status();
  if (data->size() < 16) return Malformed(path, "shorter than the 16-byte header");
  uint32_t magic = BigEndian32(*data, 0);
  if (magic != 2051) {
    return Malformed(path, absl::StrCat("magic ", magic, ", expected 2051 (IDX3 images)"));
  }
  uint32_t count = BigEndian32(*data, 4), rows = BigEndian32(*data, 8),
           cols = BigEndian32(*data, 12);
  if (rows != kImageSide || cols != kImageSide) {
    return Malformed(path, absl::StrCat("images are ", rows, "x", cols, ", expected 28x28"));
  }
  size_t expected = 16 + static_cast<size_t>(count) * kImagePixels;
  if (data->size() != expected) {
    return Malformed(path, absl::StrCat("holds ", data->size(), " bytes, header promises ",
                                        expected, " (", count, " images): truncated"));
  }
  ImageSet set;
  set.pixels.assign(data->begin() + 16, data->end());
  set.labels.assign(count, 0);
  return set;
}

absl::Status ReadIdxLabels(const std::string& path, ImageSet* set) {
  absl::StatusOr<std::string> data = ReadMaybeGzip(path);
  if (!data.ok()) return data.status();
  if (data->size() < 8) return Malformed(path, "shorter than the 8-byte header");
  uint32_t magic = BigEndian32(*data, 0);
  if (magic != 2049) {
    return Malformed(path, absl::StrCat("magic ", magic, ", expected 2049 (IDX1 labels)"));
  }
  uint32_t count = BigEndian32(*data, 4);
  if (data->size() != 8 + static_cast<size_t>(count)) {
    return Malformed(path, absl::StrCat("holds ", data->size() - 8, " labels, header promises ",
                                        count, ": truncated"));
  }
  if (count != set->labels.size()) {
    return Malformed(path, absl::StrCat(count, " labels for ", set->labels.size(), " images"));
  }
  for (uint32_t i = 0; i < count; ++i) {
    auto label = static_cast<uint8_t>((*data)[8 + i]);
    if (label >= kNumClasses) {
      return Malformed(path,
                       absl::StrCat("label ", int{label}, " at index ", i, " is outside 0..9"));
    }
    set->labels[i] = label;
  }
  return absl::OkStatus();
}

std::vector<int> SeededPermutation(int n, uint64_t seed) {
  std::vector<int> perm(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) perm[i] = i;
  uint64_t state = seed;
  auto next = [&state]() {  // splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  };
  for (int i = n - 1; i > 0; --i) {
    int j = static_cast<int>(next() % static_cast<uint64_t>(i + 1));
    std::swap(perm[i], perm[j]);
  }
  return perm;
}

absl::StatusOr<FashionMnist> LoadFashionMnist(const std::string& dir, uint64_t split_seed) {
  auto load = [&dir](const char* images, const char* labels) -> absl::StatusOr<ImageSet> {
    absl::StatusOr<ImageSet> set = ReadIdxImages(absl::StrCat(dir, "/", images));
    if (!set.ok()) return set.status();
    absl::Status st = ReadIdxLabels(absl::StrCat(dir, "/", labels), &*set);
    if (!st.ok()) return st;
    return set;
  };
  absl::StatusOr<ImageSet> full_train =
      load("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz");
  if (!full_train.ok()) return full_train.status();
  absl::StatusOr<ImageSet> test = load("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz");
  if (!test.ok()) return test.status();
  if (full_train->size() <= kValidationSize) {
    return absl::FailedPreconditionError(absl::StrCat("training set in ", dir, " has ",
                                                      full_train->size(),
                                                      " images; need more than ", kValidationSize));
  }

  FashionMnist data;
  data.split_seed = split_seed;
  data.test = *std::move(test);
  std::vector<int> perm = SeededPermutation(full_train->size(), split_seed);
  auto copy_into = [&](ImageSet* dst, int begin, int end) {
    dst->pixels.resize(static_cast<size_t>(end - begin) * kImagePixels);
    dst->labels.resize(static_cast<size_t>(end - begin));
    for (int k = begin; k < end; ++k) {
      int src = perm[k];
      std::copy_n(full_train->image(src), kImagePixels,
                  dst->pixels.data() + static_cast<size_t>(k - begin) * kImagePixels);
      dst->labels[k - begin] = full_train->labels[src];
    }
  };
  int n = full_train->size();
  copy_into(&data.validation, 0, kValidationSize);
  copy_into(&data.train, kValidationSize, n);
  return data;
}

}  // namespace hapi
