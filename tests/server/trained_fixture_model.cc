// The server fixture's model for tests of the hapi-server binary: a tiny
// network trained on synthetic images (tests/tiny_model.h), loaded through
// LibTorch as the binary loads it. Training is cached on disk between the
// processes ctest starts, keyed by this binary's identity.
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "gtest/gtest.h"
#include "model/torch_model.h"
#include "tests/server/server_fixture.h"
#include "tests/tiny_model.h"

#ifndef HAPI_SERVER_TEST_CACHE_DIR
#define HAPI_SERVER_TEST_CACHE_DIR ""
#endif

namespace hapi {
namespace testing {
namespace {

constexpr int kCachedImages = 200;

[[noreturn]] void Die(const std::string& what) {
  ADD_FAILURE() << what;
  std::fprintf(stderr, "server test fixture: %s\n", what.c_str());
  std::abort();
}

// This executable's identity: a rebuilt binary retrains.
std::string BinaryKey() {
  struct stat st {};
  if (::stat("/proc/self/exe", &st) != 0) return "";
  return absl::StrCat(st.st_size, "-", st.st_mtim.tv_sec, "-", st.st_mtim.tv_nsec);
}

// Trains the model and picks the test images, or reuses what an earlier
// process of this same binary left in the cache.
void TrainOrLoadCached(const std::string& model_dir, std::vector<uint8_t>* images,
                       std::vector<int>* labels) {
  const std::string cache_root = HAPI_SERVER_TEST_CACHE_DIR;
  const std::string key = BinaryKey();
  const bool use_cache =
      !cache_root.empty() && !key.empty() && std::getenv("HAPI_NO_CACHE") == nullptr;
  const std::string cache = absl::StrCat(cache_root, "/", key);
  if (use_cache) {
    auto cached = EarlyExitModel::Load(cache + "/model");
    auto bytes = ReadFile(cache + "/images.bin");
    if (cached.ok() && bytes.ok() && bytes->size() == kCachedImages * (kImagePixels + 1u)) {
      images->assign(bytes->begin(), bytes->begin() + kCachedImages * kImagePixels);
      labels->assign(bytes->begin() + kCachedImages * kImagePixels, bytes->end());
      if (absl::Status st = (*cached)->Save(model_dir); !st.ok()) Die(st.ToString());
      return;
    }
  }
  FashionMnist data = TinyTrainingData(kCachedImages);
  auto model = TrainTinyModel(kModelName, data);
  if (!model.ok()) Die(model.status().ToString());
  if (absl::Status st = (*model)->Save(model_dir); !st.ok()) Die(st.ToString());
  images->assign(data.test.pixels.begin(), data.test.pixels.end());
  labels->assign(data.test.labels.begin(), data.test.labels.end());
  if (use_cache && data.test.size() == kCachedImages) {
    std::error_code ec;
    // Older binaries' entries are dead weight.
    for (const auto& entry : std::filesystem::directory_iterator(cache_root, ec)) {
      if (entry.path().filename() != key) std::filesystem::remove_all(entry.path(), ec);
    }
    std::string bytes(data.test.pixels.begin(), data.test.pixels.end());
    bytes.append(data.test.labels.begin(), data.test.labels.end());
    // Best effort: a failed cache write only costs the next process a training.
    if (MakeDirectories(cache).ok() && (*model)->Save(cache + "/model").ok()) {
      WriteFileAtomically(cache + "/images.bin", bytes).IgnoreError();
    }
  }
}

}  // namespace

void MakeFixtureModel(const std::string& model_dir, ServerFixture* f) {
  SetIntraOpThreads(1);
  TrainOrLoadCached(model_dir, &f->images, &f->true_labels);
  f->load_model = [](const std::string& dir, const ModelOptions& options) {
    return LoadTorchModel(dir, options);
  };
}

}  // namespace testing
}  // namespace hapi
