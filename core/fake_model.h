// A fake model behind the model seam, for tests that need a model but do not
// test one: no LibTorch, deterministic, cheap. It reads one number from each
// sample, its mean pixel m in [0,1], and answers like a real early-exit net:
//   - the final exit's label is the bin of m among num_classes equal bins;
//   - a sample near the centre of its bin is "easy": confident at every exit;
//     near a bin edge it is "hard": unsure early, and wrong at early exits
//     when very close to the edge;
//   - confidence grows with depth.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/input_spec.h"
#include "core/model.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

struct FakeModelSpec {
  std::string name = "fake";
  int num_stages = 6;  // a candidate exit after every stage; the last is final
  int num_classes = 10;
  // Its input spec (mean 0, std 1: the fake reads pixels as they come).
  int channels = kLegacyInputChannels, height = kLegacyInputSide, width = kLegacyInputSide;
  v1::InputSpec::Resize resize = v1::InputSpec::RESIZE;
};

// The manifest of a fake model: its input spec, stages, exits, MACs growing
// with depth, class names "class-<i>". Its `dataset` is "fake":
// FakeModelLoader refuses others.
v1::ModelManifest FakeModelManifest(const FakeModelSpec& spec);

// The fake described by `manifest` (a FakeModelManifest, possibly read back);
// INVALID_ARGUMENT for another manifest or an invalid input spec.
// Each stage takes `stage_time` (a sleep, so it holds its execution slot as a
// real network would without using the CPU): tests of queues and load need
// requests that take time.
absl::StatusOr<std::shared_ptr<const Model>> MakeFakeModel(
    const v1::ModelManifest& manifest, absl::Duration stage_time = absl::ZeroDuration());

// A ModelLoader for model directories whose manifest.pbtxt is a fake's.
absl::StatusOr<std::shared_ptr<const Model>> LoadFakeModel(const std::string& model_dir,
                                                           const ModelOptions& options);
// The same, for fakes whose stages take `stage_time`.
ModelLoader FakeModelLoader(absl::Duration stage_time);

// The fake's answer for a sample with mean pixel `mean` at `exit`: what the
// tests compare with (probabilities as RunHead gives them).
std::vector<float> FakeProbabilities(const v1::ModelManifest& manifest, int exit, float mean);

}  // namespace hapi
