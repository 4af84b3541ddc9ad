// The native residual network (model/inference_network.h) lowered to the
// graph IR (model/onnx_import.h): its structure, and the lowered graph run by
// ImportedModel (LibTorch's ops and the direct oneDNN path; the lowered exit
// heads attached) against InferenceNetwork: every stage's output and every
// exit's answer.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/calibration_table.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "core/model.h"
#include "core/model_metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/early_exit_model.h"
#include "model/imported_activations.h"
#include "model/imported_model.h"
#include "model/inference_network.h"
#include "model/network.h"
#include "model/onnx_import.h"
#include "model/torch_model.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "tests/tiny_model.h"

namespace hapi {
namespace {

using ::hapi::testing::IsOk;
using ::hapi::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kStages = 6;
constexpr int kClasses = 10;
constexpr int kBatch = 5;

// Random batch norm statistics and affine parameters (a fresh model's are the
// identity, which folding would leave unchanged), and random linear biases.
void Randomize(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.named_parameters()) {
    torch::Tensor t = p.value();
    if (t.dim() != 1) continue;  // conv and linear weights keep their init
    const bool bn_scale = p.key().size() > 7 && p.key().substr(p.key().size() - 7) == ".weight";
    t.copy_(bn_scale ? torch::rand_like(t) + 0.5 : 0.2 * torch::randn_like(t));
  }
  for (auto& b : module.named_buffers()) {
    torch::Tensor t = b.value();
    if (b.key().find("running_mean") != std::string::npos) t.copy_(0.3 * torch::randn_like(t));
    if (b.key().find("running_var") != std::string::npos) t.copy_(torch::rand_like(t) + 0.5);
  }
}

std::unique_ptr<EarlyExitModel> RandomModel() {
  torch::manual_seed(7);
  absl::StatusOr<std::unique_ptr<EarlyExitModel>> model =
      EarlyExitModel::Create("native", testing::TinyBackbone());
  EXPECT_THAT(model, IsOk());
  if (!model.ok()) return nullptr;
  Randomize(*(*model)->network().backbone());
  Randomize(*(*model)->network().exit_heads());
  (*model)->network().SetTraining(false, false);
  return *std::move(model);
}

struct Case {
  int height, width;
  bool channels_last;
  bool direct;  // ImportedModel on the direct oneDNN path rather than LibTorch's ops
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << "1x" << c.height << "x" << c.width << (c.channels_last ? " channels-last" : " NCHW")
      << (c.direct ? " direct" : " LibTorch");
}

std::string CaseName(const ::testing::TestParamInfo<Case>& info) {
  return absl::StrCat(info.param.height, "x", info.param.width,
                      info.param.channels_last ? "_channels_last" : "_nchw",
                      info.param.direct ? "_direct" : "_libtorch");
}

class NativeGraphTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    model_ = RandomModel();
    ASSERT_NE(model_, nullptr);
    spec_ = MakeInputSpec(1, GetParam().height, GetParam().width, 0.3f, 0.4f);
    InferenceOptions options;
    options.channels_last = GetParam().channels_last;
    network_ = std::make_unique<InferenceNetwork>(*model_, spec_, options);
    absl::StatusOr<LoweredNetwork> lowered = network_->Lower();
    ASSERT_THAT(lowered, IsOk());
    lowered_ = *std::move(lowered);
  }

  bool IsSquare28() const { return GetParam().height == 28 && GetParam().width == 28; }

  std::unique_ptr<EarlyExitModel> model_;
  v1::InputSpec spec_;
  std::unique_ptr<InferenceNetwork> network_;
  LoweredNetwork lowered_;
};

TEST_P(NativeGraphTest, GraphShapesCutsAndMacs) {
  const ImportedGraph& g = lowered_.graph;
  const v1::ModelManifest& m = model_->manifest();
  EXPECT_EQ(g.input, "input");
  EXPECT_THAT(g.input_shape, ElementsAre(1, GetParam().height, GetParam().width));
  EXPECT_EQ(g.num_classes, kClasses);
  EXPECT_FALSE(g.output_was_softmax);
  ASSERT_FALSE(g.nodes.empty());
  EXPECT_EQ(g.output, g.nodes.back().output);
  EXPECT_EQ(g.nodes.back().op, GraphOp::kLinear);

  // Every tensor has a per-sample shape; names and outputs are unique; every
  // input was computed before.
  std::set<std::string> names, computed = {g.input};
  ASSERT_TRUE(g.shapes.count(g.input));
  EXPECT_EQ(g.shapes.at(g.input), g.input_shape);
  for (const GraphNode& n : g.nodes) {
    EXPECT_TRUE(names.insert(n.name).second) << n.name;
    for (const std::string& in : n.inputs) {
      EXPECT_TRUE(computed.count(in)) << n.name << " reads " << in;
      EXPECT_TRUE(g.shapes.count(in)) << in;
    }
    EXPECT_TRUE(computed.insert(n.output).second) << n.output;
    EXPECT_TRUE(g.shapes.count(n.output)) << n.output;
    if (n.op == GraphOp::kConv) {
      ASSERT_EQ(n.weights.size(), 2u) << n.name;
      const std::vector<int64_t>& w = n.weights[0].dims;
      ASSERT_EQ(w.size(), 4u);
      EXPECT_EQ(n.weights[0].numel(), w[0] * w[1] * w[2] * w[3]);
      EXPECT_THAT(n.weights[1].dims, ElementsAre(w[0]));
      EXPECT_EQ(w[1], g.shapes.at(n.inputs[0])[0]) << n.name;
      EXPECT_EQ(w[0], g.shapes.at(n.output)[0]) << n.name;
      EXPECT_THAT(n.dilations, ElementsAre(1, 1));
      EXPECT_EQ(n.pads.size(), 4u);
      EXPECT_EQ(n.op_type, "Conv");
    }
  }
  EXPECT_THAT(g.shapes.at(g.output), ElementsAre(kClasses));

  // One cut point per stage: the stage outputs, the last where the tail begins.
  ASSERT_EQ(lowered_.cuts.size(), static_cast<size_t>(kStages));
  ASSERT_EQ(g.cut_points.size(), lowered_.cuts.size());
  for (size_t s = 0; s < lowered_.cuts.size(); ++s) {
    const CutPoint &a = lowered_.cuts[s], &b = g.cut_points[s];
    EXPECT_EQ(a.after_node, b.after_node);
    EXPECT_EQ(a.tensor, b.tensor);
    EXPECT_EQ(a.node, b.node);
    EXPECT_EQ(a.macs, b.macs);
    ASSERT_LT(a.after_node, static_cast<int>(g.nodes.size()));
    EXPECT_EQ(a.tensor, g.nodes[a.after_node].output);
    EXPECT_EQ(a.node, g.nodes[a.after_node].name);
    EXPECT_EQ(g.shapes.at(a.tensor).size(), 3u);
    if (s > 0) {
      EXPECT_GT(a.macs, lowered_.cuts[s - 1].macs);
    }
  }
  EXPECT_EQ(g.nodes[lowered_.cuts.back().after_node + 1].op, GraphOp::kGlobalAveragePool);

  const std::vector<GraphSegment> segments = SplitGraph(g, lowered_.cuts);
  ASSERT_EQ(segments.size(), static_cast<size_t>(kStages + 1));
  int64_t cumulative = 0;
  for (int s = 0; s < kStages; ++s) {
    cumulative += segments[s].macs;
    EXPECT_EQ(cumulative, lowered_.cuts[s].macs) << "stage " << s;
    EXPECT_EQ(segments[s].layers, m.stages(s).layers()) << "stage " << s;
    // Folding turns each batch norm's scale and shift (2 per channel) into
    // its conv's bias (1 per channel).
    EXPECT_EQ(segments[s].params,
              m.stages(s).params() - m.stages(s).output().channels() * m.stages(s).layers())
        << "stage " << s;
    if (IsSquare28()) {
      // The manifest counts the network's MACs for its own 1x28x28 input.
      EXPECT_EQ(segments[s].macs, m.stages(s).macs()) << "stage " << s;
      EXPECT_THAT(g.shapes.at(segments[s].output),
                  ElementsAre(m.stages(s).output().channels(), m.stages(s).output().height(),
                              m.stages(s).output().width()));
    }
  }
  EXPECT_EQ(segments.back().macs, m.exits(kStages - 1).macs());
  EXPECT_EQ(segments.back().layers, 1);
  EXPECT_EQ(g.total_macs(), cumulative + segments.back().macs);
  if (IsSquare28()) {
    EXPECT_EQ(g.total_macs(), m.full_network_macs());
  }

  // Stage shapes: the stem is one Conv + ReLU; residual stages end in an Add
  // + ReLU of conv2 and the shortcut (a Conv for stages 3 and 5).
  const std::vector<int> stage_nodes = {1, 3, 3, 4, 3, 4};
  for (int s = 0; s < kStages; ++s) {
    ASSERT_EQ(segments[s].end - segments[s].begin, stage_nodes[s]) << "stage " << s;
    const GraphNode& last = g.nodes[segments[s].end - 1];
    EXPECT_EQ(last.activation.kind, ActivationKind::kRelu);
    if (s == 0) {
      EXPECT_EQ(last.op, GraphOp::kConv);
      continue;
    }
    const GraphNode& conv1 = g.nodes[segments[s].begin];
    const GraphNode& conv2 = g.nodes[segments[s].begin + 1];
    EXPECT_EQ(conv1.activation.kind, ActivationKind::kRelu);
    EXPECT_EQ(conv2.activation.kind, ActivationKind::kNone);
    EXPECT_EQ(conv2.inputs, std::vector<std::string>{conv1.output});
    EXPECT_EQ(last.op, GraphOp::kAdd);
    EXPECT_EQ(last.op_type, "Add");
    ASSERT_EQ(last.inputs.size(), 2u);
    EXPECT_EQ(last.inputs[0], conv2.output);
    if (stage_nodes[s] == 4) {
      const GraphNode& shortcut = g.nodes[segments[s].begin + 2];
      EXPECT_EQ(shortcut.op, GraphOp::kConv);
      EXPECT_THAT(shortcut.kernel, ElementsAre(1, 1));
      EXPECT_THAT(shortcut.strides, ElementsAre(2, 2));
      EXPECT_THAT(shortcut.pads, ElementsAre(0, 0, 0, 0));
      EXPECT_EQ(shortcut.activation.kind, ActivationKind::kNone);
      EXPECT_EQ(shortcut.inputs, std::vector<std::string>{segments[s].input});
      EXPECT_EQ(last.inputs[1], shortcut.output);
    } else {
      EXPECT_EQ(last.inputs[1], segments[s].input);
    }
  }

  // Heads: one per early exit, after stages 0..4; 28-pixel stages have a conv.
  EXPECT_THAT(lowered_.head_stage, ElementsAre(0, 1, 2, 3, 4));
  ASSERT_EQ(lowered_.heads.size(), static_cast<size_t>(kStages - 1));
  for (size_t e = 0; e < lowered_.heads.size(); ++e) {
    const ExitHeadWeights& h = lowered_.heads[e];
    EXPECT_EQ(h.conv_weight.values.empty(), e >= 3) << "exit " << e;
    const v1::TensorShape& stage = m.stages(lowered_.head_stage[e]).output();
    const int conv = h.conv_weight.values.empty() ? 0 : static_cast<int>(h.conv_weight.dims[0]);
    EXPECT_EQ(HeadCost(stage, conv, h.pool, kClasses).macs, m.exits(e).macs()) << "exit " << e;
    EXPECT_EQ(HeadCost(stage, conv, h.pool, kClasses).params, m.exits(e).params() - conv)
        << "exit " << e;
  }
}

// The weights do not depend on the network's memory format: both copy the
// same folded values in NCHW order.
TEST_P(NativeGraphTest, WeightsAreTheSameWithoutChannelsLast) {
  InferenceOptions nchw;
  nchw.channels_last = !GetParam().channels_last;
  absl::StatusOr<LoweredNetwork> other = InferenceNetwork(*model_, spec_, nchw).Lower();
  ASSERT_THAT(other, IsOk());
  ASSERT_EQ(other->graph.nodes.size(), lowered_.graph.nodes.size());
  for (size_t i = 0; i < lowered_.graph.nodes.size(); ++i) {
    const GraphNode &a = lowered_.graph.nodes[i], &b = other->graph.nodes[i];
    ASSERT_EQ(a.weights.size(), b.weights.size());
    for (size_t w = 0; w < a.weights.size(); ++w) {
      EXPECT_EQ(a.weights[w].dims, b.weights[w].dims) << a.name;
      EXPECT_EQ(a.weights[w].values, b.weights[w].values) << a.name;
    }
  }
  ASSERT_EQ(other->heads.size(), lowered_.heads.size());
  for (size_t e = 0; e < lowered_.heads.size(); ++e) {
    EXPECT_EQ(other->heads[e].conv_weight.values, lowered_.heads[e].conv_weight.values);
    EXPECT_EQ(other->heads[e].fc_weight.values, lowered_.heads[e].fc_weight.values);
  }
}

float MaxAbsDiff(const std::vector<float>& a, const torch::Tensor& b) {
  const torch::Tensor c = b.contiguous();
  EXPECT_EQ(static_cast<int64_t>(a.size()), c.numel());
  float diff = 0;
  for (int64_t i = 0; i < std::min<int64_t>(c.numel(), a.size()); ++i) {
    diff = std::max(diff, std::abs(a[i] - c.data_ptr<float>()[i]));
  }
  return diff;
}

std::vector<int64_t> Argmax(const std::vector<float>& rows, int columns) {
  std::vector<int64_t> out;
  for (size_t r = 0; r + columns <= rows.size(); r += columns) {
    out.push_back(std::max_element(rows.begin() + r, rows.begin() + r + columns) -
                  (rows.begin() + r));
  }
  return out;
}

std::vector<int64_t> Argmax(const torch::Tensor& t) {
  const torch::Tensor a = t.argmax(1).contiguous();
  return std::vector<int64_t>(a.data_ptr<int64_t>(), a.data_ptr<int64_t>() + a.numel());
}

// The lowered graph and heads run by ImportedModel (LibTorch's ops, or the
// direct oneDNN path that runs native models through Lower()) answer as
// InferenceNetwork does: every stage's output, and after every stage its exit,
// an early one (the lowered head attached to the imported exit reading
// head_stage[e]) or the final one (the graph's tail).
TEST_P(NativeGraphTest, ImportedModelAnswersAsTheNetwork) {
  ImportedModelInfo info;
  info.name = "native";
  info.input = spec_;
  absl::StatusOr<v1::ModelManifest> manifest =
      MakeImportedManifest(lowered_.graph, lowered_.cuts, info);
  ASSERT_THAT(manifest, IsOk());
  ModelOptions options;
  options.channels_last = GetParam().channels_last;
  options.direct = GetParam().direct;
  absl::StatusOr<std::unique_ptr<ImportedModel>> imported =
      ImportedModel::Create(lowered_.graph, *manifest, options);
  ASSERT_THAT(imported, IsOk());
  ImportedModel& model = **imported;
  EXPECT_EQ(model.direct_program() != nullptr, GetParam().direct);
  ASSERT_EQ(model.num_stages(), kStages);
  ASSERT_EQ(model.num_exits(), kStages);
  // Early exit e of the native model reads stage head_stage[e]; the imported
  // exit reading that stage gets its head.
  std::map<int, int> native_exit_at_stage;
  for (size_t e = 0; e < lowered_.heads.size(); ++e) {
    const int stage = lowered_.head_stage[e];
    int exit = -1;
    for (int x = 0; x < model.final_exit(); ++x) {
      if (model.ExitStage(x) == stage) exit = x;
    }
    ASSERT_GE(exit, 0) << "no imported exit reads stage " << stage;
    ASSERT_THAT(model.AttachHead(exit, lowered_.heads[e]), IsOk()) << "exit " << e;
    native_exit_at_stage[stage] = static_cast<int>(e);
  }

  torch::manual_seed(11);
  const torch::Tensor pixels = torch::rand({kBatch, 1, GetParam().height, GetParam().width});
  absl::StatusOr<std::unique_ptr<Activations>> x = model.Input(pixels.data_ptr<float>(), kBatch);
  ASSERT_THAT(x, IsOk());
  torch::NoGradGuard no_grad;
  torch::Tensor y = network_->Input(pixels.data_ptr<float>(), kBatch);
  int compared = 0;
  for (int s = 0; s < kStages; ++s) {
    ASSERT_THAT(model.RunStage(s, **x), IsOk());
    y = network_->Stage(s, y);
    const torch::Tensor z = ImportedTensor(model, **x);
    ASSERT_EQ(z.sizes(), y.sizes()) << "stage " << s;
    EXPECT_TRUE(torch::allclose(z, y, /*rtol=*/1e-4, /*atol=*/1e-5))
        << "stage " << s << ": max abs difference " << (z - y).abs().max().item<float>();
    int exit = -1, native = -1;
    if (s == kStages - 1) {
      exit = model.final_exit();
      native = network_->num_exits() - 1;
    } else if (native_exit_at_stage.count(s)) {
      native = native_exit_at_stage[s];
      for (int e = 0; e < model.final_exit(); ++e) {
        if (model.ExitStage(e) == s) exit = e;
      }
    }
    if (exit < 0) continue;
    ++compared;
    std::vector<float> probabilities;
    ASSERT_THAT(model.RunHead(exit, **x, &probabilities), IsOk()) << "exit " << exit;
    const torch::Tensor logits = network_->ExitLogits(native, y);
    const torch::Tensor expected = torch::softmax(logits, 1);
    EXPECT_LE(MaxAbsDiff(probabilities, expected), 1e-5f) << "exit " << exit;
    EXPECT_EQ(Argmax(probabilities, kClasses), Argmax(expected)) << "exit " << exit;
    if (exit == model.final_exit()) {
      std::vector<float> final_logits;
      ASSERT_THAT(model.FinalLogits(**x, &final_logits), IsOk());
      EXPECT_LE(MaxAbsDiff(final_logits, logits), 1e-4f);
    }
  }
  EXPECT_EQ(compared, kStages);
}

INSTANTIATE_TEST_SUITE_P(Shapes, NativeGraphTest,
                         ::testing::Values(Case{28, 28, true, false}, Case{28, 28, false, false},
                                           Case{28, 20, true, false}, Case{28, 20, false, false},
                                           Case{28, 28, true, true}, Case{28, 20, false, true}),
                         CaseName);

TEST(NativeGraphPreconditionTest, UnfoldedBatchNormIsRefused) {
  std::unique_ptr<EarlyExitModel> model = RandomModel();
  ASSERT_NE(model, nullptr);
  InferenceOptions options;
  options.fuse_batch_norm = false;
  const InferenceNetwork network(*model, LegacyInputSpec(), options);
  EXPECT_THAT(network.Lower(), StatusIs(absl::StatusCode::kFailedPrecondition));
  options.fuse_batch_norm = true;
  EXPECT_THAT(InferenceNetwork(*model, LegacyInputSpec(), options).Lower(), IsOk());
}

// --- The residual network behind the seam on the direct path ------------------

std::vector<float> RandomPixels(int n, int seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n) * 28 * 28);
  for (float& x : v) x = u(rng);
  return v;
}

// Every exit of `model` on `pixels` (n samples), rows 0 and 2 kept after
// stage 2: probabilities per exit, concatenated.
std::vector<float> EveryExit(const Model& model, const std::vector<float>& pixels, int n) {
  std::vector<float> all;
  absl::StatusOr<std::unique_ptr<Activations>> x = model.Input(pixels.data(), n);
  EXPECT_THAT(x, IsOk());
  if (!x.ok()) return all;
  for (int s = 0; s < model.num_stages(); ++s) {
    if (s == 2) (*x)->KeepRows({0, 2});
    EXPECT_THAT(model.RunStage(s, **x), IsOk());
    for (int e = 0; e < model.num_exits(); ++e) {
      if (model.ExitStage(e) != s) continue;
      std::vector<float> p;
      EXPECT_THAT(model.RunHead(e, **x, &p), IsOk());
      EXPECT_EQ(p.size(), static_cast<size_t>((*x)->batch_size() * model.num_classes()));
      all.insert(all.end(), p.begin(), p.end());
    }
  }
  return all;
}

TEST(TorchModelDirectTest, DirectPathAnswersAsLibTorchAtEveryExit) {
  std::unique_ptr<EarlyExitModel> model = RandomModel();
  ASSERT_NE(model, nullptr);
  ModelOptions torch_options;
  torch_options.direct = false;
  absl::StatusOr<std::shared_ptr<const Model>> direct = MakeTorchModel(*model);
  absl::StatusOr<std::shared_ptr<const Model>> torch = MakeTorchModel(*model, torch_options);
  ASSERT_THAT(direct, IsOk());
  ASSERT_THAT(torch, IsOk());
  const std::vector<float> pixels = RandomPixels(4, 1);
  const std::vector<float> a = EveryExit(**direct, pixels, 4);
  const std::vector<float> b = EveryExit(**torch, pixels, 4);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  float max_diff = 0;
  for (size_t i = 0; i < a.size(); ++i) max_diff = std::max(max_diff, std::abs(a[i] - b[i]));
  EXPECT_LT(max_diff, 1e-5f);
}

TEST(TorchModelDirectTest, Int8StaysCloseToFp32AndIsNotFp32) {
  std::unique_ptr<EarlyExitModel> model = RandomModel();
  ASSERT_NE(model, nullptr);
  ModelOptions int8_options;
  int8_options.int8_calibration = std::make_shared<const std::vector<float>>(RandomPixels(64, 2));
  absl::StatusOr<std::shared_ptr<const Model>> fp32 = MakeTorchModel(*model);
  absl::StatusOr<std::shared_ptr<const Model>> int8 = MakeTorchModel(*model, int8_options);
  ASSERT_THAT(fp32, IsOk());
  ASSERT_THAT(int8, IsOk());
  const std::vector<float> pixels = RandomPixels(4, 3);  // not the calibration images
  const std::vector<float> a = EveryExit(**fp32, pixels, 4);
  const std::vector<float> b = EveryExit(**int8, pixels, 4);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  float max_diff = 0, sum = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(a[i] - b[i]));
    sum += b[i];
  }
  // Probabilities (each row sums to 1): quantisation moves them a little,
  // and does move them (int8 really ran).
  EXPECT_NEAR(sum, a.size() / model->manifest().class_names_size(), 1e-3);
  EXPECT_LT(max_diff, 0.05f);
  EXPECT_GT(max_diff, 1e-6f);
}

TEST(TorchModelDirectTest, Int8RangesFromTheModelDirectoryAsCalibratedInProcess) {
  std::unique_ptr<EarlyExitModel> model = RandomModel();
  ASSERT_NE(model, nullptr);
  const int exits = model->manifest().exits_size();
  model->set_calibration(CalibrationTable(1, exits, kClasses),
                         CalibrationTable(1, exits, kClasses));
  testing::ScopedTempDir tmp;
  const std::string dir = tmp.path() + "/native";
  ASSERT_THAT(model->Save(dir), IsOk());
  ModelOptions int8;
  int8.int8 = true;
  EXPECT_THAT(LoadTorchModel(dir, int8),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("hapi-quantize")));
  const std::vector<float> calibration = RandomPixels(40, 4);
  absl::StatusOr<v1::Int8Ranges> ranges = CalibrateInt8Ranges(dir, calibration.data(), 40);
  ASSERT_THAT(ranges, IsOk());
  EXPECT_EQ(ranges->samples(), 40);
  EXPECT_GT(ranges->max_abs_size(), kStages);
  ASSERT_THAT(WriteTextProtoAtomically(dir + "/" + kInt8RangesFile, *ranges), IsOk());
  absl::StatusOr<std::shared_ptr<const Model>> from_file = LoadTorchModel(dir, int8);
  ModelOptions in_process;
  in_process.int8_calibration = std::make_shared<const std::vector<float>>(calibration);
  absl::StatusOr<std::shared_ptr<const Model>> calibrated = LoadTorchModel(dir, in_process);
  ASSERT_THAT(from_file, IsOk());
  ASSERT_THAT(calibrated, IsOk());
  const std::vector<float> pixels = RandomPixels(4, 5);
  EXPECT_EQ(EveryExit(**from_file, pixels, 4), EveryExit(**calibrated, pixels, 4));
  // A range for a tensor missing: refused, naming it.
  v1::Int8Ranges partial = *ranges;
  partial.mutable_max_abs()->erase("input");
  ASSERT_THAT(WriteTextProtoAtomically(dir + "/" + kInt8RangesFile, partial), IsOk());
  EXPECT_THAT(LoadTorchModel(dir, int8),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'input'")));
}

}  // namespace
}  // namespace hapi
