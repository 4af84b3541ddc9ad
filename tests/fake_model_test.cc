// The fake model (core/fake_model.h) and the executor over the model seam,
// without LibTorch: the executor's answers, batched with compaction, must be
// those of an independent walk over the fake's per-exit probabilities.
#include "core/fake_model.h"

#include <algorithm>
#include <numeric>

#include "core/executor.h"
#include "core/files.h"
#include "core/model_metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace {

using ::hapi::testing::StatusIs;
using ::testing::HasSubstr;

// n images of 4x4 pixels, image i uniformly at (i + 0.5) / n.
std::vector<float> Images(int n, int pixels) {
  std::vector<float> out;
  for (int i = 0; i < n; ++i) out.insert(out.end(), pixels, (i + 0.5f) / n);
  return out;
}

FakeModelSpec SmallSpec() {
  FakeModelSpec spec;
  spec.num_stages = 5;
  spec.num_classes = 4;
  spec.height = spec.width = 4;
  return spec;
}

TEST(FakeModelTest, ManifestDescribesStagesExitsAndMacs) {
  const v1::ModelManifest m = FakeModelManifest(SmallSpec());
  ASSERT_EQ(m.stages_size(), 5);
  ASSERT_EQ(m.exits_size(), 5);
  EXPECT_EQ(m.class_names_size(), 4);
  for (int e = 0; e < m.exits_size(); ++e) {
    EXPECT_EQ(m.exits(e).after_stage(), e);
    EXPECT_EQ(m.exits(e).is_final(), e == 4);
    if (e > 0) {
      EXPECT_GT(m.stages(e).macs(), m.stages(e - 1).macs());
      EXPECT_GT(m.exits(e).cumulative_macs_fraction(), m.exits(e - 1).cumulative_macs_fraction());
    }
  }
  EXPECT_DOUBLE_EQ(m.exits(4).cumulative_macs_fraction(), 1.0);
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Model> model, MakeFakeModel(m));
  EXPECT_EQ(model->input_size(), 16);
  EXPECT_EQ(model->num_classes(), 4);
}

TEST(FakeModelTest, DeeperExitsAreSurerAndTheFinalLabelIsTheBin) {
  const v1::ModelManifest m = FakeModelManifest(SmallSpec());
  int surer_at_the_end = 0;  // means whose final exit is strictly surer than exit 0
  for (float mean : {0.05f, 0.2f, 0.26f, 0.5f, 0.74f, 0.99f}) {
    float previous = 0, first = 0;
    for (int e = 0; e < m.exits_size(); ++e) {
      std::vector<float> p = FakeProbabilities(m, e, mean);
      EXPECT_NEAR(std::accumulate(p.begin(), p.end(), 0.0f), 1.0f, 1e-5f);
      const float confidence = *std::max_element(p.begin(), p.end());
      EXPECT_GE(confidence, previous) << "mean " << mean << " exit " << e;
      if (e == 0) first = confidence;
      previous = confidence;
    }
    surer_at_the_end += previous > first;
    std::vector<float> final_p = FakeProbabilities(m, 4, mean);
    EXPECT_EQ(std::max_element(final_p.begin(), final_p.end()) - final_p.begin(),
              std::min(3, static_cast<int>(mean * 4)));
  }
  // Equal confidence at every depth would pass the checks above.
  EXPECT_GE(surer_at_the_end, 5) << "only a sample at a bin edge is equally unsure everywhere";
}

// The answer of `design` for a sample with mean pixel `mean`, walked directly
// over the fake's probabilities.
std::pair<int, int> Walk(const v1::ModelManifest& m, const Design& design, float mean) {
  for (size_t k = 0; k <= design.exits.size(); ++k) {
    const int exit = k < design.exits.size() ? design.exits[k] : m.exits_size() - 1;
    std::vector<float> p = FakeProbabilities(m, exit, mean);
    const auto best = std::max_element(p.begin(), p.end());
    if (k == design.exits.size() || *best >= design.thresholds[k]) {
      return {exit, static_cast<int>(best - p.begin())};
    }
  }
  return {-1, -1};
}

TEST(FakeModelTest, ExecutorBatchedWithCompactionMatchesAWalkOverTheFake) {
  const v1::ModelManifest m = FakeModelManifest(SmallSpec());
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Model> model, MakeFakeModel(m));
  const Design design = Design::Shared({0, 2}, 0.6f);
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<EarlyExitExecutor> executor,
                       EarlyExitExecutor::Create(model, design));
  constexpr int kImages = 97;
  const std::vector<float> pixels = Images(kImages, model->input_size());
  std::vector<int> per_exit(m.exits_size(), 0);
  for (int batch : {1, 8, kImages}) {
    for (int begin = 0; begin < kImages; begin += batch) {
      const int n = std::min(batch, kImages - begin);
      ASSERT_OK_AND_ASSIGN(std::vector<SampleResult> results,
                           executor->Run(pixels.data() + begin * model->input_size(), n));
      ASSERT_EQ(results.size(), static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) {
        const auto [exit, label] = Walk(m, design, (begin + i + 0.5f) / kImages);
        EXPECT_EQ(results[i].exit_index, exit) << "sample " << begin + i << " batch " << batch;
        EXPECT_EQ(results[i].label, label) << "sample " << begin + i << " batch " << batch;
        if (batch == 1) ++per_exit[results[i].exit_index];
      }
    }
  }
  // The design must leave at every depth, or compaction went untested.
  EXPECT_GT(per_exit[0], 0);
  EXPECT_GT(per_exit[2], 0);
  EXPECT_GT(per_exit[4], 0);
}

TEST(FakeModelTest, StagesRunOutOfOrderAreRefused) {
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Model> model,
                       MakeFakeModel(FakeModelManifest(SmallSpec())));
  const std::vector<float> pixels = Images(2, model->input_size());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<Activations> x, model->Input(pixels.data(), 2));
  EXPECT_THAT(model->RunStage(1, *x), StatusIs(absl::StatusCode::kFailedPrecondition));
  std::vector<float> probs;
  EXPECT_THAT(model->RunHead(0, *x, &probs), StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_OK(model->RunStage(0, *x));
  ASSERT_OK(model->RunHead(0, *x, &probs));
  EXPECT_EQ(probs.size(), 2u * model->num_classes());
}

TEST(FakeModelTest, LoaderReadsAFakeManifestAndRefusesOthers) {
  testing::ScopedTempDir dir;
  const std::string model_dir = dir.Join("m");
  EXPECT_THAT(LoadFakeModel(model_dir, ModelOptions()), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(MakeDirectories(model_dir));
  v1::ModelManifest manifest = FakeModelManifest(SmallSpec());
  ASSERT_OK(WriteTextProtoAtomically(model_dir + "/" + kManifestFile, manifest));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Model> model,
                       LoadFakeModel(model_dir, ModelOptions()));
  EXPECT_EQ(model->num_stages(), 5);
  manifest.set_dataset("fashion-mnist");
  ASSERT_OK(WriteTextProtoAtomically(model_dir + "/" + kManifestFile, manifest));
  EXPECT_THAT(LoadFakeModel(model_dir, ModelOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("not a fake model")));
}

// The fake's shape comes through its manifest's input spec, read back from
// disk like any model's; an invalid spec is refused at load.
TEST(FakeModelTest, InputShapeComesFromTheManifestsInputSpec) {
  FakeModelSpec spec = SmallSpec();
  spec.channels = 3;
  spec.height = 32;
  spec.width = 24;
  spec.resize = v1::InputSpec::RESIZE_CENTER_CROP;
  testing::ScopedTempDir dir;
  const std::string model_dir = dir.Join("m");
  ASSERT_OK(MakeDirectories(model_dir));
  v1::ModelManifest manifest = FakeModelManifest(spec);
  ASSERT_OK(WriteTextProtoAtomically(model_dir + "/" + kManifestFile, manifest));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Model> model,
                       LoadFakeModel(model_dir, ModelOptions()));
  EXPECT_EQ(ShapeString(model->input_spec()), "3x32x24");
  EXPECT_EQ(model->input_spec().resize(), v1::InputSpec::RESIZE_CENTER_CROP);
  EXPECT_EQ(model->input_shape().channels(), 3);
  EXPECT_EQ(model->input_shape().height(), 32);
  EXPECT_EQ(model->input_shape().width(), 24);
  EXPECT_EQ(model->input_size(), 3 * 32 * 24);
  // The executor runs it on inputs of that size.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<EarlyExitExecutor> executor,
                       EarlyExitExecutor::Create(model, Design::Shared({0}, 0.6f)));
  const std::vector<float> pixels = Images(2, model->input_size());
  ASSERT_OK_AND_ASSIGN(std::vector<SampleResult> results, executor->Run(pixels.data(), 2));
  EXPECT_EQ(results.size(), 2u);

  manifest.mutable_input()->set_channels(4);
  ASSERT_OK(WriteTextProtoAtomically(model_dir + "/" + kManifestFile, manifest));
  EXPECT_THAT(LoadFakeModel(model_dir, ModelOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("channels 4")));
}

// A fake manifest written before the input spec existed eats 1x28x28.
TEST(FakeModelTest, LegacyManifestEatsTheDefaultShape) {
  v1::ModelManifest manifest = FakeModelManifest(SmallSpec());
  manifest.clear_input();
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Model> model, MakeFakeModel(manifest));
  EXPECT_EQ(ShapeString(model->input_spec()), "1x28x28");
  EXPECT_EQ(model->input_size(), 28 * 28);
}

}  // namespace
}  // namespace hapi
