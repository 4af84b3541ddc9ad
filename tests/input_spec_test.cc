// The input spec (core/input_spec.h): what a manifest's model eats, legacy
// manifests included, and every rule of its validation.
#include "core/input_spec.h"

#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace {

using ::hapi::testing::IsOk;
using ::hapi::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::InputSpec Rgb32() {
  v1::InputSpec spec;
  spec.set_channels(3);
  spec.set_height(32);
  spec.set_width(32);
  for (float m : {0.485f, 0.456f, 0.406f}) spec.add_mean(m);
  for (float s : {0.229f, 0.224f, 0.225f}) spec.add_std(s);
  spec.set_resize(v1::InputSpec::RESIZE_CENTER_CROP);
  return spec;
}

void ExpectInvalid(const v1::InputSpec& spec, const std::string& message) {
  EXPECT_THAT(ValidateInputSpec(spec),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(message)))
      << spec.ShortDebugString();
}

TEST(InputSpecTest, ManifestWithAnInputSpecEatsIt) {
  v1::ModelManifest manifest;
  manifest.set_name("rgb");
  *manifest.mutable_input() = Rgb32();
  manifest.set_input_mean(0.3f);  // ignored: `input` says it all
  absl::StatusOr<v1::InputSpec> spec = EffectiveInputSpec(manifest);
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(spec->channels(), 3);
  EXPECT_EQ(spec->height(), 32);
  EXPECT_EQ(spec->width(), 32);
  EXPECT_THAT(spec->mean(), ElementsAre(0.485f, 0.456f, 0.406f));
  EXPECT_THAT(spec->std(), ElementsAre(0.229f, 0.224f, 0.225f));
  EXPECT_EQ(spec->resize(), v1::InputSpec::RESIZE_CENTER_CROP);
  EXPECT_EQ(spec->layout(), "NCHW");  // filled in when empty
}

TEST(InputSpecTest, LegacyManifestEats1x28x28WithItsMeanAndStd) {
  v1::ModelManifest manifest;
  manifest.set_input_mean(0.286f);
  manifest.set_input_std(0.353f);
  absl::StatusOr<v1::InputSpec> spec = EffectiveInputSpec(manifest);
  ASSERT_THAT(spec, IsOk());
  EXPECT_EQ(ShapeString(*spec), "1x28x28");
  EXPECT_THAT(spec->mean(), ElementsAre(0.286f));
  EXPECT_THAT(spec->std(), ElementsAre(0.353f));
  EXPECT_EQ(spec->resize(), v1::InputSpec::RESIZE);
  EXPECT_EQ(spec->layout(), "NCHW");
  // Neither set: no normalisation, LegacyInputSpec().
  spec = EffectiveInputSpec(v1::ModelManifest());
  ASSERT_THAT(spec, IsOk());
  EXPECT_THAT(spec->mean(), ElementsAre(0.0f));
  EXPECT_THAT(spec->std(), ElementsAre(1.0f));
  EXPECT_EQ(spec->SerializeAsString(), LegacyInputSpec().SerializeAsString());
}

TEST(InputSpecTest, InvalidSpecInAManifestNamesTheModel) {
  v1::ModelManifest manifest;
  manifest.set_name("broken");
  *manifest.mutable_input() = Rgb32();
  manifest.mutable_input()->set_channels(2);
  EXPECT_THAT(EffectiveInputSpec(manifest),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("'broken'"), HasSubstr("channels 2"))));
  manifest.set_input_std(std::numeric_limits<float>::quiet_NaN());
  manifest.clear_input();
  EXPECT_THAT(EffectiveInputSpec(manifest),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("std")));
}

TEST(InputSpecTest, ChannelsAreOneOrThree) {
  EXPECT_THAT(ValidateInputSpec(Rgb32()), IsOk());
  v1::InputSpec spec = MakeInputSpec(1, 28, 28, 0.5f, 0.25f);
  EXPECT_THAT(ValidateInputSpec(spec), IsOk());
  for (int channels : {0, 2, 4, -1}) {
    spec.set_channels(channels);
    ExpectInvalid(spec, "1 (grayscale) or 3 (RGB)");
  }
}

TEST(InputSpecTest, SidesAreWithinTheLimit) {
  v1::InputSpec spec = MakeInputSpec(3, 1, kMaxInputSide, 0, 1);
  EXPECT_THAT(ValidateInputSpec(spec), IsOk());
  for (auto [h, w] :
       {std::pair{0, 28}, {28, 0}, {-1, 28}, {kMaxInputSide + 1, 28}, {28, kMaxInputSide + 1}}) {
    spec.set_height(h);
    spec.set_width(w);
    ExpectInvalid(spec, "within 1..4096");
  }
}

TEST(InputSpecTest, MeanAndStdAreOneValueOrOnePerChannel) {
  v1::InputSpec spec = Rgb32();
  spec.mutable_mean()->RemoveLast();
  ExpectInvalid(spec, "mean has 2 values");
  spec.clear_mean();
  ExpectInvalid(spec, "mean has 0 values");
  spec.add_mean(0.5f);  // one for every channel
  EXPECT_THAT(ValidateInputSpec(spec), IsOk());
  spec.add_std(1.0f);
  ExpectInvalid(spec, "std has 4 values");
  spec.clear_std();
  ExpectInvalid(spec, "std has 0 values");
  // One channel takes one value only.
  v1::InputSpec gray = MakeInputSpec(1, 28, 28, 0.5f, 0.25f);
  gray.add_mean(0.5f);
  ExpectInvalid(gray, "one per channel (1)");
}

TEST(InputSpecTest, MeanAndStdAreFiniteAndStdPositive) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (float bad : {nan, inf, -inf}) {
    v1::InputSpec spec = Rgb32();
    spec.set_mean(1, bad);
    ExpectInvalid(spec, "mean");
    spec = Rgb32();
    spec.set_std(2, bad);
    ExpectInvalid(spec, "std");
  }
  for (float bad : {0.0f, -0.5f}) {
    v1::InputSpec spec = Rgb32();
    spec.set_std(0, bad);
    ExpectInvalid(spec, "> 0");
  }
  v1::InputSpec spec = Rgb32();
  spec.set_mean(0, -3.0f);  // any finite mean
  EXPECT_THAT(ValidateInputSpec(spec), IsOk());
}

TEST(InputSpecTest, ResizePolicyAndLayoutAreKnown) {
  v1::InputSpec spec = Rgb32();
  spec.set_resize(static_cast<v1::InputSpec::Resize>(7));
  ExpectInvalid(spec, "resize policy 7");
  spec = Rgb32();
  spec.set_layout("NHWC");
  ExpectInvalid(spec, "'NHWC'");
  spec.set_layout("NCHW");
  EXPECT_THAT(ValidateInputSpec(spec), IsOk());
}

TEST(InputSpecTest, Helpers) {
  const v1::InputSpec rgb = Rgb32();
  EXPECT_EQ(InputSize(rgb), 3 * 32 * 32);
  EXPECT_EQ(ShapeString(rgb), "3x32x32");
  EXPECT_EQ(ShapeString(1, 2, 3), "1x2x3");
  const v1::TensorShape shape = InputShape(rgb);
  EXPECT_EQ(shape.channels(), 3);
  EXPECT_EQ(shape.height(), 32);
  EXPECT_EQ(shape.width(), 32);
  EXPECT_THAT(ChannelMeans(rgb), ElementsAre(0.485f, 0.456f, 0.406f));
  EXPECT_THAT(ChannelStds(rgb), ElementsAre(0.229f, 0.224f, 0.225f));
  const v1::InputSpec one = MakeInputSpec(3, 8, 4, 0.5f, 0.25f);
  EXPECT_THAT(ChannelMeans(one), ElementsAre(0.5f, 0.5f, 0.5f));
  EXPECT_THAT(ChannelStds(one), ElementsAre(0.25f, 0.25f, 0.25f));
  EXPECT_EQ(one.resize(), v1::InputSpec::RESIZE);
  EXPECT_EQ(one.layout(), "NCHW");
  EXPECT_THAT(ValidateInputSpec(one), IsOk());
}

}  // namespace
}  // namespace hapi
