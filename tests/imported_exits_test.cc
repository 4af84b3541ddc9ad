// Exit heads for an imported backbone (model/imported_exits.h) on the
// committed ONNX fixtures (tests/data/onnx/): heads train on the features the
// inference path computes, the backbone's answers stay bit-identical, the
// calibration tables say what the executor answers, and the optimizer plans a
// variant for the model that the served model then runs with early exits.
// The data are the synthetic grey 28x28 images of tests/tiny_model.h (a
// bright bar whose row depends on the class), converted to the fixtures'
// 3x32x32 input as the server converts a grey PNG.
#include "model/imported_exits.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/design.h"
#include "core/executor.h"
#include "core/files.h"
#include "core/image_folder.h"
#include "core/input_spec.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "hapi/v1/optimizer.grpc.pb.h"
#include "model/imported_model.h"
#include "model/labelled_images.h"
#include "model/onnx_import.h"
#include "model/profiler.h"
#include "model/torch_model.h"
#include "optimizer/optimizer_process.h"
#include "rpc/grpc_status.h"
#include "stb_image_write.h"
#include "tests/onnx_fixtures.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"
#include "tests/tiny_model.h"

namespace hapi {
namespace {

using ::hapi::testing::Fixture;
using ::hapi::testing::FixtureSpec;
using ::hapi::testing::ImportFixture;
using ::hapi::testing::IsOk;
using ::hapi::testing::ReadBytes;
using ::hapi::testing::ScopedTempDir;
using ::hapi::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr char kModel[] = "resnet-tiny";

FashionMnist SyntheticData(int train, int validation, int test) {
  FashionMnist data;
  data.train = testing::SyntheticImages(train, 11);
  data.validation = testing::SyntheticImages(validation, 12);
  data.test = testing::SyntheticImages(test, 13);
  data.split_seed = 5;
  return data;
}

ImportedExitOptions FastOptions() {
  ImportedExitOptions o;
  o.epochs = 4;
  o.batch_size = 64;
  o.threads = 1;
  o.learning_rate = 5e-3;
  o.progress = false;
  return o;
}

// The final exit's probabilities for every test image, through the model
// loader (the server's path).
std::vector<float> FinalProbabilities(const std::string& model_dir, const LabelledImages& images) {
  absl::StatusOr<std::shared_ptr<const Model>> model = LoadTorchModel(model_dir);
  EXPECT_THAT(model, IsOk());
  if (!model.ok()) return {};
  const std::vector<float> pixels = ReadAll(images, (*model)->input_size());
  absl::StatusOr<std::unique_ptr<Activations>> x = (*model)->Input(pixels.data(), images.size());
  EXPECT_THAT(x, IsOk());
  for (int s = 0; s < (*model)->num_stages(); ++s) EXPECT_THAT((*model)->RunStage(s, **x), IsOk());
  std::vector<float> p;
  EXPECT_THAT((*model)->RunHead((*model)->final_exit(), **x, &p), IsOk());
  return p;
}

// Imports resnet_tiny, records its final answers, trains its exits once for
// the whole binary.
struct Trained {
  ScopedTempDir dir;
  std::string repository, model_dir;
  LabelledSplits data;
  std::vector<float> final_before;
  ImportedExitsSummary summary;
};

const Trained& Shared() {
  // Destroyed at exit, which removes the temporary repository.
  static const std::unique_ptr<Trained> t = [] {
    auto t = std::make_unique<Trained>();
    t->repository = t->dir.Join("repository");
    t->model_dir = RepositoryLayout(t->repository).ModelDir(kModel);
    auto fail = [](const absl::Status& st) {
      ADD_FAILURE() << st;
      std::abort();
    };
    if (absl::Status st = ImportFixture("resnet_tiny.onnx", t->model_dir, kModel); !st.ok()) {
      fail(st);
    }
    absl::StatusOr<LabelledSplits> data =
        FashionMnistSplitsFor(SyntheticData(1200, 400, 400), FixtureSpec(), ImageConversion{});
    if (!data.ok()) fail(data.status());
    t->data = *std::move(data);
    t->final_before = FinalProbabilities(t->model_dir, *t->data.test);
    absl::StatusOr<ImportedExitsSummary> summary =
        TrainImportedExits(t->model_dir, t->data, FastOptions());
    if (!summary.ok()) fail(summary.status());
    t->summary = *std::move(summary);
    return t;
  }();
  return *t;
}

TEST(ImportedExitsTest, HeadsLearn) {
  const Trained& t = Shared();
  const ImportedExitsSummary& s = t.summary;
  ASSERT_EQ(s.epoch_loss.size(), 4u);
  EXPECT_LT(s.epoch_loss.back(), 0.7 * s.epoch_loss.front()) << "the loss must fall";
  ASSERT_OK_AND_ASSIGN(ModelMetadata m, LoadModelMetadata(t.model_dir));
  ASSERT_EQ(m.validation.num_exits(), 9);
  // Ten classes: chance is 10%. Every head must be far above it on
  // validation images it never trained on.
  for (int e = 0; e < m.validation.num_exits() - 1; ++e) {
    EXPECT_GT(m.validation.Accuracy(e), 0.5) << "exit " << e;
    EXPECT_NEAR(m.manifest.report().exits(e).accuracy().validation(), m.validation.Accuracy(e),
                1e-12);
    EXPECT_NEAR(m.manifest.report().exits(e).accuracy().test(), m.test.Accuracy(e), 1e-12);
  }
}

TEST(ImportedExitsTest, BackboneAnswersStayBitIdentical) {
  const Trained& t = Shared();
  const std::vector<float> after = FinalProbabilities(t.model_dir, *t.data.test);
  ASSERT_EQ(after.size(), t.final_before.size());
  ASSERT_FALSE(after.empty());
  EXPECT_EQ(std::memcmp(after.data(), t.final_before.data(), after.size() * sizeof(float)), 0);
  EXPECT_EQ(ReadBytes(t.model_dir + "/" + kImportedGraphFile),
            ReadBytes(Fixture("resnet_tiny.onnx")));
}

TEST(ImportedExitsTest, HeadsStayWithinTheMacsBudgetAndTheManifestSaysSo) {
  const Trained& t = Shared();
  ASSERT_OK_AND_ASSIGN(ModelMetadata m, LoadModelMetadata(t.model_dir));
  const v1::ModelManifest& manifest = m.manifest;
  EXPECT_EQ(manifest.exit_weights(), kExitsFile);
  EXPECT_EQ(manifest.split().train(), 1200);
  EXPECT_EQ(manifest.split().validation(), 400);
  EXPECT_EQ(manifest.report().exit_epoch_seconds_size(), 4);
  ASSERT_EQ(t.summary.heads.size(), 8u);
  int64_t to_stage = 0;
  for (int e = 0; e < manifest.exits_size(); ++e) {
    const v1::ExitInfo& exit = manifest.exits(e);
    to_stage += manifest.stages(e).macs();
    EXPECT_NEAR(exit.cumulative_macs_fraction(),
                static_cast<double>(to_stage + exit.macs()) / manifest.full_network_macs(), 1e-12);
    if (exit.is_final()) continue;
    const ExitHeadChoice& h = t.summary.heads[e];
    EXPECT_GT(exit.macs(), 0);
    EXPECT_LE(exit.macs(), 0.05 * manifest.backbone_macs()) << "exit " << e;
    const ExitHeadCost cost =
        HeadCost(manifest.stages(exit.after_stage()).output(), h.conv_channels, h.pool, 10);
    EXPECT_EQ(exit.macs(), cost.macs);
    EXPECT_EQ(exit.params(), cost.params);
  }
  const std::string report = ReadBytes(t.model_dir + "/" + kReportFile);
  EXPECT_THAT(report, AllOf(HasSubstr("within 5.0% of the backbone's MACs"),
                            HasSubstr("| exit-0 | 0 ("), HasSubstr("| final |")));
}

// Thresholds at the median score of each enabled exit, so that a good share
// of the samples leaves at every exit (as tests/executor_test.cc).
Design MedianDesign(const CalibrationTable& table, std::vector<int> exits) {
  Design d;
  d.exits = std::move(exits);
  for (int e : d.exits) {
    std::vector<float> scores;
    for (int s = 0; s < table.num_samples(); ++s) scores.push_back(table.confidence(e, s));
    std::nth_element(scores.begin(), scores.begin() + scores.size() / 2, scores.end());
    d.thresholds.push_back(scores[scores.size() / 2]);
  }
  return d;
}

// The executor over the served model (heads loaded from the directory)
// answers every test sample at the exit, with the label, that the test
// table says the design answers.
void ExpectExecutorMatchesTable(const Design& design, int batch) {
  const Trained& t = Shared();
  ASSERT_OK_AND_ASSIGN(ModelMetadata m, LoadModelMetadata(t.model_dir));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Model> model, LoadTorchModel(t.model_dir));
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<EarlyExitExecutor> executor,
                       EarlyExitExecutor::Create(model, design));
  const CalibrationTable& table = m.test;
  ASSERT_EQ(table.num_samples(), t.data.test->size());
  const std::vector<float> pixels = ReadAll(*t.data.test, model->input_size());
  int compared = 0, skipped = 0, early = 0;
  for (int begin = 0; begin < table.num_samples(); begin += batch) {
    const int n = std::min(batch, table.num_samples() - begin);
    ASSERT_OK_AND_ASSIGN(std::vector<SampleResult> results,
                         executor->Run(pixels.data() + begin * model->input_size(), n));
    for (int i = 0; i < n; ++i) {
      const int s = begin + i;
      int want = table.num_exits() - 1;
      bool near = false;
      for (size_t k = 0; k < design.exits.size(); ++k) {
        const float score = table.confidence(design.exits[k], s);
        near = near || std::fabs(score - design.thresholds[k]) < 1e-5f;
        if (score >= design.thresholds[k]) {
          want = design.exits[k];
          break;
        }
      }
      if (near) {
        ++skipped;
        continue;
      }
      ++compared;
      early += results[i].exit_index != table.num_exits() - 1;
      EXPECT_EQ(results[i].exit_index, want) << "sample " << s << " batch " << batch;
      EXPECT_EQ(results[i].label, table.predicted(want, s)) << "sample " << s;
      EXPECT_NEAR(results[i].confidence, table.confidence(want, s), 1e-4) << "sample " << s;
    }
  }
  EXPECT_LE(skipped, table.num_samples() / 50);
  EXPECT_GT(early, compared / 4) << "the design must take early exits";
}

TEST(ImportedExitsTest, CalibrationTableSaysWhatTheExecutorAnswers) {
  const Trained& t = Shared();
  ASSERT_OK_AND_ASSIGN(ModelMetadata m, LoadModelMetadata(t.model_dir));
  ExpectExecutorMatchesTable(MedianDesign(m.test, {0, 3, 6}), 1);
  ExpectExecutorMatchesTable(MedianDesign(m.test, {1, 4}), 37);
}

// hapi-optimizer in-process: register a device profile measured on the
// imported model, ask for a variant, and serve its design.
TEST(ImportedExitsTest, OptimizerPlansAVariantTheServedModelRuns) {
  const Trained& t = Shared();
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Model> model, LoadTorchModel(t.model_dir));
  ProfilerOptions profiler;
  profiler.iterations = 30;
  profiler.warmup_iterations = 5;
  profiler.progress = false;
  ImageSet inputs = testing::SyntheticImages(40, 21);  // grey 28x28: converted to 3x32x32
  ASSERT_OK_AND_ASSIGN(v1::DeviceProfile profile, ProfileDevice(model, "cpu", inputs, profiler));

  ScopedTempDir state;
  OptimizerOptions options;
  options.listen = "";
  options.repository = t.repository;
  options.state = state.Join("state.db");
  options.metrics_address = "";
  options.gnuplot = "";
  options.profiler = "";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<OptimizerProcess> optimizer,
                       OptimizerProcess::Create(options));
  std::unique_ptr<v1::Optimizer::Stub> stub = v1::Optimizer::NewStub(optimizer->InProcessChannel());
  auto call = [&](auto method, const auto& request, auto* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return FromGrpcStatus((stub.get()->*method)(&ctx, request, response));
  };
  v1::RegisterDeviceRequest reg;
  *reg.mutable_profile() = profile;
  v1::DeviceProfile registered;
  ASSERT_OK(call(&v1::Optimizer::Stub::RegisterDevice, reg, &registered));

  // Max accuracy within the full network's latency: the early exits are far
  // more accurate than the fixture's random final classifier, so the plan
  // must use them.
  const ModelMetadata m = *LoadModelMetadata(t.model_dir);
  double full_s = 0;
  for (const auto& s : profile.batches(0).stages()) full_s += s.mean_s();
  full_s += profile.batches(0).exits(model->final_exit()).mean_s();
  v1::CreateVariantRequest req;
  req.set_model(kModel);
  req.set_device("cpu");
  req.mutable_sla()->set_latency_budget_ms(2 * full_s * 1e3);
  v1::Job job;
  ASSERT_OK(call(&v1::Optimizer::Stub::CreateVariant, req, &job));
  for (int i = 0; i < 600 && job.state() != v1::SUCCEEDED && job.state() != v1::FAILED; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    v1::GetJobRequest get;
    get.set_id(job.id());
    ASSERT_OK(call(&v1::Optimizer::Stub::GetJob, get, &job));
  }
  ASSERT_EQ(job.state(), v1::SUCCEEDED) << job.error();
  v1::GetVariantRequest get_variant;
  get_variant.set_id(job.variant());
  v1::VariantManifest variant;
  ASSERT_OK(call(&v1::Optimizer::Stub::GetVariant, get_variant, &variant));
  EXPECT_EQ(variant.model(), kModel);
  ASSERT_FALSE(variant.enabled_exits().empty());
  EXPECT_GT(variant.predicted_accuracy(), variant.final_exit_accuracy());

  Design design;
  design.exits.assign(variant.enabled_exits().begin(), variant.enabled_exits().end());
  design.thresholds.assign(variant.thresholds().begin(), variant.thresholds().end());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<EarlyExitExecutor> executor,
                       EarlyExitExecutor::Create(model, design));
  const std::vector<float> pixels = ReadAll(*t.data.test, model->input_size());
  ASSERT_OK_AND_ASSIGN(std::vector<SampleResult> results,
                       executor->Run(pixels.data(), t.data.test->size()));
  int early = 0, correct = 0;
  for (int i = 0; i < t.data.test->size(); ++i) {
    early += results[i].exit_index != model->final_exit();
    correct += results[i].label == t.data.test->label(i);
  }
  EXPECT_GT(early, 0);
  // The served accuracy is the table's: the test table's accuracy of the design.
  EXPECT_NEAR(static_cast<double>(correct) / t.data.test->size(), variant.test_accuracy(), 0.02);
}

TEST(ImportedExitsTest, RefusesDataThatDoesNotFitTheModel) {
  ScopedTempDir dir;
  const std::string model_dir = dir.Join("models/vgg");
  ASSERT_OK(ImportFixture("vgg_tiny.onnx", model_dir, "vgg"));
  ImageConversion strict;
  strict.convert = false;
  EXPECT_THAT(FashionMnistSplitsFor(SyntheticData(10, 10, 10), FixtureSpec(), strict),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("1x28x28"), HasSubstr("3x32x32"))));
  // Converted for another shape than the model's: named both.
  v1::InputSpec gray = MakeInputSpec(1, 28, 28, 0.5f, 0.5f);
  ASSERT_OK_AND_ASSIGN(LabelledSplits wrong_shape,
                       FashionMnistSplitsFor(SyntheticData(10, 10, 10), gray, strict));
  EXPECT_THAT(TrainImportedExits(model_dir, wrong_shape, FastOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("1x28x28"), HasSubstr("3x32x32"), HasSubstr("vgg"))));
  ASSERT_OK_AND_ASSIGN(LabelledSplits fewer_classes,
                       FashionMnistSplitsFor(SyntheticData(10, 10, 10), FixtureSpec(), {}));
  fewer_classes.class_names.resize(5);
  EXPECT_THAT(TrainImportedExits(model_dir, fewer_classes, FastOptions()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("5 classes")));
  ImportedExitOptions tiny_cache = FastOptions();
  tiny_cache.feature_cache_bytes = 1000;
  ASSERT_OK_AND_ASSIGN(LabelledSplits fits,
                       FashionMnistSplitsFor(SyntheticData(10, 10, 10), FixtureSpec(), {}));
  EXPECT_THAT(TrainImportedExits(model_dir, fits, tiny_cache),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("at most 0 samples")));
  // Nothing was written: the directory is still the bare import.
  v1::ModelManifest manifest;
  ASSERT_OK(ReadTextProto(model_dir + "/" + kManifestFile, &manifest));
  EXPECT_TRUE(manifest.exit_weights().empty());
}

TEST(ImportedExitsTest, HeadBudgetShrinksHeadsAndRefusesWhenNothingFits) {
  ScopedTempDir dir;
  const std::string model_dir = dir.Join("models/vgg");
  ASSERT_OK(ImportFixture("vgg_tiny.onnx", model_dir, "vgg"));
  v1::ModelManifest manifest;
  ASSERT_OK(ReadTextProto(model_dir + "/" + kManifestFile, &manifest));
  ImportedExitOptions generous = FastOptions();
  generous.max_head_macs_fraction = 10;  // no budget to speak of: the native choice
  ASSERT_OK_AND_ASSIGN(std::vector<ExitHeadChoice> wide, ChooseExitHeads(manifest, generous));
  ASSERT_OK_AND_ASSIGN(std::vector<ExitHeadChoice> fair, ChooseExitHeads(manifest, FastOptions()));
  ASSERT_EQ(wide.size(), fair.size());
  bool shrunk = false;
  for (size_t k = 0; k < wide.size(); ++k) {
    const v1::TensorShape& s = manifest.stages(manifest.exits(wide[k].exit).after_stage()).output();
    // The native rule: a 32-channel conv on outputs larger than 14.
    EXPECT_EQ(wide[k].conv_channels, std::min(s.height(), s.width()) > 14 ? 32 : 0);
    EXPECT_LE(fair[k].macs, wide[k].macs);
    EXPECT_LE(fair[k].macs, 0.05 * manifest.backbone_macs());
    shrunk = shrunk || fair[k].macs < wide[k].macs;
  }
  EXPECT_TRUE(shrunk) << "the 5% rule must bind somewhere on vgg_tiny's 32x32 stages";
  ImportedExitOptions stingy = FastOptions();
  stingy.max_head_macs_fraction = 1e-6;
  EXPECT_THAT(ChooseExitHeads(manifest, stingy),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("exit 0"), HasSubstr("even a linear head"))));
}

// An image folder plugs into the same trainer: RGB PNGs of another size,
// decoded for the model by core/image_folder.h. Class c is a bar of colour c
// at row band c, so the heads can learn it.
TEST(ImportedExitsTest, TrainsOnAnImageFolder) {
  ScopedTempDir dir;
  const std::string root = dir.Join("bars");
  for (const char* split : {"train", "val", "test"}) {
    const int per_class = std::string(split) == "train" ? 12 : 4;
    for (int c = 0; c < 10; ++c) {
      const std::string folder = absl::StrCat(root, "/", split, "/class", c);
      std::filesystem::create_directories(folder);
      for (int k = 0; k < per_class; ++k) {
        constexpr int kSide = 40;
        std::vector<uint8_t> rgb(kSide * kSide * 3);
        for (int y = 0; y < kSide; ++y) {
          for (int x = 0; x < kSide; ++x) {
            const bool bar = y / 4 == c;
            for (int ch = 0; ch < 3; ++ch) {
              rgb[(y * kSide + x) * 3 + ch] = static_cast<uint8_t>(
                  (bar ? 120 + 40 * ((c + ch) % 3) : 0) + (x * 7 + y * 13 + k * 29 + ch) % 50);
            }
          }
        }
        ASSERT_TRUE(stbi_write_png(absl::StrCat(folder, "/", k, ".png").c_str(), kSide, kSide, 3,
                                   rgb.data(), kSide * 3));
      }
    }
  }
  ImageFolderOptions folder_options;
  folder_options.progress = false;
  ASSERT_OK_AND_ASSIGN(ImageFolderDataset folder,
                       LoadImageFolder(root, FixtureSpec(), folder_options));
  const LabelledSplits data =
      ImageFolderSplits(std::make_shared<const ImageFolderDataset>(std::move(folder)), "bars");
  ASSERT_EQ(data.train->size(), 120);
  const v1::TensorShape shape = data.train->shape();
  EXPECT_EQ(ShapeString(shape.channels(), shape.height(), shape.width()), "3x32x32");

  const std::string model_dir = dir.Join("models/vgg");
  ASSERT_OK(ImportFixture("vgg_tiny.onnx", model_dir, "vgg"));
  ImportedExitOptions options = FastOptions();
  options.epochs = 6;
  options.batch_size = 16;
  ASSERT_OK_AND_ASSIGN(ImportedExitsSummary summary, TrainImportedExits(model_dir, data, options));
  EXPECT_LT(summary.epoch_loss.back(), summary.epoch_loss.front());
  ASSERT_OK_AND_ASSIGN(ModelMetadata m, LoadModelMetadata(model_dir));
  EXPECT_EQ(m.manifest.split().train(), 120);
  EXPECT_EQ(m.test.num_samples(), 40);
  EXPECT_EQ(m.manifest.dataset(), "bars");
  EXPECT_GT(m.validation.Accuracy(0), 0.3) << "chance is 0.1";

  // Retraining replaces the heads and the report, and leaves the backbone.
  options.epochs = 2;
  ASSERT_OK(TrainImportedExits(model_dir, data, options).status());
  ASSERT_OK_AND_ASSIGN(ModelMetadata again, LoadModelMetadata(model_dir));
  EXPECT_EQ(again.manifest.report().exit_epoch_seconds_size(), 2);
  EXPECT_EQ(again.manifest.training().exit_epochs(), 2);
  EXPECT_EQ(ReadBytes(model_dir + "/" + kImportedGraphFile), ReadBytes(Fixture("vgg_tiny.onnx")));
}

// An imported graph in int8 with its trained heads: ranges from training
// images, answers close to fp32's at every exit but really quantised.
TEST(ImportedExitsTest, RunsInInt8WithItsHeads) {
  const Trained& t = Shared();
  ScopedTempDir tmp;
  const std::string dir = tmp.Join("int8-model");
  std::filesystem::copy(t.model_dir, dir, std::filesystem::copy_options::recursive);
  ModelOptions int8;
  int8.int8 = true;
  EXPECT_THAT(LoadTorchModel(dir, int8),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("hapi-quantize")));
  const std::shared_ptr<const LabelledImages> train = FirstImages(t.data.train, 200);
  const std::vector<float> pixels = ReadAll(*train, InputSize(FixtureSpec()));
  ASSERT_OK_AND_ASSIGN(v1::Int8Ranges ranges, CalibrateInt8Ranges(dir, pixels.data(), 200));
  EXPECT_EQ(ranges.samples(), 200);
  EXPECT_EQ(ranges.model(), kModel);
  EXPECT_GT(ranges.max_abs_size(), 5);
  ASSERT_OK(WriteTextProtoAtomically(dir + "/" + kInt8RangesFile, ranges));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Model> q, LoadTorchModel(dir, int8));
  ASSERT_OK_AND_ASSIGN(std::shared_ptr<const Model> f, LoadTorchModel(dir, ModelOptions{}));
  const std::shared_ptr<const LabelledImages> test = FirstImages(t.data.test, 200);
  ASSERT_OK_AND_ASSIGN(CalibrationTable fp32, CalibrateOnImages(*f, *test, ""));
  ASSERT_OK_AND_ASSIGN(CalibrationTable quantised, CalibrateOnImages(*q, *test, ""));
  int differing_scores = 0;
  for (int e = 0; e < fp32.num_exits(); ++e) {
    int same = 0;
    for (int s = 0; s < fp32.num_samples(); ++s) {
      same += fp32.predicted(e, s) == quantised.predicted(e, s);
      differing_scores += fp32.confidence(e, s) != quantised.confidence(e, s);
    }
    EXPECT_GE(same, 0.9 * fp32.num_samples()) << "exit " << e;
    EXPECT_NEAR(quantised.Accuracy(e), fp32.Accuracy(e), 0.05) << "exit " << e;
  }
  EXPECT_GT(differing_scores, fp32.num_samples()) << "int8 must really quantise";
}

TEST(ImportedExitsTest, TamperedHeadsFileIsDataLoss) {
  const Trained& t = Shared();
  ScopedTempDir dir;
  const std::string copy = dir.Join("models/copy");
  std::filesystem::create_directories(copy);
  for (const auto& entry : std::filesystem::directory_iterator(t.model_dir)) {
    std::filesystem::copy(entry.path(), copy + "/" + entry.path().filename().string());
  }
  ASSERT_THAT(LoadTorchModel(copy), IsOk());
  v1::ModelManifest manifest;
  ASSERT_OK(ReadTextProto(copy + "/" + kManifestFile, &manifest));
  manifest.mutable_exits(2)->set_macs(manifest.exits(2).macs() + 1);
  ASSERT_OK(WriteTextProtoAtomically(copy + "/" + kManifestFile, manifest));
  EXPECT_THAT(LoadTorchModel(copy),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("exit 2's head has")));
  ASSERT_OK(WriteFileAtomically(copy + "/" + kExitsFile, "not a heads file"));
  EXPECT_THAT(LoadTorchModel(copy),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not an exit heads file")));
}

}  // namespace
}  // namespace hapi
