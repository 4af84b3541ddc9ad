// The tiny early-exit model the model-level tests train in a few seconds, on
// synthetic images the tests make themselves (a bright bar whose row depends
// on the class, plus noise), so that every run sees the same data whatever is
// installed. Tests of the real data set say so and use LoadFashionMnist.
// Links hapi::model.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/fashion_mnist.h"
#include "model/early_exit_model.h"
#include "model/trainer.h"

namespace hapi {
namespace testing {

inline ImageSet SyntheticImages(int n, uint64_t seed) {
  ImageSet set;
  std::vector<int> perm = SeededPermutation(n * 7 + 13, seed);
  set.pixels.resize(static_cast<size_t>(n) * kImagePixels);
  set.labels.resize(n);
  for (int i = 0; i < n; ++i) {
    int label = perm[i] % kNumClasses;
    set.labels[i] = static_cast<uint8_t>(label);
    for (int p = 0; p < kImagePixels; ++p) {
      int row = p / kImageSide;
      uint8_t noise = static_cast<uint8_t>((perm[(i + p) % perm.size()] * 31) % 64);
      set.pixels[static_cast<size_t>(i) * kImagePixels + p] =
          static_cast<uint8_t>((row / 3 == label ? 180 : 0) + noise);
    }
  }
  return set;
}

// 2000 training, 500 validation and `test` test images, all synthetic.
inline FashionMnist TinyTrainingData(int test) {
  FashionMnist data;
  data.train = SyntheticImages(2000, 1);
  data.validation = SyntheticImages(500, 2);
  data.test = SyntheticImages(std::max(test, 1), 3);
  data.test.Truncate(test);
  return data;
}

// Stem 8, widths 8/16/16, blocks 2/2/1: six stages; identity shortcuts
// (stages 1, 2, 4) and 1x1 strided ones (3: 8 -> 16 channels, 5: 16 -> 16
// channels); early-exit heads with a conv (28x28 stages 0-2) and without
// (14x14 stages 3-4).
inline v1::BackboneConfig TinyBackbone() {
  v1::BackboneConfig c;
  c.set_stem_channels(8);
  for (int w : {8, 16, 16}) c.add_widths(w);
  for (int b : {2, 2, 1}) c.add_blocks_per_group(b);
  c.set_num_classes(10);
  c.set_exit_conv_channels(8);
  c.set_exit_conv_min_size(14);
  return c;
}

// TinyBackbone, early exits 0..4. One epoch of each training stage, one
// thread (repeatable).
inline absl::StatusOr<std::unique_ptr<EarlyExitModel>> TrainTinyModel(const std::string& name,
                                                                      const FashionMnist& data) {
  const v1::BackboneConfig c = TinyBackbone();
  v1::TrainingConfig t = DefaultTrainingConfig();
  t.set_backbone_epochs(1);
  t.set_exit_epochs(1);
  t.set_batch_size(64);
  t.set_threads(1);
  TrainerOptions options;
  options.progress = false;
  return TrainEarlyExitModel(name, c, t, data, options);
}

}  // namespace testing
}  // namespace hapi
