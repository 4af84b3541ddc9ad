// The direct oneDNN path (model/direct_program.h) without LibTorch: the ONNX
// fixtures in tests/data/onnx/ (scripts/make-onnx-fixtures.py) against
// PyTorch's own outputs, kept rows, heads, int8 and concurrent callers. Runs
// in the sanitizer builds too.
#include "model/direct_program.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/onnx_import.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace {

using ::hapi::testing::IsOk;
using ::hapi::testing::ReadBytes;
using ::hapi::testing::StatusIs;

constexpr int kSamples = 4;  // reference samples per fixture

std::vector<float> ReadFloats(const std::string& file) {
  const std::string bytes = ReadBytes(std::string(HAPI_ONNX_FIXTURES) + "/" + file);
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  return values;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

struct Fixture {
  ImportedGraph graph;
  std::unique_ptr<DirectProgram> program;
  std::vector<float> pixels, reference;  // reference: logits, or probabilities
};

// The fixtures' normalisation, as their ONNX metadata states it.
Fixture Load(const std::string& name) {
  Fixture f;
  absl::StatusOr<ImportedGraph> graph =
      ImportOnnxFile(std::string(HAPI_ONNX_FIXTURES) + "/" + name + ".onnx");
  EXPECT_THAT(graph, IsOk());
  if (!graph.ok()) return f;
  f.graph = *std::move(graph);
  absl::StatusOr<std::unique_ptr<DirectProgram>> program =
      DirectProgram::Create(f.graph, SplitGraph(f.graph, f.graph.cut_points), {0.49f, 0.48f, 0.45f},
                            {0.25f, 0.24f, 0.26f});
  EXPECT_THAT(program, IsOk());
  if (program.ok()) f.program = *std::move(program);
  f.pixels = ReadFloats(name + ".input.bin");
  f.reference = ReadFloats(name + ".output.bin");
  return f;
}

// Final logits (probabilities when the graph ended in Softmax) of samples
// [begin, begin + n), keeping `keep` after stage `keep_at`.
std::vector<float> Answers(const Fixture& f, int begin, int n, int keep_at = -1,
                           const std::vector<int>& keep = {}) {
  const int64_t size = f.graph.input_shape[0] * f.graph.input_shape[1] * f.graph.input_shape[2];
  std::unique_ptr<Activations> x = f.program->Input(f.pixels.data() + begin * size, n);
  for (int s = 0; s < f.program->num_stages(); ++s) {
    if (s == keep_at) x->KeepRows(keep);
    EXPECT_THAT(f.program->RunStage(s, *x), IsOk());
  }
  std::vector<float> out;
  EXPECT_THAT(f.program->FinalLogits(*x, &out), IsOk());
  if (f.graph.output_was_softmax) SoftmaxRows(&out, f.graph.num_classes);
  return out;
}

class DirectFixtureTest : public ::testing::TestWithParam<const char*> {};

TEST_P(DirectFixtureTest, AnswersMatchPyTorch) {
  const Fixture f = Load(GetParam());
  ASSERT_NE(f.program, nullptr);
  ASSERT_EQ(f.reference.size(), static_cast<size_t>(kSamples * f.graph.num_classes));
  EXPECT_LT(MaxAbsDiff(Answers(f, 0, kSamples), f.reference), 1e-4f);
  // One sample alone, and rows 1 and 3 kept half-way: the same answers.
  const int classes = f.graph.num_classes;
  EXPECT_LT(MaxAbsDiff(Answers(f, 2, 1),
                       {f.reference.begin() + 2 * classes, f.reference.begin() + 3 * classes}),
            1e-4f);
  std::vector<float> kept(f.reference.begin() + classes, f.reference.begin() + 2 * classes);
  kept.insert(kept.end(), f.reference.begin() + 3 * classes, f.reference.end());
  EXPECT_LT(MaxAbsDiff(Answers(f, 0, kSamples, f.program->num_stages() / 2, {1, 3}), kept), 1e-4f);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DirectFixtureTest,
                         ::testing::Values("resnet_tiny", "mobilenet_tiny", "vgg_tiny",
                                           "opmix_op10", "opmix_op14"));

TEST(DirectProgramTest, ConcurrentCallersGetTheSameAnswers) {
  const Fixture f = Load("resnet_tiny");
  ASSERT_NE(f.program, nullptr);
  const std::vector<float> expected = Answers(f, 0, kSamples);
  std::vector<std::vector<float>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) got[t] = Answers(f, 0, kSamples);
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g, expected);
}

TEST(DirectProgramTest, HeadsAreCheckedAndRunOnlyWhenAttached) {
  Fixture f = Load("resnet_tiny");
  ASSERT_NE(f.program, nullptr);
  const auto& shape = f.graph.shapes.at(f.graph.cut_points[0].tensor);
  ExitHeadWeights head;
  head.pool = 2;
  head.fc_weight.dims = {f.graph.num_classes, shape[0] * 4};
  head.fc_weight.values.assign(f.graph.num_classes * shape[0] * 4, 0.01f);
  head.fc_bias.dims = {f.graph.num_classes};
  head.fc_bias.values.assign(f.graph.num_classes, 0.f);
  head.fc_bias.values[3] = 1.f;
  ExitHeadWeights wrong = head;
  wrong.pool = 3;
  EXPECT_THAT(f.program->AttachHead(0, 0, wrong), StatusIs(absl::StatusCode::kInvalidArgument));
  std::unique_ptr<Activations> x = f.program->Input(f.pixels.data(), kSamples);
  ASSERT_THAT(f.program->RunStage(0, *x), IsOk());
  std::vector<float> logits;
  EXPECT_THAT(f.program->HeadLogits(0, *x, &logits),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  ASSERT_THAT(f.program->AttachHead(0, 0, head), IsOk());
  ASSERT_THAT(f.program->HeadLogits(0, *x, &logits), IsOk());
  ASSERT_EQ(logits.size(), static_cast<size_t>(kSamples * f.graph.num_classes));
  // Every class gets 0.01 x the sum of the pooled features; class 3 one more.
  std::vector<float> values;
  std::vector<int64_t> dims;
  ASSERT_THAT(f.program->CopyOut(*x, &values, &dims), IsOk());
  ASSERT_EQ(dims.size(), 4u);
  const int64_t plane = dims[2] * dims[3], per_sample = dims[1] * plane;
  for (int s = 0; s < kSamples; ++s) {
    // Adaptive 2x2 pooling of an even plane: each bin's mean; their sum over
    // the 4 bins is 4 x the plane mean.
    double sum = 0;
    for (int64_t i = 0; i < per_sample; ++i) sum += values[s * per_sample + i];
    const float expected = static_cast<float>(0.01 * 4 * sum / plane);
    EXPECT_NEAR(logits[s * f.graph.num_classes], expected, 1e-3f * std::max(1.f, expected));
    EXPECT_NEAR(logits[s * f.graph.num_classes + 3], expected + 1.f,
                1e-3f * std::max(1.f, expected));
  }
}

class Int8Test : public ::testing::TestWithParam<std::string> {};

TEST_P(Int8Test, StaysCloseAndReallyQuantises) {
  const Fixture f = Load(GetParam());
  ASSERT_NE(f.program, nullptr);
  // Calibrated on the fixture's own samples (there are only 4): this checks
  // the mechanism, not accuracy, which bench/ measures on held-out images.
  absl::StatusOr<std::unique_ptr<DirectProgram>> int8 = f.program->Int8(f.pixels.data(), kSamples);
  ASSERT_THAT(int8, IsOk());
  EXPECT_THAT((*int8)->Int8(f.pixels.data(), kSamples),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  Fixture q;
  q.graph = f.graph;
  q.program = *std::move(int8);
  q.pixels = f.pixels;
  const std::vector<float> exact = Answers(f, 0, kSamples), quantised = Answers(q, 0, kSamples);
  float range = 0;
  for (float v : exact) range = std::max(range, std::abs(v));
  const float diff = MaxAbsDiff(exact, quantised);
  EXPECT_GT(diff, 0.f);
  EXPECT_LT(diff, 0.1f * range);
  EXPECT_THAT(f.program->Int8(f.pixels.data(), 0), StatusIs(absl::StatusCode::kInvalidArgument));
}

// Every fixture architecture: residual adds, plain VGG stages, and
// MobileNetV2's depthwise convolutions, ReLU6 (Clip) and linear bottlenecks.
INSTANTIATE_TEST_SUITE_P(Fixtures, Int8Test,
                         ::testing::Values("resnet_tiny", "vgg_tiny", "mobilenet_tiny",
                                           "opmix_op14"));

}  // namespace
}  // namespace hapi
