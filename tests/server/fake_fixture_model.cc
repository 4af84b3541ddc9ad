// The server fixture's model for tests of the server itself: the fake model
// (core/fake_model.h), no LibTorch. Images are uniform grey levels with a
// little texture, spread over the fake's class bins so that every class and
// a mix of easy and hard samples appear.
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "core/fake_model.h"
#include "core/files.h"
#include "core/model_metadata.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"

namespace hapi {
namespace testing {

void MakeFixtureModel(const std::string& model_dir, ServerFixture* f) {
  constexpr int kImages = 200;
  FakeModelSpec spec;
  spec.name = kModelName;
  const v1::ModelManifest manifest = FakeModelManifest(spec);
  absl::Status st = MakeDirectories(model_dir);
  if (st.ok()) st = WriteTextProtoAtomically(absl::StrCat(model_dir, "/", kManifestFile), manifest);
  if (!st.ok()) {
    ADD_FAILURE() << st;
    std::fprintf(stderr, "server test fixture: %s\n", st.ToString().c_str());
    std::abort();
  }
  // 100 us a stage (0.1-0.6 ms a request): requests overlap under load, so
  // queues fill and batches form as they would with a real network.
  f->load_model = FakeModelLoader(absl::Microseconds(100));
  f->images.resize(static_cast<size_t>(kImages) * kImagePixels);
  f->true_labels.resize(kImages);
  for (int i = 0; i < kImages; ++i) {
    const int level = 20 + (i * 97) % 216;  // 20..235: texture below stays in 0..255
    double sum = 0;
    for (int p = 0; p < kImagePixels; ++p) {
      const uint8_t v = static_cast<uint8_t>(level + (p * 7 + i) % 21 - 10);
      f->images[static_cast<size_t>(i) * kImagePixels + p] = v;
      sum += v / 255.0;
    }
    const std::vector<float> final_probs = FakeProbabilities(
        manifest, manifest.exits_size() - 1, static_cast<float>(sum / kImagePixels));
    f->true_labels[i] = static_cast<int>(std::max_element(final_probs.begin(), final_probs.end()) -
                                         final_probs.begin());
  }
}

}  // namespace testing
}  // namespace hapi
