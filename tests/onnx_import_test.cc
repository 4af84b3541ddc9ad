// ONNX import (model/onnx_import.h) and imported graphs behind the model seam
// (model/imported_model.h), on the fixtures in tests/data/onnx/ that
// scripts/make-onnx-fixtures.py builds with PyTorch: cut points, answers
// against PyTorch's, error cases, exits list and spacing, the model directory.
#include "model/onnx_import.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/files.h"
#include "core/input_spec.h"
#include "core/model_metadata.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/imported_model.h"
#include "model/torch_model.h"
#include "tests/onnx_fixtures.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace {

using ::hapi::testing::Fixture;
using ::hapi::testing::IsOk;
using ::hapi::testing::ReadBytes;
using ::hapi::testing::ScopedTempDir;
using ::hapi::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr float kTolerance = 1e-4f;
constexpr int kSamples = 4;  // reference samples per fixture

std::vector<float> ReadFloats(const std::string& path) {
  const std::string bytes = ReadBytes(path);
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  return values;
}

ImportedGraph Import(const std::string& name) {
  absl::StatusOr<ImportedGraph> graph = ImportOnnxFile(Fixture(name + ".onnx"));
  EXPECT_THAT(graph, IsOk());
  return graph.ok() ? *std::move(graph) : ImportedGraph{};
}

// The fixtures' normalisation (scripts/make-onnx-fixtures.py), as hapi-import
// reads it from their metadata.
ImportedModelInfo FixtureInfo(const std::string& name) {
  ImportedModelInfo info;
  info.name = name;
  info.input = MakeInputSpec(3, 32, 32, 0, 1);
  info.input.clear_mean();
  info.input.clear_std();
  for (float m : {0.49f, 0.48f, 0.45f}) info.input.add_mean(m);
  for (float s : {0.25f, 0.24f, 0.26f}) info.input.add_std(s);
  return info;
}

std::unique_ptr<ImportedModel> MakeModel(const std::string& name, const ModelOptions& options = {},
                                         const CutPointOptions& cut_options = {}) {
  ImportedGraph graph = Import(name);
  absl::StatusOr<std::vector<CutPoint>> cuts = SelectCutPoints(graph, cut_options);
  EXPECT_THAT(cuts, IsOk());
  absl::StatusOr<v1::ModelManifest> manifest =
      MakeImportedManifest(graph, *cuts, FixtureInfo(name));
  EXPECT_THAT(manifest, IsOk());
  absl::StatusOr<std::unique_ptr<ImportedModel>> model =
      ImportedModel::Create(std::move(graph), *std::move(manifest), options);
  EXPECT_THAT(model, IsOk());
  return model.ok() ? *std::move(model) : nullptr;
}

// Runs every stage on the fixture's reference input.
std::unique_ptr<Activations> RunStages(const Model& model, const std::vector<float>& pixels,
                                       int n) {
  absl::StatusOr<std::unique_ptr<Activations>> x = model.Input(pixels.data(), n);
  EXPECT_THAT(x, IsOk());
  for (int s = 0; s < model.num_stages(); ++s) EXPECT_THAT(model.RunStage(s, **x), IsOk());
  return *std::move(x);
}

std::vector<float> Softmax(const std::vector<float>& logits, int classes) {
  std::vector<float> p(logits.size());
  for (size_t r = 0; r < logits.size() / classes; ++r) {
    const float* row = &logits[r * classes];
    const float top = *std::max_element(row, row + classes);
    double sum = 0;
    for (int c = 0; c < classes; ++c) sum += std::exp(row[c] - top);
    for (int c = 0; c < classes; ++c) p[r * classes + c] = std::exp(row[c] - top) / sum;
  }
  return p;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float diff = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
  }
  return diff;
}

// --- Cut points ----------------------------------------------------------------

struct CutCount {
  const char* fixture;
  int cut_points;
};

class CutPointsTest : public ::testing::TestWithParam<CutCount> {};

TEST_P(CutPointsTest, FindsEveryBlockAndConvStage) {
  const ImportedGraph graph = Import(GetParam().fixture);
  ASSERT_EQ(static_cast<int>(graph.cut_points.size()), GetParam().cut_points);
  for (const CutPoint& c : graph.cut_points) {
    EXPECT_EQ(graph.shapes.at(c.tensor).size(), 3u) << c.tensor;  // C x H x W per sample
    EXPECT_EQ(graph.nodes[c.after_node].output, c.tensor);
  }
  // Stage MACs add up to the graph's.
  const std::vector<GraphSegment> segments = SplitGraph(graph, graph.cut_points);
  int64_t macs = 0;
  for (const GraphSegment& s : segments) macs += s.macs;
  EXPECT_EQ(macs, graph.total_macs());
  EXPECT_EQ(graph.cut_points.back().macs, graph.total_macs() - segments.back().macs);
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, CutPointsTest,
    ::testing::Values(CutCount{"resnet_tiny", 9},      // stem + 8 residual blocks
                      CutCount{"mobilenet_tiny", 20},  // stem, blocks, inside non-residual ones
                      CutCount{"vgg_tiny", 8},         // 8 conv stages (pools join the next)
                      CutCount{"opmix_op10", 4}, CutCount{"opmix_op14", 4}),
    [](const auto& info) { return std::string(info.param.fixture); });

TEST(CutPointsTest, ResidualBlocksEndAtTheirRelu) {
  const ImportedGraph graph = Import("resnet_tiny");
  ASSERT_EQ(graph.cut_points.size(), 9u);
  EXPECT_EQ(graph.cut_points[0].tensor, "/stem/stem.2/Relu_output_0");
  for (int b = 0; b < 8; ++b) {
    EXPECT_EQ(graph.cut_points[b + 1].tensor, absl::StrCat("/blocks/blocks.", b, "/Relu_output_0"));
  }
}

TEST(CutPointsTest, ExitsListKeepsNamedCutPointsAndTheLast) {
  const ImportedGraph graph = Import("resnet_tiny");
  CutPointOptions options;
  // A tensor name, and the name of a node fused into a cut point's producer.
  options.exits = {"/blocks/blocks.1/Relu_output_0", "/blocks/blocks.3/Relu"};
  absl::StatusOr<std::vector<CutPoint>> cuts = SelectCutPoints(graph, options);
  ASSERT_THAT(cuts, IsOk());
  ASSERT_EQ(cuts->size(), 3u);
  EXPECT_EQ((*cuts)[0].tensor, "/blocks/blocks.1/Relu_output_0");
  EXPECT_EQ((*cuts)[1].tensor, "/blocks/blocks.3/Relu_output_0");
  EXPECT_EQ((*cuts)[2].tensor, graph.cut_points.back().tensor);

  options.exits = {"/blocks/blocks.1/conv1/conv1.0/Conv_output_0"};  // inside a block
  EXPECT_THAT(SelectCutPoints(graph, options),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("blocks.1/conv1/conv1.0/Conv_output_0"),
                             HasSubstr("not a cut point"))));
}

TEST(CutPointsTest, MinimumSpacingInMacs) {
  const ImportedGraph graph = Import("resnet_tiny");
  CutPointOptions options;
  options.min_spacing_macs = 1'000'000;
  absl::StatusOr<std::vector<CutPoint>> cuts = SelectCutPoints(graph, options);
  ASSERT_THAT(cuts, IsOk());
  // Stem (221k), blocks 0 and 1 (+1.18M each), block 3 (+1.24M) would leave
  // the final cut 0.88M after it, so block 3 goes.
  ASSERT_EQ(cuts->size(), 4u);
  for (size_t i = 1; i < cuts->size(); ++i) {
    EXPECT_GE((*cuts)[i].macs - (*cuts)[i - 1].macs, options.min_spacing_macs);
  }
  EXPECT_EQ(cuts->back().tensor, graph.cut_points.back().tensor);

  options.min_spacing_macs = graph.total_macs();
  EXPECT_THAT(SelectCutPoints(graph, options),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("at least 2")));
}

// --- Answers against PyTorch's ---------------------------------------------------

struct Reference {
  const char* fixture;
  ModelOptions options;
};

class ReferenceTest : public ::testing::TestWithParam<Reference> {};

TEST_P(ReferenceTest, AnswersMatchPyTorch) {
  const std::string name = GetParam().fixture;
  std::unique_ptr<ImportedModel> model = MakeModel(name, GetParam().options);
  ASSERT_NE(model, nullptr);
  const std::vector<float> pixels = ReadFloats(Fixture(name + ".input.bin"));
  const std::vector<float> reference = ReadFloats(Fixture(name + ".output.bin"));
  ASSERT_EQ(static_cast<int>(pixels.size()), kSamples * model->input_size());
  ASSERT_EQ(static_cast<int>(reference.size()), kSamples * model->num_classes());
  std::unique_ptr<Activations> x = RunStages(*model, pixels, kSamples);
  std::vector<float> logits, probabilities;
  ASSERT_THAT(model->FinalLogits(*x, &logits), IsOk());
  ASSERT_THAT(model->RunHead(model->final_exit(), *x, &probabilities), IsOk());
  if (model->graph().output_was_softmax) {
    EXPECT_LT(MaxAbsDiff(probabilities, reference), kTolerance);
  } else {
    EXPECT_LT(MaxAbsDiff(logits, reference), kTolerance);
    EXPECT_LT(MaxAbsDiff(probabilities, Softmax(reference, model->num_classes())), kTolerance);
  }
  EXPECT_LT(MaxAbsDiff(probabilities, Softmax(logits, model->num_classes())), 1e-6f);
}

ModelOptions PlainOptions() {
  ModelOptions o;
  o.channels_last = false;
  o.onednn = false;
  o.direct = false;
  return o;
}

ModelOptions LibTorchOptions() {
  ModelOptions o;
  o.direct = false;
  return o;
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, ReferenceTest,
    ::testing::Values(Reference{"resnet_tiny", {}}, Reference{"mobilenet_tiny", {}},
                      Reference{"vgg_tiny", {}}, Reference{"opmix_op10", {}},
                      Reference{"opmix_op14", {}}, Reference{"resnet_tiny", LibTorchOptions()},
                      Reference{"mobilenet_tiny", LibTorchOptions()},
                      Reference{"opmix_op14", LibTorchOptions()},
                      Reference{"resnet_tiny", PlainOptions()},
                      Reference{"mobilenet_tiny", PlainOptions()}),
    [](const auto& info) {
      const ModelOptions& o = info.param.options;
      return absl::StrCat(info.param.fixture, o.direct ? "" : (o.onednn ? "_libtorch" : "_plain"));
    });

// --- The direct oneDNN path against LibTorch's ------------------------------------

// A head of the exit family with deterministic random weights.
ExitHeadWeights RandomHead(int channels, int conv_channels, int pool, int classes, int seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 0.2f);
  auto fill = [&](std::vector<int64_t> dims) {
    Weight w;
    w.dims = dims;
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    for (int64_t i = 0; i < n; ++i) w.values.push_back(normal(rng));
    return w;
  };
  ExitHeadWeights h;
  if (conv_channels > 0) {
    h.conv_weight = fill({conv_channels, channels, 3, 3});
    h.conv_bias = fill({conv_channels});
  }
  h.pool = pool;
  const int features = (conv_channels > 0 ? conv_channels : channels) * pool * pool;
  h.fc_weight = fill({classes, features});
  h.fc_bias = fill({classes});
  return h;
}

class DirectPathTest : public ::testing::TestWithParam<const char*> {};

// Every fixture lowers to the direct path (no silent fallback), and its
// answers at every exit match the LibTorch path's, batch and single rows.
TEST_P(DirectPathTest, LowersAndMatchesLibTorchAtEveryExit) {
  const std::string name = GetParam();
  std::unique_ptr<ImportedModel> direct = MakeModel(name);
  std::unique_ptr<ImportedModel> torch = MakeModel(name, LibTorchOptions());
  ASSERT_NE(direct, nullptr);
  ASSERT_NE(torch, nullptr);
  ASSERT_NE(direct->direct_program(), nullptr) << name << " fell back to LibTorch";
  EXPECT_EQ(torch->direct_program(), nullptr);
  // Heads on two exits: with a conv and an uneven adaptive pool, and without.
  const int classes = direct->num_classes();
  const int last_early = direct->final_exit() - 1;
  for (ImportedModel* m : {direct.get(), torch.get()}) {
    const auto& s0 = m->manifest().stages(0).output();
    const auto& s1 = m->manifest().stages(m->ExitStage(last_early)).output();
    ASSERT_THAT(m->AttachHead(0, RandomHead(s0.channels(), 12, 3, classes, 1)), IsOk());
    ASSERT_THAT(m->AttachHead(last_early, RandomHead(s1.channels(), 0, 2, classes, 2)), IsOk());
  }
  const std::vector<float> pixels = ReadFloats(Fixture(name + ".input.bin"));
  for (int batch : {kSamples, 1}) {
    auto a = direct->Input(pixels.data(), batch);
    auto b = torch->Input(pixels.data(), batch);
    ASSERT_THAT(a, IsOk());
    ASSERT_THAT(b, IsOk());
    for (int s = 0; s < direct->num_stages(); ++s) {
      ASSERT_THAT(direct->RunStage(s, **a), IsOk());
      ASSERT_THAT(torch->RunStage(s, **b), IsOk());
      for (int e = 0; e < direct->num_exits(); ++e) {
        if (direct->ExitStage(e) != s || (e != 0 && e != last_early && e != direct->final_exit())) {
          continue;
        }
        std::vector<float> pa, pb;
        ASSERT_THAT(direct->RunHead(e, **a, &pa), IsOk());
        ASSERT_THAT(torch->RunHead(e, **b, &pb), IsOk());
        ASSERT_EQ(pa.size(), static_cast<size_t>(batch * classes));
        EXPECT_LT(MaxAbsDiff(pa, pb), 1e-5f) << name << " exit " << e << " batch " << batch;
      }
    }
    std::vector<float> la, lb;
    ASSERT_THAT(direct->FinalLogits(**a, &la), IsOk());
    ASSERT_THAT(torch->FinalLogits(**b, &lb), IsOk());
    EXPECT_LT(MaxAbsDiff(la, lb), kTolerance) << name << " batch " << batch;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DirectPathTest,
                         ::testing::Values("resnet_tiny", "mobilenet_tiny", "vgg_tiny",
                                           "opmix_op10", "opmix_op14"));

TEST(ImportedModelTest, SamplesAloneAndKeptRowsAnswerAsInTheBatch) {
  std::unique_ptr<ImportedModel> model = MakeModel("mobilenet_tiny");
  ASSERT_NE(model, nullptr);
  const std::vector<float> pixels = ReadFloats(Fixture("mobilenet_tiny.input.bin"));
  const std::vector<float> reference = ReadFloats(Fixture("mobilenet_tiny.output.bin"));
  const int classes = model->num_classes();
  // Sample 2 alone.
  std::vector<float> one(pixels.begin() + 2 * model->input_size(),
                         pixels.begin() + 3 * model->input_size());
  std::vector<float> logits;
  ASSERT_THAT(model->FinalLogits(*RunStages(*model, one, 1), &logits), IsOk());
  EXPECT_LT(MaxAbsDiff(logits, {reference.begin() + 2 * classes, reference.begin() + 3 * classes}),
            kTolerance);
  // Rows 1 and 3 kept half-way.
  absl::StatusOr<std::unique_ptr<Activations>> x = model->Input(pixels.data(), kSamples);
  ASSERT_THAT(x, IsOk());
  for (int s = 0; s < model->num_stages(); ++s) {
    if (s == 5) (*x)->KeepRows({1, 3});
    ASSERT_THAT(model->RunStage(s, **x), IsOk());
  }
  ASSERT_THAT(model->FinalLogits(**x, &logits), IsOk());
  std::vector<float> expected(reference.begin() + classes, reference.begin() + 2 * classes);
  expected.insert(expected.end(), reference.begin() + 3 * classes, reference.end());
  EXPECT_LT(MaxAbsDiff(logits, expected), kTolerance);
}

// --- Manifest, heads, model directory ----------------------------------------------

TEST(ImportedModelTest, ManifestListsStagesAndExits) {
  std::unique_ptr<ImportedModel> model = MakeModel("resnet_tiny");
  ASSERT_NE(model, nullptr);
  const v1::ModelManifest& m = model->manifest();
  ASSERT_EQ(m.stages_size(), 9);
  ASSERT_EQ(m.exits_size(), 9);
  EXPECT_EQ(m.stages(0).output().channels(), 8);
  EXPECT_EQ(m.stages(8).output().height(), 4);
  EXPECT_EQ(m.stages(8).output().channels(), 24);
  EXPECT_TRUE(m.exits(8).is_final());
  EXPECT_EQ(m.exits(8).macs(), 24 * 10);  // the classifier tail: pool + linear
  EXPECT_DOUBLE_EQ(m.exits(8).cumulative_macs_fraction(), 1.0);
  EXPECT_EQ(m.full_network_macs(), model->graph().total_macs());
  EXPECT_EQ(m.class_names_size(), 10);
  EXPECT_EQ(m.input().channels(), 3);
  EXPECT_TRUE(IsImportedManifest(m));
  EXPECT_EQ(model->input_size(), 3 * 32 * 32);

  ImportedModelInfo wrong = FixtureInfo("resnet_tiny");
  wrong.input.set_height(28);
  EXPECT_THAT(MakeImportedManifest(model->graph(), model->graph().cut_points, wrong),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("3x28x32")));
}

TEST(ImportedModelTest, EarlyExitsRunOnlyWithAHead) {
  std::unique_ptr<ImportedModel> model = MakeModel("resnet_tiny");
  ASSERT_NE(model, nullptr);
  const std::vector<float> pixels = ReadFloats(Fixture("resnet_tiny.input.bin"));
  absl::StatusOr<std::unique_ptr<Activations>> x = model->Input(pixels.data(), 2);
  ASSERT_THAT(x, IsOk());
  ASSERT_THAT(model->RunStage(0, **x), IsOk());
  std::vector<float> p;
  EXPECT_THAT(model->RunHead(0, **x, &p),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no trained head")));

  ExitHeadWeights head;  // pool 1, linear with zero weights: softmax of the bias
  head.fc_weight = {{10, 8}, std::vector<float>(80, 0.0f)};
  head.fc_bias = {{10}, std::vector<float>(10, 0.0f)};
  head.fc_bias.values[3] = std::log(3.0f);
  ExitHeadWeights wrong = head;
  wrong.fc_weight.dims = {10, 16};
  EXPECT_THAT(model->AttachHead(0, wrong), StatusIs(absl::StatusCode::kInvalidArgument));
  ASSERT_THAT(model->AttachHead(0, head), IsOk());
  ASSERT_THAT(model->RunHead(0, **x, &p), IsOk());
  ASSERT_EQ(p.size(), 20u);
  EXPECT_NEAR(p[3], 3.0f / 12.0f, 1e-6);
  EXPECT_NEAR(p[13], 3.0f / 12.0f, 1e-6);
  EXPECT_NEAR(p[0], 1.0f / 12.0f, 1e-6);
}

TEST(ImportedModelTest, ModelDirectoryLoadsThroughTheModelLoader) {
  ScopedTempDir dir;
  std::unique_ptr<ImportedModel> model = MakeModel("vgg_tiny");
  ASSERT_NE(model, nullptr);
  const std::string model_dir = dir.path() + "/models/vgg-tiny";
  ASSERT_THAT(SaveImportedModel(model_dir, ReadBytes(Fixture("vgg_tiny.onnx")), model->manifest()),
              IsOk());
  absl::StatusOr<std::shared_ptr<const Model>> loaded = LoadTorchModel(model_dir);
  ASSERT_THAT(loaded, IsOk());
  const std::vector<float> pixels = ReadFloats(Fixture("vgg_tiny.input.bin"));
  std::vector<float> p;
  ASSERT_THAT(
      (*loaded)->RunHead((*loaded)->final_exit(), *RunStages(**loaded, pixels, kSamples), &p),
      IsOk());
  EXPECT_LT(MaxAbsDiff(p, ReadFloats(Fixture("vgg_tiny.output.bin"))), kTolerance);

  v1::ModelManifest tampered = model->manifest();
  tampered.mutable_stages(2)->set_macs(1);
  ASSERT_THAT(WriteTextProtoAtomically(model_dir + "/" + kManifestFile, tampered), IsOk());
  EXPECT_THAT(LoadTorchModel(model_dir),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("stage 2 has")));
}

// --- Errors ----------------------------------------------------------------------

TEST(ImportErrorsTest, UnsupportedOpNamesTheNodeAndOp) {
  EXPECT_THAT(ImportOnnxFile(Fixture("unsupported_op.onnx")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("node 'leaky'"), HasSubstr("LeakyRelu"),
                             HasSubstr("unsupported op"))));
}

TEST(ImportErrorsTest, DynamicSpatialShapeNamesTheInput) {
  EXPECT_THAT(ImportOnnxFile(Fixture("dynamic_spatial.onnx")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'input'"), HasSubstr("[?,3,?,?]"),
                             HasSubstr("dynamic spatial shape"))));
}

TEST(ImportErrorsTest, TruncatedOrCorruptFileIsDataLoss) {
  EXPECT_THAT(ImportOnnxFile(Fixture("truncated.onnx")),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr("truncated.onnx"), HasSubstr("not a valid ONNX model"))));
  EXPECT_THAT(ImportOnnx("not an onnx file at all", "garbage.onnx"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("garbage.onnx")));
  EXPECT_THAT(ImportOnnx("", "empty.onnx"), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(ImportOnnxFile(Fixture("absent.onnx")), StatusIs(absl::StatusCode::kNotFound));
}

TEST(ImportErrorsTest, EveryPrefixOfAFileFailsCleanly) {
  const std::string bytes = ReadBytes(Fixture("opmix_op14.onnx"));
  for (size_t size = 0; size < bytes.size(); size += 997) {
    absl::StatusOr<ImportedGraph> graph = ImportOnnx(bytes.substr(0, size), "prefix");
    EXPECT_FALSE(graph.ok()) << size;
  }
}

// Random byte flips: the import fails with a status, or the graph imports and
// runs (or fails with a status); it never crashes.
TEST(ImportErrorsTest, FlippedBytesNeverCrash) {
  const std::string original = ReadBytes(Fixture("opmix_op14.onnx"));
  std::mt19937 rng(13);
  int imported = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string bytes = original;
    for (int k = 0; k < 3; ++k) {
      bytes[rng() % bytes.size()] = static_cast<char>(rng() % 256);
    }
    absl::StatusOr<ImportedGraph> graph = ImportOnnx(bytes, "flipped");
    if (!graph.ok()) continue;
    ++imported;
    absl::StatusOr<std::vector<CutPoint>> cuts = SelectCutPoints(*graph, {});
    ASSERT_THAT(cuts, IsOk());
    absl::StatusOr<v1::ModelManifest> manifest =
        MakeImportedManifest(*graph, *cuts, FixtureInfo("flipped"));
    if (!manifest.ok()) continue;
    absl::StatusOr<std::unique_ptr<ImportedModel>> model =
        ImportedModel::Create(*std::move(graph), *std::move(manifest));
    if (!model.ok()) continue;
    std::vector<float> pixels((*model)->input_size(), 0.5f), p;
    absl::StatusOr<std::unique_ptr<Activations>> x = (*model)->Input(pixels.data(), 1);
    ASSERT_THAT(x, IsOk());
    absl::Status st;
    for (int s = 0; s < (*model)->num_stages() && st.ok(); ++s) st = (*model)->RunStage(s, **x);
    if (st.ok()) st = (*model)->RunHead((*model)->final_exit(), **x, &p);
  }
  EXPECT_GT(imported, 0);  // most flips land in weights
}

TEST(ImportErrorsTest, FewerThanTwoCutPoints) {
  EXPECT_THAT(ImportOnnxFile(Fixture("one_cut.onnx")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("1 cut point"), HasSubstr("at least 2"))));
}

}  // namespace
}  // namespace hapi
