// The early-exit network, its two-stage training, calibration and the saved
// artifact. The only test translation unit that includes LibTorch.
//
// Everything uses a tiny backbone (4 stages, a few thousand parameters) and
// small synthetic data sets, so that each test trains in well under a second.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/calibration_table.h"
#include "core/exit_policy.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "model/early_exit_model.h"
#include "model/network.h"
#include "model/torch_model.h"
#include "model/trainer.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace {

namespace fs = std::filesystem;
using ::hapi::testing::IsOk;
using ::hapi::testing::ListDir;
using ::hapi::testing::ReadBytes;
using ::hapi::testing::ScopedTempDir;
using ::hapi::testing::StatusIs;
using ::hapi::testing::WriteBytes;
using ::testing::AllOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

// --- Fixtures and helpers ------------------------------------------------------

v1::BackboneConfig TinyBackbone() {
  v1::BackboneConfig c;
  c.set_stem_channels(4);
  for (int w : {4, 8, 8}) c.add_widths(w);
  for (int b : {1, 1, 1}) c.add_blocks_per_group(b);
  c.set_num_classes(10);
  c.set_exit_conv_channels(4);
  c.set_exit_conv_min_size(14);
  return c;
}

v1::TrainingConfig TinyTraining() {
  v1::TrainingConfig c = DefaultTrainingConfig();
  c.set_backbone_epochs(1);
  c.set_exit_epochs(1);
  c.set_batch_size(64);
  c.set_train_limit(512);
  c.set_threads(1);
  return c;
}

TrainerOptions Quiet() {
  TrainerOptions o;
  o.progress = false;
  return o;
}

// Labels from a fixed seed; pixels are noise plus a class-dependent
// brightness, so that the task is learnable (but not trivially).
ImageSet SyntheticSet(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  ImageSet set;
  set.labels.resize(static_cast<size_t>(n));
  set.pixels.resize(static_cast<size_t>(n) * kImagePixels);
  for (int i = 0; i < n; ++i) {
    int label = static_cast<int>(rng() % kNumClasses);
    set.labels[i] = static_cast<uint8_t>(label);
    uint8_t* p = set.pixels.data() + static_cast<size_t>(i) * kImagePixels;
    for (int k = 0; k < kImagePixels; ++k) p[k] = static_cast<uint8_t>(label * 19 + rng() % 64);
  }
  return set;
}

FashionMnist SyntheticData() {
  FashionMnist data;
  data.train = SyntheticSet(600, 1);  // train_limit 512 keeps the first 512
  data.validation = SyntheticSet(200, 2);
  data.test = SyntheticSet(150, 3);
  return data;
}

torch::Tensor Batch(const EarlyExitModel& model, const ImageSet& set, int n) {
  absl::StatusOr<v1::InputSpec> input = EffectiveInputSpec(model.manifest());
  EXPECT_THAT(input, IsOk());
  return ImagesToTensor(set.image(0), n, *input);
}

std::unique_ptr<EarlyExitModel> CreateTiny(uint64_t init_seed = 1) {
  torch::manual_seed(init_seed);
  absl::StatusOr<std::unique_ptr<EarlyExitModel>> model =
      EarlyExitModel::Create("tiny", TinyBackbone());
  EXPECT_THAT(model, IsOk());
  return model.ok() ? *std::move(model) : nullptr;
}

using TensorMap = std::map<std::string, torch::Tensor>;

// Clones of every parameter and buffer of `module`, by name.
TensorMap Snapshot(const torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters())
    out["param " + p.key()] = p.value().detach().clone();
  for (const auto& b : module.named_buffers())
    out["buffer " + b.key()] = b.value().detach().clone();
  return out;
}

// Names of the tensors of `a` that are not bit-identical in `b`.
std::vector<std::string> DifferingTensors(const TensorMap& a, const TensorMap& b) {
  std::vector<std::string> differing;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end() || !t.sizes().equals(it->second.sizes()) || !torch::equal(t, it->second)) {
      differing.push_back(name);
    }
  }
  for (const auto& [name, t] : b) {
    if (a.count(name) == 0) differing.push_back(name + " (only in second)");
  }
  return differing;
}

std::vector<torch::Tensor> AllExitLogits(EarlyExitModel& model, const torch::Tensor& x) {
  torch::InferenceMode guard;
  model.network().SetTraining(false, false);
  return model.network().ForwardAllExits(x);
}

class ModelTest : public ::testing::Test {
 protected:
  void SetUp() override { torch::set_num_threads(1); }
};

// --- Network structure -----------------------------------------------------------

using NetworkTest = ModelTest;

TEST_F(NetworkTest, StageCountFollowsConfig) {
  EarlyExitNetwork net(TinyBackbone());
  EXPECT_EQ(net.num_stages(), 1 + 1 + 1 + 1);
  EXPECT_GE(net.num_stages(), 4);
  EXPECT_EQ(net.num_exits(), net.num_stages());
  EXPECT_EQ(net.final_exit(), net.num_stages() - 1);
  EXPECT_EQ(net.backbone()->stage_list.size(), static_cast<size_t>(net.num_stages()));
  EXPECT_EQ(net.exit_heads()->size(), static_cast<size_t>(net.num_exits() - 1));

  v1::BackboneConfig deep = TinyBackbone();
  deep.set_blocks_per_group(1, 3);
  deep.set_blocks_per_group(2, 2);
  EXPECT_EQ(EarlyExitNetwork(deep).num_stages(), 1 + 1 + 3 + 2);
}

TEST_F(NetworkTest, StageOutputShapesMatchStageInfo) {
  EarlyExitNetwork net(TinyBackbone());
  net.SetTraining(false, false);
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({3, 1, 28, 28});
  ASSERT_EQ(net.stage_infos().size(), static_cast<size_t>(net.num_stages()));
  for (int s = 0; s < net.num_stages(); ++s) {
    const v1::StageInfo& info = net.stage_infos()[s];
    EXPECT_EQ(info.index(), s);
    x = net.ForwardStage(s, x);
    EXPECT_THAT(x.sizes().vec(), ElementsAre(3, info.output().channels(), info.output().height(),
                                             info.output().width()))
        << info.name();
    torch::Tensor logits = net.ExitLogits(s, x);
    EXPECT_THAT(logits.sizes().vec(), ElementsAre(3, 10)) << "exit " << s;
  }
  // The tiny config: 28x28 (stem, group 0), then 14x14 and 7x7.
  EXPECT_EQ(net.stage_infos()[0].name(), "stem");
  EXPECT_EQ(net.stage_infos()[1].output().height(), 28);
  EXPECT_EQ(net.stage_infos()[2].output().height(), 14);
  EXPECT_EQ(net.stage_infos()[3].output().height(), 7);
  EXPECT_EQ(net.stage_infos()[3].output().channels(), 8);
}

TEST_F(NetworkTest, AllExitsAndFinalAgree) {
  EarlyExitNetwork net(TinyBackbone());
  net.SetTraining(false, false);
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::randn({3, 1, 28, 28});
  std::vector<torch::Tensor> logits = net.ForwardAllExits(x);
  ASSERT_EQ(logits.size(), static_cast<size_t>(net.num_exits()));
  for (const torch::Tensor& l : logits) EXPECT_THAT(l.sizes().vec(), ElementsAre(3, 10));
  EXPECT_TRUE(torch::allclose(logits.back(), net.ForwardFinal(x), 1e-5, 1e-6));
  // Each sample's logits depend on that sample only (eval mode).
  std::vector<torch::Tensor> first = net.ForwardAllExits(x.slice(0, 0, 1));
  for (int e = 0; e < net.num_exits(); ++e) {
    EXPECT_TRUE(torch::allclose(first[e], logits[e].slice(0, 0, 1), 1e-4, 1e-5)) << "exit " << e;
  }
}

TEST_F(NetworkTest, ExitInfosDescribeTheExits) {
  EarlyExitNetwork net(TinyBackbone());
  const auto& exits = net.exit_infos();
  ASSERT_EQ(exits.size(), static_cast<size_t>(net.num_exits()));
  double previous = 0;
  for (int e = 0; e < net.num_exits(); ++e) {
    EXPECT_EQ(exits[e].index(), e);
    EXPECT_EQ(exits[e].after_stage(), e);
    EXPECT_EQ(exits[e].is_final(), e == net.final_exit());
    EXPECT_GT(exits[e].cumulative_macs_fraction(), previous);
    previous = exits[e].cumulative_macs_fraction();
  }
  EXPECT_DOUBLE_EQ(exits.back().cumulative_macs_fraction(), 1.0);
  EXPECT_EQ(exits.back().name(), "final");
  EXPECT_EQ(exits[0].name(), "exit0.stem");
  EXPECT_EQ(exits[2].name(), "exit2.group1.block0");
}

TEST_F(NetworkTest, MacsMatchHandComputedValues) {
  EarlyExitNetwork net(TinyBackbone());
  const auto& st = net.stage_infos();
  // MACs of a k x k conv = out_channels * out_h * out_w * in_channels * k * k.
  // Stem: 3x3 conv 1 -> 4 channels at 28x28 (stride 1, padding 1).
  const int64_t stem = 4 * 28 * 28 * 1 * 9;
  EXPECT_EQ(stem, 28224);
  EXPECT_EQ(st[0].macs(), stem);
  // group0.block0: 4 -> 4 at 28x28, two 3x3 convs, identity shortcut.
  const int64_t block0 = 2 * (4 * 28 * 28 * 4 * 9);
  EXPECT_EQ(st[1].macs(), block0);
  // group1.block0: 4 -> 8 with stride 2, so 14x14 out: conv1 3x3 4->8,
  // conv2 3x3 8->8, 1x1 shortcut 4->8, all at 14x14.
  const int64_t strided = 8 * 14 * 14 * 4 * 9 + 8 * 14 * 14 * 8 * 9 + 8 * 14 * 14 * 4 * 1;
  EXPECT_EQ(strided, 56448 + 112896 + 6272);
  EXPECT_EQ(st[2].macs(), strided);
  // group2.block0: 8 -> 8 with stride 2 (7x7 out): still a 1x1 shortcut.
  const int64_t strided2 = 8 * 7 * 7 * 8 * 9 * 2 + 8 * 7 * 7 * 8;
  EXPECT_EQ(st[3].macs(), strided2);
  EXPECT_EQ(net.backbone_macs(), stem + block0 + strided + strided2);
  // Final classifier: linear 8 -> 10 after global average pooling.
  EXPECT_EQ(net.full_network_macs(), net.backbone_macs() + 8 * 10);
  EXPECT_EQ(net.exit_infos().back().macs(), 8 * 10);
  // Exit after the stem (28x28 > exit_conv_min_size 14): 3x3/2 conv 4 -> 4
  // to 14x14, 4x4 adaptive pool, linear 4*4*4 -> 10.
  EXPECT_EQ(net.exit_infos()[0].macs(), 4 * 14 * 14 * 4 * 9 + 4 * 4 * 4 * 10);
  // Exit after group1.block0 (14x14, not > 14): no conv, 4x4 pool, linear 8*16 -> 10.
  EXPECT_EQ(net.exit_infos()[2].macs(), 8 * 4 * 4 * 10);
  EXPECT_DOUBLE_EQ(net.exit_infos()[0].cumulative_macs_fraction(),
                   static_cast<double>(stem + net.exit_infos()[0].macs()) /
                       static_cast<double>(net.full_network_macs()));

  // The default architecture: stem 1 -> 16 at 28x28, group1.block0 16 -> 32 /2.
  EarlyExitNetwork full(DefaultBackboneConfig());
  EXPECT_EQ(full.stage_infos()[0].macs(), 16 * 28 * 28 * 1 * 9);
  EXPECT_EQ(full.stage_infos()[4].name(), "group1.block0");
  EXPECT_EQ(full.stage_infos()[4].macs(),
            32 * 14 * 14 * 16 * 9 + 32 * 14 * 14 * 32 * 9 + 32 * 14 * 14 * 16);
}

TEST_F(NetworkTest, DefaultConfigHasManyCheapExits) {
  EarlyExitNetwork net(DefaultBackboneConfig());
  EXPECT_GE(net.num_exits(), 8);
  EXPECT_EQ(net.num_stages(), 10);
  for (const v1::ExitInfo& e : net.exit_infos()) {
    if (e.is_final()) continue;
    EXPECT_LE(static_cast<double>(e.macs()), 0.05 * static_cast<double>(net.backbone_macs()))
        << e.name() << ": " << e.macs() << " MACs of " << net.backbone_macs();
  }
}

TEST_F(NetworkTest, ParameterCountsMatchTheModules) {
  EarlyExitNetwork net(TinyBackbone());
  auto count = [](const std::vector<torch::Tensor>& params) {
    int64_t n = 0;
    for (const auto& p : params) n += p.numel();
    return n;
  };
  // Stem by hand: 3x3 conv 1 -> 4 without bias (36) + batch-norm gamma/beta (8).
  EXPECT_EQ(net.stage_infos()[0].params(), 4 * 1 * 9 + 2 * 4);
  int64_t total = 0;
  for (int s = 0; s < net.num_stages(); ++s) {
    EXPECT_EQ(net.stage_infos()[s].params(), count(net.backbone()->stage_list[s]->parameters()))
        << "stage " << s;
  }
  for (int e = 0; e + 1 < net.num_exits(); ++e) {
    EXPECT_EQ(net.exit_infos()[e].params(), count((*net.exit_heads())[e]->parameters()))
        << "exit " << e;
  }
  EXPECT_EQ(net.exit_infos().back().params(), count(net.backbone()->classifier->parameters()));
  EXPECT_EQ(net.exit_infos().back().params(), 8 * 10 + 10);
  total = count(net.backbone()->parameters()) + count(net.exit_heads()->parameters());
  EXPECT_EQ(net.NumParameters(), total);
}

TEST_F(NetworkTest, FreezeBackboneStopsItsGradientsOnly) {
  EarlyExitNetwork net(TinyBackbone());
  net.FreezeBackbone();
  for (const auto& p : net.backbone()->named_parameters()) {
    EXPECT_FALSE(p.value().requires_grad()) << p.key();
  }
  for (const auto& p : net.exit_heads()->named_parameters()) {
    EXPECT_TRUE(p.value().requires_grad()) << p.key();
  }
}

TEST_F(NetworkTest, ImagesToTensorNormalises) {
  std::vector<uint8_t> pixels(2 * kImagePixels, 0);
  pixels[0] = 255;
  pixels[kImagePixels + 28 * 3 + 5] = 51;  // image 1, row 3, column 5
  torch::Tensor t = ImagesToTensor(pixels.data(), 2, MakeInputSpec(1, 28, 28, 0.5f, 0.25f));
  EXPECT_THAT(t.sizes().vec(), ElementsAre(2, 1, 28, 28));
  EXPECT_EQ(t.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(t[0][0][0][0].item<float>(), (1.0f - 0.5f) / 0.25f, 1e-6);
  EXPECT_NEAR(t[0][0][0][1].item<float>(), (0.0f - 0.5f) / 0.25f, 1e-6);
  EXPECT_NEAR(t[1][0][3][5].item<float>(), (0.2f - 0.5f) / 0.25f, 1e-5);
  EXPECT_EQ(pixels[0], 255);  // the input is not modified
}

// Each channel with its own mean and std; the same for one value given for
// every channel.
TEST_F(NetworkTest, ImagesToTensorNormalisesPerChannel) {
  v1::InputSpec input = MakeInputSpec(3, 2, 3, 0, 1);
  input.clear_mean();
  input.clear_std();
  const float mean[3] = {0.1f, 0.5f, 0.9f}, std[3] = {0.2f, 0.25f, 0.5f};
  for (int c = 0; c < 3; ++c) {
    input.add_mean(mean[c]);
    input.add_std(std[c]);
  }
  std::vector<uint8_t> pixels(2 * 3 * 2 * 3);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 7);
  torch::Tensor t = ImagesToTensor(pixels.data(), 2, input);
  ASSERT_THAT(t.sizes().vec(), ElementsAre(2, 3, 2, 3));
  auto a = t.accessor<float, 4>();
  for (int n = 0; n < 2; ++n) {
    for (int c = 0; c < 3; ++c) {
      for (int y = 0; y < 2; ++y) {
        for (int x = 0; x < 3; ++x) {
          const float p = pixels[((n * 3 + c) * 2 + y) * 3 + x] / 255.0f;
          EXPECT_NEAR(a[n][c][y][x], (p - mean[c]) / std[c], 1e-5) << n << c << y << x;
        }
      }
    }
  }
  // InputNormalization on floats, one mean and std for all three channels.
  const torch::Tensor ones = torch::ones({1, 3, 2, 2});
  torch::Tensor same = InputNormalization(MakeInputSpec(3, 2, 2, 0.5f, 0.25f))(ones);
  EXPECT_TRUE(torch::allclose(same, torch::full({1, 3, 2, 2}, 2.0f)));
  EXPECT_TRUE(torch::equal(ones, torch::ones({1, 3, 2, 2})));  // not modified
}

// The network takes its input's channels and size from the spec: stem, stage
// shapes and MACs, square or not.
TEST_F(NetworkTest, ShapeAndMacsFollowTheInputSpec) {
  for (auto [height, width] : {std::pair{32, 32}, {32, 24}}) {
    SCOPED_TRACE(::testing::Message() << height << "x" << width);
    const v1::InputSpec input = MakeInputSpec(3, height, width, 0.5f, 0.25f);
    EarlyExitNetwork net(TinyBackbone(), input);
    net.SetTraining(false, false);
    torch::NoGradGuard no_grad;
    EXPECT_EQ(net.stage_infos()[0].macs(), int64_t{4} * height * width * 3 * 9);
    EXPECT_EQ(net.stage_infos()[2].output().height(), height / 2);
    EXPECT_EQ(net.stage_infos()[2].output().width(), width / 2);
    std::vector<uint8_t> pixels(2 * InputSize(input), 100);
    torch::Tensor x = ImagesToTensor(pixels.data(), 2, input);
    for (int s = 0; s < net.num_stages(); ++s) {
      const v1::StageInfo& info = net.stage_infos()[s];
      x = net.ForwardStage(s, x);
      EXPECT_THAT(x.sizes().vec(), ElementsAre(2, info.output().channels(), info.output().height(),
                                               info.output().width()))
          << info.name();
      EXPECT_THAT(net.ExitLogits(s, x).sizes().vec(), ElementsAre(2, 10)) << "exit " << s;
    }
  }
  // The default input is a manifest's without a spec: 1x28x28.
  EXPECT_EQ(EarlyExitNetwork(TinyBackbone()).stage_infos()[0].macs(), int64_t{4} * 28 * 28 * 9);
}

// The served model normalises with its manifest's input spec (here not the
// legacy input_mean/input_std beside it), and its input shape is the spec's.
TEST_F(NetworkTest, ServedModelNormalisesWithTheInputSpec) {
  std::unique_ptr<EarlyExitModel> model = CreateTiny();
  ASSERT_NE(model, nullptr);
  const v1::InputSpec input = MakeInputSpec(1, 28, 28, 0.7f, 0.1f);
  *model->mutable_manifest()->mutable_input() = input;
  absl::StatusOr<std::shared_ptr<const Model>> served = MakeTorchModel(*model);
  ASSERT_THAT(served, IsOk());
  EXPECT_EQ((*served)->input_spec().SerializeAsString(), input.SerializeAsString());
  EXPECT_EQ((*served)->input_size(), 28 * 28);
  const int n = 3;
  const ImageSet set = SyntheticSet(n, 5);
  std::vector<float> pixels(set.pixels.begin(), set.pixels.begin() + n * 28 * 28);
  for (float& p : pixels) p /= 255.0f;
  absl::StatusOr<std::unique_ptr<Activations>> x = (*served)->Input(pixels.data(), n);
  ASSERT_THAT(x, IsOk());
  for (int s = 0; s < (*served)->num_stages(); ++s)
    ASSERT_THAT((*served)->RunStage(s, **x), IsOk());
  std::vector<float> probabilities;
  ASSERT_THAT((*served)->RunHead((*served)->final_exit(), **x, &probabilities), IsOk());
  torch::InferenceMode guard;
  model->network().SetTraining(false, false);
  torch::Tensor want =
      torch::softmax(model->network().ForwardFinal(ImagesToTensor(set.image(0), n, input)), 1);
  ASSERT_EQ(probabilities.size(), static_cast<size_t>(want.numel()));
  for (int i = 0; i < want.numel(); ++i) {
    EXPECT_NEAR(probabilities[i], want.view({-1})[i].item<float>(), 1e-4) << i;
  }
  // An invalid spec is refused at load.
  model->mutable_manifest()->mutable_input()->set_channels(2);
  EXPECT_THAT(MakeTorchModel(*model), StatusIs(absl::StatusCode::kInvalidArgument));
}

// --- EarlyExitModel::Create ---------------------------------------------------------

using CreateTest = ModelTest;

TEST_F(CreateTest, FillsTheManifest) {
  std::unique_ptr<EarlyExitModel> model = CreateTiny();
  ASSERT_NE(model, nullptr);
  const v1::ModelManifest& m = model->manifest();
  EXPECT_EQ(m.name(), "tiny");
  EXPECT_EQ(m.dataset(), "fashion-mnist");
  EXPECT_THAT(m.class_names(), SizeIs(10));
  EXPECT_EQ(m.class_names(9), "Ankle boot");
  EXPECT_EQ(m.stages_size(), 4);
  EXPECT_EQ(m.exits_size(), 4);
  EXPECT_EQ(m.backbone_macs(), model->network().backbone_macs());
  EXPECT_EQ(m.full_network_macs(), model->network().full_network_macs());
  EXPECT_EQ(m.backbone_weights(), kBackboneFile);
  EXPECT_EQ(m.exit_weights(), kExitsFile);
  EXPECT_EQ(m.validation_calibration(), kValidationCalibrationFile);
  EXPECT_EQ(m.test_calibration(), kTestCalibrationFile);
  EXPECT_GT(m.input_std(), 0.0f);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(m.backbone(), TinyBackbone()));
}

TEST_F(CreateTest, RejectsBadNamesAndConfigs) {
  EXPECT_THAT(EarlyExitModel::Create("Tiny", TinyBackbone()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model name")));
  EXPECT_THAT(EarlyExitModel::Create("../tiny", TinyBackbone()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  v1::BackboneConfig mismatch = TinyBackbone();
  mismatch.add_widths(16);  // 4 widths, 3 block counts
  EXPECT_THAT(EarlyExitModel::Create("tiny", mismatch),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("backbone config")));
  v1::BackboneConfig zero_width = TinyBackbone();
  zero_width.set_widths(1, 0);
  EXPECT_THAT(EarlyExitModel::Create("tiny", zero_width),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("group 1")));
  v1::BackboneConfig one_class = TinyBackbone();
  one_class.set_num_classes(1);
  EXPECT_THAT(EarlyExitModel::Create("tiny", one_class),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(EarlyExitModel::Create("tiny", v1::BackboneConfig()),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// --- Training -------------------------------------------------------------------------

using TrainerTest = ModelTest;

TEST_F(TrainerTest, RejectsInvalidConfigAndEmptyData) {
  std::unique_ptr<EarlyExitModel> model = CreateTiny();
  ASSERT_NE(model, nullptr);
  ImageSet train = SyntheticSet(64, 1), empty;
  v1::TrainingConfig bad = TinyTraining();
  bad.set_batch_size(0);
  EXPECT_THAT(TrainBackbone(bad, train, train, Quiet(), model.get()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(TrainExits(bad, train, Quiet(), model.get()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  v1::TrainingConfig no_rate = TinyTraining();
  no_rate.set_exit_learning_rate(0);
  EXPECT_THAT(TrainEarlyExitModel("tiny", TinyBackbone(), no_rate, SyntheticData(), Quiet()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(TrainBackbone(TinyTraining(), empty, train, Quiet(), model.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(TrainExits(TinyTraining(), empty, Quiet(), model.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty")));
  EXPECT_THAT(
      TrainEarlyExitModel("No Such Name", TinyBackbone(), TinyTraining(), SyntheticData(), Quiet()),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model name")));
}

TEST_F(TrainerTest, TrainBackboneRecordsEpochsAndLeavesExitHeadsAlone) {
  std::unique_ptr<EarlyExitModel> model = CreateTiny();
  ASSERT_NE(model, nullptr);
  v1::TrainingConfig config = TinyTraining();
  config.set_backbone_epochs(2);
  ImageSet train = SyntheticSet(256, 1), validation = SyntheticSet(100, 2);
  TensorMap backbone_before = Snapshot(*model->network().backbone());
  TensorMap heads_before = Snapshot(*model->network().exit_heads());

  ASSERT_THAT(TrainBackbone(config, train, validation, Quiet(), model.get()), IsOk());

  const v1::TrainingReport& r = model->manifest().report();
  EXPECT_EQ(r.backbone_epoch_seconds_size(), 2);
  EXPECT_EQ(r.backbone_epoch_train_loss_size(), 2);
  ASSERT_EQ(r.backbone_epoch_val_accuracy_size(), 2);
  for (double acc : r.backbone_epoch_val_accuracy()) {
    EXPECT_GE(acc, 0.0);
    EXPECT_LE(acc, 1.0);
  }
  for (double loss : r.backbone_epoch_train_loss()) EXPECT_TRUE(std::isfinite(loss) && loss > 0);
  EXPECT_THAT(DifferingTensors(heads_before, Snapshot(*model->network().exit_heads())),
              ::testing::IsEmpty());
  // Every backbone parameter was trained.
  TensorMap backbone_after = Snapshot(*model->network().backbone());
  for (const auto& [name, t] : backbone_before) {
    if (name.rfind("param ", 0) == 0) {
      EXPECT_FALSE(torch::equal(t, backbone_after.at(name))) << name << " did not change";
    }
  }
}

TEST_F(TrainerTest, TrainExitsLeavesTheBackboneBitIdentical) {
  std::unique_ptr<EarlyExitModel> model = CreateTiny();
  ASSERT_NE(model, nullptr);
  const v1::TrainingConfig config = TinyTraining();
  ImageSet train = SyntheticSet(512, 1), validation = SyntheticSet(100, 2);
  ASSERT_THAT(TrainBackbone(config, train, validation, Quiet(), model.get()), IsOk());

  EarlyExitNetwork& net = model->network();
  const TensorMap backbone_before = Snapshot(*net.backbone());
  const TensorMap heads_before = Snapshot(*net.exit_heads());
  ASSERT_GT(backbone_before.size(), 20u);  // parameters and batch-norm buffers
  const torch::Tensor x = Batch(*model, validation, 64);
  torch::Tensor final_before;
  {
    torch::NoGradGuard no_grad;
    net.SetTraining(false, false);
    final_before = net.ForwardFinal(x).clone();
  }

  ASSERT_THAT(TrainExits(config, train, Quiet(), model.get()), IsOk());
  EXPECT_EQ(model->manifest().report().exit_epoch_seconds_size(), 1);

  EXPECT_THAT(DifferingTensors(backbone_before, Snapshot(*net.backbone())), ::testing::IsEmpty())
      << "the backbone changed while the exits trained";
  torch::Tensor final_after;
  {
    torch::NoGradGuard no_grad;
    net.SetTraining(false, false);
    final_after = net.ForwardFinal(x);
  }
  EXPECT_TRUE(torch::equal(final_before, final_after)) << "final-classifier logits changed";

  // The exit heads did train: every parameter and batch-norm statistic moved.
  const TensorMap heads_after = Snapshot(*net.exit_heads());
  int changed = 0;
  for (const auto& [name, t] : heads_before) {
    if (name.find("num_batches_tracked") != std::string::npos) continue;
    bool moved = !torch::equal(t, heads_after.at(name));
    EXPECT_TRUE(moved) << name << " did not change";
    changed += moved;
  }
  EXPECT_GT(changed, 0);
}

TEST_F(TrainerTest, RetrainExitsWithDistillationKeepsTheBackboneAndFinalAnswers) {
  std::unique_ptr<EarlyExitModel> model = CreateTiny();
  ASSERT_NE(model, nullptr);
  const FashionMnist data = SyntheticData();
  ASSERT_THAT(TrainBackbone(TinyTraining(), data.train, data.validation, Quiet(), model.get()),
              IsOk());
  ASSERT_THAT(TrainExits(TinyTraining(), data.train, Quiet(), model.get()), IsOk());
  ASSERT_THAT(CalibrateModel(data, model.get()), IsOk());
  EarlyExitNetwork& net = model->network();
  const TensorMap backbone_before = Snapshot(*net.backbone());
  const TensorMap heads_before = Snapshot(*net.exit_heads());
  const CalibrationTable test_before = model->test_table();

  v1::TrainingConfig config = TinyTraining();
  config.set_exit_epochs(2);
  config.set_exit_distillation(0.5);
  config.set_distillation_temperature(3);
  ASSERT_THAT(RetrainExits(config, data, Quiet(), model.get()), IsOk());

  EXPECT_THAT(DifferingTensors(backbone_before, Snapshot(*net.backbone())), ::testing::IsEmpty());
  const TensorMap heads_after = Snapshot(*net.exit_heads());
  int changed = 0;
  for (const auto& [name, t] : heads_before) changed += !torch::equal(t, heads_after.at(name));
  EXPECT_GT(changed, 0) << "the heads were not retrained";
  // The final exit answers exactly as before; the tables were recomputed.
  const CalibrationTable& test_after = model->test_table();
  const int final_exit = test_after.num_exits() - 1;
  ASSERT_EQ(test_after.num_samples(), test_before.num_samples());
  int early_changed = 0;  // early-exit scores that moved: tables left alone would pass above
  for (int s = 0; s < test_after.num_samples(); ++s) {
    ASSERT_EQ(test_after.predicted(final_exit, s), test_before.predicted(final_exit, s)) << s;
    for (int e = 0; e < final_exit; ++e) {
      early_changed += test_after.confidence(e, s) != test_before.confidence(e, s);
    }
  }
  EXPECT_GT(early_changed, 0) << "the test table was not recomputed with the new heads";
  const v1::ModelManifest& m = model->manifest();
  EXPECT_EQ(m.training().exit_distillation(), 0.5);
  EXPECT_EQ(m.training().distillation_temperature(), 3);
  EXPECT_EQ(m.training().exit_epochs(), 2);
  EXPECT_GT(m.training().threads(), 0) << "the threads this run used";
  EXPECT_EQ(m.report().exit_epoch_seconds_size(), 2) << "only the new exit epochs";
  ASSERT_EQ(m.report().exits_size(), final_exit + 1);
  for (const auto& exit : m.report().exits()) {
    EXPECT_GT(exit.accuracy().test(), 0.0) << exit.exit_index();
  }

  // Invalid distillation settings are refused before anything changes.
  v1::TrainingConfig bad = config;
  bad.set_exit_distillation(1.5);
  EXPECT_THAT(RetrainExits(bad, data, Quiet(), model.get()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  bad = config;
  bad.set_distillation_temperature(0);
  EXPECT_THAT(RetrainExits(bad, data, Quiet(), model.get()),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DifferingTensors(heads_after, Snapshot(*net.exit_heads())), ::testing::IsEmpty());
}

// Validation data must not influence the trained backbone: it is what
// designs are chosen on. Two runs that differ only in the validation set must
// give the same weights and batch-norm statistics.
TEST_F(TrainerTest, ValidationDataDoesNotChangeTheBackbone) {
  const v1::TrainingConfig config = TinyTraining();
  ImageSet train = SyntheticSet(256, 1);
  std::unique_ptr<EarlyExitModel> a = CreateTiny(5), b = CreateTiny(5);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_THAT(
      DifferingTensors(Snapshot(*a->network().backbone()), Snapshot(*b->network().backbone())),
      ::testing::IsEmpty());
  const TensorMap initial = Snapshot(*a->network().backbone());
  ASSERT_THAT(TrainBackbone(config, train, SyntheticSet(300, 2), Quiet(), a.get()), IsOk());
  ASSERT_THAT(TrainBackbone(config, train, SyntheticSet(300, 3), Quiet(), b.get()), IsOk());
  EXPECT_THAT(
      DifferingTensors(Snapshot(*a->network().backbone()), Snapshot(*b->network().backbone())),
      ::testing::IsEmpty());
  // Two untrained backbones would be equal too.
  EXPECT_THAT(DifferingTensors(initial, Snapshot(*a->network().backbone())),
              Not(::testing::IsEmpty()))
      << "training did not change the backbone";
}

TEST_F(TrainerTest, SameSeedGivesIdenticalModelsAndAnotherSeedDoesNot) {
  const FashionMnist data = SyntheticData();
  v1::TrainingConfig config = TinyTraining();
  auto train = [&](const v1::TrainingConfig& c) {
    absl::StatusOr<std::unique_ptr<EarlyExitModel>> model =
        TrainEarlyExitModel("tiny", TinyBackbone(), c, data, Quiet());
    EXPECT_THAT(model, IsOk());
    return model.ok() ? *std::move(model) : nullptr;
  };
  std::unique_ptr<EarlyExitModel> first = train(config), second = train(config);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  EXPECT_THAT(DifferingTensors(Snapshot(*first->network().backbone()),
                               Snapshot(*second->network().backbone())),
              ::testing::IsEmpty());
  EXPECT_THAT(DifferingTensors(Snapshot(*first->network().exit_heads()),
                               Snapshot(*second->network().exit_heads())),
              ::testing::IsEmpty());
  EXPECT_EQ(first->validation_table().Serialize(), second->validation_table().Serialize());
  EXPECT_EQ(first->test_table().Serialize(), second->test_table().Serialize());

  config.set_seed(config.seed() + 1);
  std::unique_ptr<EarlyExitModel> other = train(config);
  ASSERT_NE(other, nullptr);
  EXPECT_THAT(DifferingTensors(Snapshot(*first->network().backbone()),
                               Snapshot(*other->network().backbone())),
              Not(::testing::IsEmpty()));
}

TEST_F(TrainerTest, PipelineFillsManifestAndTables) {
  const FashionMnist data = SyntheticData();
  const v1::TrainingConfig config = TinyTraining();
  absl::StatusOr<std::unique_ptr<EarlyExitModel>> model =
      TrainEarlyExitModel("tiny", TinyBackbone(), config, data, Quiet());
  ASSERT_THAT(model, IsOk());
  const v1::ModelManifest& m = (*model)->manifest();
  EXPECT_EQ(m.split().train(), 512);  // train_limit
  EXPECT_EQ(m.split().validation(), 200);
  EXPECT_EQ(m.split().test(), 150);
  EXPECT_EQ(m.training().seed(), config.seed());
  EXPECT_EQ(m.training().threads(), 1);
  EXPECT_EQ(m.report().num_parameters(), (*model)->network().NumParameters());
  EXPECT_EQ(m.report().backbone_epoch_seconds_size(), 1);
  EXPECT_EQ(m.report().exit_epoch_seconds_size(), 1);
  // The input spec: Fashion-MNIST's shape, the mean and std as before.
  ASSERT_TRUE(m.has_input());
  EXPECT_EQ(ShapeString(m.input()), "1x28x28");
  EXPECT_THAT(m.input().mean(), ElementsAre(m.input_mean()));
  EXPECT_THAT(m.input().std(), ElementsAre(m.input_std()));
  EXPECT_EQ(m.input().resize(), v1::InputSpec::RESIZE);
  EXPECT_EQ(m.input().layout(), "NCHW");

  const CalibrationTable& val = (*model)->validation_table();
  const CalibrationTable& test = (*model)->test_table();
  EXPECT_EQ(val.num_samples(), 200);
  EXPECT_EQ(test.num_samples(), 150);
  EXPECT_EQ(val.num_exits(), 4);
  EXPECT_EQ(val.num_classes(), 10);
  ASSERT_EQ(m.report().exits_size(), 4);
  for (int e = 0; e < 4; ++e) {
    EXPECT_DOUBLE_EQ(m.report().exits(e).accuracy().validation(), val.Accuracy(e));
    EXPECT_DOUBLE_EQ(m.report().exits(e).accuracy().test(), test.Accuracy(e));
  }
  for (int s = 0; s < test.num_samples(); ++s) EXPECT_EQ(test.true_label(s), data.test.labels[s]);
}

// The report's per-epoch validation accuracy must be the accuracy of the
// model as it is used afterwards (eval mode, running batch-norm statistics):
// after the last epoch the backbone no longer changes, so the last recorded
// value equals the final exit's accuracy in the validation calibration table.
TEST_F(TrainerTest, RecordedValidationAccuracyIsTheEvalModeAccuracy) {
  absl::StatusOr<std::unique_ptr<EarlyExitModel>> model =
      TrainEarlyExitModel("tiny", TinyBackbone(), TinyTraining(), SyntheticData(), Quiet());
  ASSERT_THAT(model, IsOk());
  const v1::TrainingReport& r = (*model)->manifest().report();
  ASSERT_EQ(r.backbone_epoch_val_accuracy_size(), 1);
  const CalibrationTable& val = (*model)->validation_table();
  EXPECT_DOUBLE_EQ(r.backbone_epoch_val_accuracy(0), val.Accuracy(val.num_exits() - 1));
}

// The trainer feeds Fashion-MNIST: a model that eats anything else is refused.
TEST_F(TrainerTest, RefusesAModelThatDoesNotEatFashionMnist) {
  std::unique_ptr<EarlyExitModel> model = CreateTiny();
  ASSERT_NE(model, nullptr);
  *model->mutable_manifest()->mutable_input() = MakeInputSpec(3, 32, 32, 0.5f, 0.25f);
  const ImageSet set = SyntheticSet(16, 1);
  EXPECT_THAT(TrainBackbone(TinyTraining(), set, set, Quiet(), model.get()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("3x32x32"), HasSubstr("1x28x28"))));
  EXPECT_THAT(TrainExits(TinyTraining(), set, Quiet(), model.get()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("3x32x32")));
  EXPECT_THAT(Calibrate(*model, set),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("3x32x32")));
}

// --- Calibration ------------------------------------------------------------------------

using CalibrateTest = ModelTest;

TEST_F(CalibrateTest, AgreesWithADirectForwardPass) {
  std::unique_ptr<EarlyExitModel> model = CreateTiny();
  ASSERT_NE(model, nullptr);
  // A briefly trained backbone so that predictions are not all alike.
  ImageSet train = SyntheticSet(256, 1);
  ASSERT_THAT(TrainBackbone(TinyTraining(), train, SyntheticSet(50, 9), Quiet(), model.get()),
              IsOk());
  const int n = 620;  // more than Calibrate's internal batch of 500
  ImageSet set = SyntheticSet(n, 4);

  absl::StatusOr<CalibrationTable> table = Calibrate(*model, set);
  ASSERT_THAT(table, IsOk());
  ASSERT_EQ(table->num_samples(), n);
  ASSERT_EQ(table->num_exits(), model->network().num_exits());
  ASSERT_EQ(table->num_classes(), 10);

  std::vector<torch::Tensor> logits = AllExitLogits(*model, Batch(*model, set, n));
  const int final_exit = model->network().final_exit();
  int final_hits = 0;
  for (int e = 0; e < table->num_exits(); ++e) {
    torch::Tensor probs = torch::softmax(logits[e], 1);
    torch::Tensor argmax = logits[e].argmax(1);
    torch::Tensor top2 = std::get<0>(probs.topk(2, 1));
    torch::Tensor entropy = -(probs * probs.clamp_min(1e-30).log()).sum(1);
    for (int s = 0; s < n; ++s) {
      SCOPED_TRACE(::testing::Message() << "exit " << e << " sample " << s);
      ASSERT_EQ(table->predicted(e, s), argmax[s].item<int64_t>());
      EXPECT_NEAR(table->confidence(e, s), top2[s][0].item<float>(), 1e-6);
      EXPECT_NEAR(table->score(ExitPolicy::kMargin, e, s),
                  top2[s][0].item<float>() - top2[s][1].item<float>(), 1e-6);
      EXPECT_NEAR(table->score(ExitPolicy::kEntropy, e, s),
                  1.0 - entropy[s].item<double>() / std::log(10.0), 1e-5);
      if (e == final_exit) final_hits += argmax[s].item<int64_t>() == set.labels[s];
    }
  }
  for (int s = 0; s < n; ++s) ASSERT_EQ(table->true_label(s), set.labels[s]);
  EXPECT_DOUBLE_EQ(table->Accuracy(final_exit), static_cast<double>(final_hits) / n);
  // Calibrating is a pure function of the model and the data.
  absl::StatusOr<CalibrationTable> again = Calibrate(*model, set);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(again->Serialize(), table->Serialize());
}

TEST_F(CalibrateTest, EmptySetGivesEmptyTable) {
  std::unique_ptr<EarlyExitModel> model = CreateTiny();
  ASSERT_NE(model, nullptr);
  absl::StatusOr<CalibrationTable> table = Calibrate(*model, ImageSet());
  ASSERT_THAT(table, IsOk());
  EXPECT_EQ(table->num_samples(), 0);
  EXPECT_EQ(table->num_exits(), 4);
}

// --- The saved artifact -------------------------------------------------------------------

class ArtifactTest : public ModelTest {
 protected:
  void SetUp() override {
    ModelTest::SetUp();
    absl::StatusOr<std::unique_ptr<EarlyExitModel>> model =
        TrainEarlyExitModel("tiny", TinyBackbone(), TinyTraining(), data_, Quiet());
    ASSERT_THAT(model, IsOk());
    model_ = *std::move(model);
    model_dir_ = dir_.Join("models/tiny");
  }

  void SaveOrDie() { ASSERT_THAT(model_->Save(model_dir_), IsOk()); }

  std::string File(const char* name) const { return model_dir_ + "/" + name; }

  ScopedTempDir dir_;
  FashionMnist data_ = SyntheticData();
  std::unique_ptr<EarlyExitModel> model_;
  std::string model_dir_;
};

TEST_F(ArtifactTest, SaveWritesEveryFileAndNoLeftovers) {
  SaveOrDie();
  EXPECT_THAT(ListDir(model_dir_),
              ElementsAre(kBackboneFile, kTestCalibrationFile, kValidationCalibrationFile,
                          kExitsFile, kManifestFile, kReportFile));
  EXPECT_THAT(ListDir(dir_.Join("models")), ElementsAre("tiny"));
  EXPECT_THAT(ReadBytes(File(kReportFile)), HasSubstr("# Model `tiny`"));
}

TEST_F(ArtifactTest, SaveLoadRoundTrip) {
  SaveOrDie();
  absl::StatusOr<std::unique_ptr<EarlyExitModel>> loaded = EarlyExitModel::Load(model_dir_);
  ASSERT_THAT(loaded, IsOk());

  // Save fills in two fields of the stored manifest; everything else must
  // come back exactly.
  const v1::ModelManifest& stored = (*loaded)->manifest();
  EXPECT_EQ(
      stored.report().weights_bytes(),
      static_cast<int64_t>(fs::file_size(File(kBackboneFile)) + fs::file_size(File(kExitsFile))));
  EXPECT_THAT(stored.created_at(),
              ::testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}.*"));
  v1::ModelManifest expected = model_->manifest();
  expected.mutable_report()->set_weights_bytes(stored.report().weights_bytes());
  expected.set_created_at(stored.created_at());
  std::string diff;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(expected, stored)) << diff;

  EXPECT_EQ((*loaded)->validation_table().Serialize(), model_->validation_table().Serialize());
  EXPECT_EQ((*loaded)->test_table().Serialize(), model_->test_table().Serialize());
  EXPECT_THAT(DifferingTensors(Snapshot(*model_->network().backbone()),
                               Snapshot(*(*loaded)->network().backbone())),
              ::testing::IsEmpty());
  EXPECT_THAT(DifferingTensors(Snapshot(*model_->network().exit_heads()),
                               Snapshot(*(*loaded)->network().exit_heads())),
              ::testing::IsEmpty());

  torch::Tensor x = Batch(*model_, data_.test, 32);
  std::vector<torch::Tensor> original = AllExitLogits(*model_, x);
  std::vector<torch::Tensor> reloaded = AllExitLogits(**loaded, x);
  ASSERT_EQ(original.size(), reloaded.size());
  for (size_t e = 0; e < original.size(); ++e) {
    EXPECT_TRUE(torch::equal(original[e], reloaded[e])) << "exit " << e;
  }

  // A loaded model saves and loads again to the same manifest (created_at is kept).
  const std::string copy_dir = dir_.Join("models/copy");
  ASSERT_THAT((*loaded)->Save(copy_dir), IsOk());
  absl::StatusOr<std::unique_ptr<EarlyExitModel>> copy = EarlyExitModel::Load(copy_dir);
  ASSERT_THAT(copy, IsOk());
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals((*copy)->manifest(), stored));
}

TEST_F(ArtifactTest, SavingOverAnExistingModelReplacesIt) {
  SaveOrDie();
  // A different model (other weights, other tables) saved to the same place.
  std::unique_ptr<EarlyExitModel> other = CreateTiny(/*init_seed=*/99);
  ASSERT_NE(other, nullptr);
  ASSERT_OK_AND_ASSIGN(CalibrationTable val, Calibrate(*other, data_.validation));
  ASSERT_OK_AND_ASSIGN(CalibrationTable test, Calibrate(*other, data_.test));
  other->set_calibration(val, test);
  ASSERT_THAT(other->Save(model_dir_), IsOk());

  absl::StatusOr<std::unique_ptr<EarlyExitModel>> loaded = EarlyExitModel::Load(model_dir_);
  ASSERT_THAT(loaded, IsOk());
  EXPECT_THAT(DifferingTensors(Snapshot(*other->network().backbone()),
                               Snapshot(*(*loaded)->network().backbone())),
              ::testing::IsEmpty());
  EXPECT_THAT(DifferingTensors(Snapshot(*model_->network().backbone()),
                               Snapshot(*(*loaded)->network().backbone())),
              Not(::testing::IsEmpty()));
  EXPECT_EQ((*loaded)->validation_table().Serialize(), val.Serialize());
  EXPECT_EQ((*loaded)->manifest().report().backbone_epoch_seconds_size(), 0);
  EXPECT_THAT(ListDir(dir_.Join("models")), ElementsAre("tiny"));  // nothing left aside
}

TEST_F(ArtifactTest, LoadOfMissingDirectoryIsNotFound) {
  EXPECT_THAT(EarlyExitModel::Load(dir_.Join("models/none")),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("no model at"), HasSubstr(dir_.Join("models/none")))));
}

TEST_F(ArtifactTest, CorruptedExitWeightsNameTheFile) {
  SaveOrDie();
  WriteBytes(File(kExitsFile), "this is not a torch archive");
  EXPECT_THAT(EarlyExitModel::Load(model_dir_),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(File(kExitsFile))));
}

TEST_F(ArtifactTest, TruncatedBackboneWeightsNameTheFile) {
  SaveOrDie();
  std::string bytes = ReadBytes(File(kBackboneFile));
  WriteBytes(File(kBackboneFile), bytes.substr(0, bytes.size() / 2));
  EXPECT_THAT(EarlyExitModel::Load(model_dir_),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(File(kBackboneFile))));
}

TEST_F(ArtifactTest, WeightsOfTheWrongModuleNameTheFile) {
  SaveOrDie();
  // A valid archive, but of the backbone, where the exit heads belong.
  fs::copy_file(File(kBackboneFile), File(kExitsFile), fs::copy_options::overwrite_existing);
  EXPECT_THAT(EarlyExitModel::Load(model_dir_),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(File(kExitsFile))));
}

TEST_F(ArtifactTest, ExitWeightsOfAnotherArchitectureAreRejected) {
  SaveOrDie();
  // Same module names, different tensor shapes: wider exit-head convs.
  v1::BackboneConfig wider = TinyBackbone();
  wider.set_exit_conv_channels(6);
  absl::StatusOr<std::unique_ptr<EarlyExitModel>> other = EarlyExitModel::Create("other", wider);
  ASSERT_THAT(other, IsOk());
  const std::string other_dir = dir_.Join("models/other");
  ASSERT_THAT((*other)->Save(other_dir), IsOk());
  fs::copy_file(other_dir + "/" + kExitsFile, File(kExitsFile),
                fs::copy_options::overwrite_existing);
  EXPECT_THAT(EarlyExitModel::Load(model_dir_),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(File(kExitsFile))));
}

TEST_F(ArtifactTest, MissingCalibrationNamesTheFile) {
  SaveOrDie();
  ASSERT_TRUE(fs::remove(File(kTestCalibrationFile)));
  EXPECT_THAT(EarlyExitModel::Load(model_dir_),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr(File(kTestCalibrationFile))));
}

TEST_F(ArtifactTest, CorruptedCalibrationNamesTheFile) {
  SaveOrDie();
  std::string bytes = ReadBytes(File(kValidationCalibrationFile));
  bytes[bytes.size() / 2] ^= 0x10;
  WriteBytes(File(kValidationCalibrationFile), bytes);
  EXPECT_THAT(EarlyExitModel::Load(model_dir_),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(File(kValidationCalibrationFile)), HasSubstr("checksum"))));
}

TEST_F(ArtifactTest, CalibrationOfAnotherModelIsRejected) {
  SaveOrDie();
  WriteBytes(File(kTestCalibrationFile), CalibrationTable(150, 7, 10).Serialize());
  EXPECT_THAT(EarlyExitModel::Load(model_dir_),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(File(kTestCalibrationFile)), HasSubstr("7 exits"))));
}

TEST_F(ArtifactTest, InconsistentOrGarbageManifestIsRejected) {
  SaveOrDie();
  v1::ModelManifest m;
  ASSERT_THAT(ReadTextProto(File(kManifestFile), &m), IsOk());
  v1::ModelManifest edited = m;
  edited.set_full_network_macs(m.full_network_macs() + 1);
  ASSERT_THAT(WriteTextProtoAtomically(File(kManifestFile), edited), IsOk());
  EXPECT_THAT(EarlyExitModel::Load(model_dir_),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(File(kManifestFile))));

  edited = m;
  edited.set_name("Not A Name");
  ASSERT_THAT(WriteTextProtoAtomically(File(kManifestFile), edited), IsOk());
  EXPECT_THAT(EarlyExitModel::Load(model_dir_), StatusIs(absl::StatusCode::kInvalidArgument));

  WriteBytes(File(kManifestFile), "garbage {{{");
  EXPECT_THAT(EarlyExitModel::Load(model_dir_),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(File(kManifestFile))));
}

// --- Real data (scripts/install-deps.sh installs Fashion-MNIST: no skipping) --------------

TEST_F(ModelTest, TinyModelLearnsRealFashionMnist) {
  ASSERT_TRUE(fs::exists(std::string(kDefaultFashionMnistDir) + "/train-images-idx3-ubyte.gz"))
      << "Fashion-MNIST not installed at " << kDefaultFashionMnistDir
      << " (bash scripts/install-deps.sh installs it)";
  absl::StatusOr<FashionMnist> data = LoadFashionMnist(kDefaultFashionMnistDir);
  ASSERT_THAT(data, IsOk());
  data->validation.Truncate(1000);
  data->test.Truncate(1000);
  v1::TrainingConfig config = TinyTraining();
  config.set_train_limit(6000);
  config.set_backbone_epochs(2);
  absl::StatusOr<std::unique_ptr<EarlyExitModel>> model =
      TrainEarlyExitModel("tiny", TinyBackbone(), config, *data, Quiet());
  ASSERT_THAT(model, IsOk());
  const CalibrationTable& val = (*model)->validation_table();
  // Chance is 10%. Even this ~3k-parameter network, after two epochs on 6000
  // images, is far above it at every exit (about 50-70% here).
  for (int e = 0; e < val.num_exits(); ++e) {
    EXPECT_GT(val.Accuracy(e), 0.3) << "exit " << e;
  }
  EXPECT_GT(val.Accuracy(val.num_exits() - 1), 0.5);
  // The second backbone epoch helped.
  const auto& curve = (*model)->manifest().report().backbone_epoch_train_loss();
  ASSERT_EQ(curve.size(), 2);
  EXPECT_LT(curve[1], curve[0]);
}

}  // namespace
}  // namespace hapi
