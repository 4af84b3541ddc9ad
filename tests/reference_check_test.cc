// The check against an exporting framework's reference outputs
// (model/reference_check.h) on a committed ONNX fixture (tests/data/onnx/):
// the reference is built from the imported model's own logits for PNG
// images written here, then perturbed.
#include "model/reference_check.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/image_decoder.h"
#include "core/input_spec.h"
#include "core/repository_layout.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "model/imported_model.h"
#include "model/onnx_import.h"
#include "model/torch_model.h"
#include "stb_image_write.h"
#include "tests/onnx_fixtures.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace {

using ::hapi::testing::Fixture;
using ::hapi::testing::FixtureSpec;
using ::hapi::testing::ImportFixture;
using ::hapi::testing::IsOk;
using ::hapi::testing::ReadBytes;
using ::hapi::testing::ScopedTempDir;
using ::hapi::testing::StatusIs;
using ::hapi::testing::WriteBytes;
using ::testing::AllOf;
using ::testing::DoubleNear;
using ::testing::HasSubstr;

constexpr int kImages = 6;

// A 40x40 RGB PNG, different for each `k`.
std::string WritePng(const std::string& path, int k) {
  constexpr int kSide = 40;
  std::vector<uint8_t> rgb(kSide * kSide * 3);
  for (int y = 0; y < kSide; ++y) {
    for (int x = 0; x < kSide; ++x) {
      for (int ch = 0; ch < 3; ++ch) {
        rgb[(y * kSide + x) * 3 + ch] =
            static_cast<uint8_t>((y / 4 == k ? 150 : 0) + (x * 7 + y * 13 + k * 29 + ch * 5) % 90);
      }
    }
  }
  EXPECT_TRUE(stbi_write_png(path.c_str(), kSide, kSide, 3, rgb.data(), kSide * 3)) << path;
  return path;
}

class ReferenceCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetIntraOpThreads(1);
    model_dir_ = dir_.Join("model");
    ASSERT_THAT(ImportFixture("resnet_tiny.onnx", model_dir_, "resnet-tiny"), IsOk());
    ASSERT_OK_AND_ASSIGN(model_, OpenImportedModel(model_dir_, ModelOptions{}, false));
    ref_.set_model("resnet-tiny");
    ref_.set_framework("the model itself");
    ref_.set_image_root(dir_.path());
    ref_.set_classes(model_->num_classes());
    std::vector<float> pixels;
    for (int k = 0; k < kImages; ++k) {
      const std::string name = absl::StrCat("image", k, ".png");
      ref_.add_images(name);
      ASSERT_OK_AND_ASSIGN(
          std::vector<float> x,
          DecodeEncodedImage(ReadBytes(WritePng(dir_.Join(name), k)), model_->input_spec()));
      pixels.insert(pixels.end(), x.begin(), x.end());
    }
    // The model's own logits, by the path the check takes.
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<Activations> act, model_->Input(pixels.data(), kImages));
    for (int s = 0; s < model_->num_stages(); ++s) ASSERT_THAT(model_->RunStage(s, *act), IsOk());
    std::vector<float> logits;
    ASSERT_THAT(model_->FinalLogits(*act, &logits), IsOk());
    ASSERT_EQ(logits.size(), static_cast<size_t>(kImages) * ref_.classes());
    for (float v : logits) ref_.add_logits(v);
    options_.reference = "test-reference";
    options_.batch = 4;  // two batches, the last partial
  }

  // Row `image`'s argmax in `ref`.
  int ArgMax(const v1::ReferenceOutputs& ref, int image) const {
    const float* row = ref.logits().data() + image * ref.classes();
    return static_cast<int>(std::max_element(row, row + ref.classes()) - row);
  }

  absl::StatusOr<v1::ReferenceCheck> Check(const v1::ReferenceOutputs& ref) const {
    return CheckAgainstReference(*model_, ref, options_);
  }

  ScopedTempDir dir_;
  std::string model_dir_;
  std::unique_ptr<ImportedModel> model_;
  v1::ReferenceOutputs ref_;
  ReferenceCheckOptions options_;
};

TEST_F(ReferenceCheckTest, ItsOwnLogitsPass) {
  ASSERT_OK_AND_ASSIGN(v1::ReferenceCheck check, Check(ref_));
  EXPECT_TRUE(check.passed());
  EXPECT_EQ(check.max_abs_logit_diff(), 0);
  EXPECT_EQ(check.mean_abs_logit_diff(), 0);
  EXPECT_EQ(check.images(), kImages);
  EXPECT_EQ(check.classes(), model_->num_classes());
  EXPECT_EQ(check.top1_agree(), kImages);
  EXPECT_EQ(check.top1_agreement(), 1);
  EXPECT_EQ(check.model(), "resnet-tiny");
  EXPECT_EQ(check.reference(), "test-reference");
  EXPECT_EQ(check.framework(), "the model itself");
  EXPECT_EQ(check.path(), "direct oneDNN");
  EXPECT_FALSE(check.has_accuracy_imported());
}

TEST_F(ReferenceCheckTest, ALogitOffByOneHundredthFailsTheLimitButAgrees) {
  constexpr int kImage = 4;
  v1::ReferenceOutputs ref = ref_;
  const int top = ArgMax(ref, kImage);  // raised: the argmax stays
  ref.set_logits(kImage * ref.classes() + top, ref.logits(kImage * ref.classes() + top) + 0.01f);
  ASSERT_OK_AND_ASSIGN(v1::ReferenceCheck check, Check(ref));
  EXPECT_THAT(check.max_abs_logit_diff(), DoubleNear(0.01, 1e-5));
  EXPECT_EQ(check.worst_image(), kImage);
  EXPECT_EQ(check.max_abs_diff_limit(), 1e-3);
  EXPECT_FALSE(check.passed());
  EXPECT_EQ(check.top1_agree(), kImages);
  EXPECT_EQ(check.top1_agreement(), 1);

  options_.max_abs_diff = 0.02;
  ASSERT_OK_AND_ASSIGN(check, Check(ref));
  EXPECT_TRUE(check.passed());
}

TEST_F(ReferenceCheckTest, AChangedArgmaxDisagreesOnThatImage) {
  constexpr int kImage = 1;
  v1::ReferenceOutputs ref = ref_;
  const int top = ArgMax(ref, kImage);
  const int other = (top + 1) % ref.classes();
  ref.set_logits(kImage * ref.classes() + other, ref.logits(kImage * ref.classes() + top) + 1);
  ASSERT_OK_AND_ASSIGN(v1::ReferenceCheck check, Check(ref));
  EXPECT_EQ(check.top1_agree(), kImages - 1);
  EXPECT_DOUBLE_EQ(check.top1_agreement(), (kImages - 1.0) / kImages);
  EXPECT_FALSE(check.passed());

  options_.max_abs_diff = 1e9;
  options_.min_top1_agreement = 0.8;  // 5/6 agree
  ASSERT_OK_AND_ASSIGN(check, Check(ref));
  EXPECT_TRUE(check.passed());
}

TEST_F(ReferenceCheckTest, LabelsGiveBothAccuracies) {
  v1::ReferenceOutputs ref = ref_;
  for (int i = 0; i < kImages; ++i) ref.add_labels(i == 0 ? ArgMax(ref, i) : ref.classes());
  ASSERT_OK_AND_ASSIGN(v1::ReferenceCheck check, Check(ref));
  ASSERT_TRUE(check.has_accuracy_imported());
  EXPECT_DOUBLE_EQ(check.accuracy_imported(), 1.0 / kImages);
  EXPECT_DOUBLE_EQ(check.accuracy_reference(), 1.0 / kImages);

  ref.mutable_labels()->RemoveLast();
  EXPECT_THAT(Check(ref),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("5 labels for 6 images")));
}

TEST_F(ReferenceCheckTest, AClassCountOtherThanTheModelsIsAnError) {
  v1::ReferenceOutputs ref = ref_;
  const int classes = ref.classes() - 1;
  ref.set_classes(classes);
  ref.mutable_logits()->Truncate(kImages * classes);
  EXPECT_THAT(Check(ref), StatusIs(absl::StatusCode::kInvalidArgument,
                                   AllOf(HasSubstr("resnet-tiny"),
                                         HasSubstr(absl::StrCat("test-reference has ", classes)))));
}

TEST_F(ReferenceCheckTest, ALogitCountThatDoesNotFitIsAnError) {
  v1::ReferenceOutputs ref = ref_;
  ref.mutable_logits()->RemoveLast();
  EXPECT_THAT(Check(ref), StatusIs(absl::StatusCode::kInvalidArgument,
                                   AllOf(HasSubstr("test-reference"),
                                         HasSubstr(absl::StrCat(ref.logits_size(), " logits")))));
  ref.clear_images();
  ref.clear_logits();
  EXPECT_THAT(Check(ref), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no images")));
}

TEST_F(ReferenceCheckTest, AMissingImageIsNotFound) {
  v1::ReferenceOutputs ref = ref_;
  ref.set_images(3, "absent.png");
  EXPECT_THAT(Check(ref), StatusIs(absl::StatusCode::kNotFound,
                                   AllOf(HasSubstr("image 3"), HasSubstr("absent.png"))));
}

TEST_F(ReferenceCheckTest, AnImageTheDecoderRefusesIsAnError) {
  WriteBytes(dir_.Join("garbage.png"), "not an image");
  v1::ReferenceOutputs ref = ref_;
  ref.set_images(2, "garbage.png");
  EXPECT_THAT(Check(ref), StatusIs(absl::StatusCode::kInvalidArgument,
                                   AllOf(HasSubstr("image 2"), HasSubstr("garbage.png"))));
}

TEST_F(ReferenceCheckTest, TheImageRootOptionOverridesTheReferences) {
  v1::ReferenceOutputs ref = ref_;
  ref.set_image_root(dir_.Join("elsewhere"));
  EXPECT_THAT(Check(ref), StatusIs(absl::StatusCode::kNotFound));
  options_.image_root = dir_.path();
  ASSERT_OK_AND_ASSIGN(v1::ReferenceCheck check, Check(ref));
  EXPECT_TRUE(check.passed());
}

TEST_F(ReferenceCheckTest, ReadsAReferenceWrittenAsJson) {
  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(ref_, &json).ok());
  WriteBytes(dir_.Join("ref.json"), json);
  ASSERT_OK_AND_ASSIGN(v1::ReferenceOutputs read, ReadReferenceOutputs(dir_.Join("ref.json")));
  EXPECT_EQ(read.SerializeAsString(), ref_.SerializeAsString());
  ASSERT_OK_AND_ASSIGN(v1::ReferenceCheck check, Check(read));
  EXPECT_TRUE(check.passed());
}

TEST_F(ReferenceCheckTest, ACorruptOrAbsentOrInvalidReferenceFileIsAnError) {
  const std::string corrupt = dir_.Join("corrupt.json");
  WriteBytes(corrupt, "{\"images\": [\"a.png\"], \"classes\": ");
  EXPECT_THAT(ReadReferenceOutputs(corrupt),
              StatusIs(absl::StatusCode::kDataLoss,
                       AllOf(HasSubstr(corrupt), HasSubstr("not a hapi.v1.ReferenceOutputs"))));
  const std::string unknown = dir_.Join("unknown.json");
  WriteBytes(unknown, "{\"imagez\": []}");
  EXPECT_THAT(ReadReferenceOutputs(unknown), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(ReadReferenceOutputs(dir_.Join("absent.json")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("absent.json")));
  const std::string short_logits = dir_.Join("short.json");
  WriteBytes(short_logits, "{\"images\": [\"a.png\"], \"classes\": 3, \"logits\": [1, 2]}");
  EXPECT_THAT(ReadReferenceOutputs(short_logits),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(short_logits), HasSubstr("2 logits"))));
}

TEST_F(ReferenceCheckTest, TheResultInJsonHasTheProtoFieldNames) {
  v1::ReferenceOutputs ref = ref_;
  ref.set_logits(0, ref.logits(0) + 0.5f);
  ASSERT_OK_AND_ASSIGN(v1::ReferenceCheck check, Check(ref));
  ASSERT_OK_AND_ASSIGN(std::string json, ReferenceCheckToJson(check));
  for (const char* field : {"\"model\"", "\"reference\"", "\"path\"", "\"max_abs_logit_diff\"",
                            "\"mean_abs_logit_diff\"", "\"top1_agree\"", "\"top1_agreement\"",
                            "\"worst_image\":0", "\"passed\":false", "\"images\":6"}) {
    EXPECT_THAT(json, HasSubstr(field));
  }
  EXPECT_THAT(json, ::testing::Not(HasSubstr("accuracy_imported")));
  v1::ReferenceCheck back;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &back).ok());
  EXPECT_EQ(back.SerializeAsString(), check.SerializeAsString());
}

}  // namespace
}  // namespace hapi
