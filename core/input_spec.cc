#include "core/input_spec.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace hapi {
namespace {

// mean or std: one value, or one per channel, each finite (and > 0 for std).
absl::Status CheckChannelValues(const google::protobuf::RepeatedField<float>& values,
                                const char* what, int channels, bool positive) {
  if (values.size() != 1 && values.size() != channels) {
    return absl::InvalidArgumentError(absl::StrCat("input ", what, " has ", values.size(),
                                                   " values; give one, or one per channel (",
                                                   channels, ")"));
  }
  for (float v : values) {
    if (!std::isfinite(v) || (positive && !(v > 0))) {
      return absl::InvalidArgumentError(
          absl::StrCat("input ", what, " [", absl::StrJoin(values, ", "), "] must be finite",
                       positive ? " and > 0" : ""));
    }
  }
  return absl::OkStatus();
}

std::vector<float> PerChannel(const google::protobuf::RepeatedField<float>& values, int channels) {
  if (values.size() == 1) return std::vector<float>(channels, values[0]);
  return std::vector<float>(values.begin(), values.end());
}

}  // namespace

absl::Status ValidateInputSpec(const v1::InputSpec& spec) {
  if (spec.channels() != 1 && spec.channels() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("input channels ", spec.channels(), " must be 1 (grayscale) or 3 (RGB)"));
  }
  if (spec.height() < 1 || spec.width() < 1 || spec.height() > kMaxInputSide ||
      spec.width() > kMaxInputSide) {
    return absl::InvalidArgumentError(absl::StrCat("input size ", spec.height(), "x", spec.width(),
                                                   " must be within 1..", kMaxInputSide));
  }
  if (absl::Status st = CheckChannelValues(spec.mean(), "mean", spec.channels(), false); !st.ok()) {
    return st;
  }
  if (absl::Status st = CheckChannelValues(spec.std(), "std", spec.channels(), true); !st.ok()) {
    return st;
  }
  if (!v1::InputSpec::Resize_IsValid(spec.resize())) {
    return absl::InvalidArgumentError(absl::StrCat("input resize policy ", spec.resize(),
                                                   " is not RESIZE or RESIZE_CENTER_CROP"));
  }
  if (!spec.layout().empty() && spec.layout() != kInputLayoutNchw) {
    return absl::InvalidArgumentError(
        absl::StrCat("input layout '", spec.layout(), "' is not served; only NCHW is"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::InputSpec> EffectiveInputSpec(const v1::ModelManifest& manifest) {
  v1::InputSpec spec;
  if (manifest.has_input()) {
    spec = manifest.input();
  } else {
    spec = LegacyInputSpec();
    spec.set_mean(0, manifest.input_mean());
    if (manifest.input_std() != 0) spec.set_std(0, manifest.input_std());
  }
  if (absl::Status st = ValidateInputSpec(spec); !st.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", manifest.name(), "': ", st.message()));
  }
  spec.set_layout(kInputLayoutNchw);
  return spec;
}

v1::InputSpec LegacyInputSpec() {
  return MakeInputSpec(kLegacyInputChannels, kLegacyInputSide, kLegacyInputSide, 0.0f, 1.0f);
}

v1::InputSpec MakeInputSpec(int channels, int height, int width, float mean, float std) {
  v1::InputSpec spec;
  spec.set_channels(channels);
  spec.set_height(height);
  spec.set_width(width);
  spec.add_mean(mean);
  spec.add_std(std);
  spec.set_resize(v1::InputSpec::RESIZE);
  spec.set_layout(kInputLayoutNchw);
  return spec;
}

int64_t InputSize(const v1::InputSpec& spec) {
  return int64_t{spec.channels()} * spec.height() * spec.width();
}

v1::TensorShape InputShape(const v1::InputSpec& spec) {
  v1::TensorShape shape;
  shape.set_channels(spec.channels());
  shape.set_height(spec.height());
  shape.set_width(spec.width());
  return shape;
}

std::string ShapeString(int64_t channels, int64_t height, int64_t width) {
  return absl::StrCat(channels, "x", height, "x", width);
}

std::string ShapeString(const v1::InputSpec& spec) {
  return ShapeString(spec.channels(), spec.height(), spec.width());
}

std::vector<float> ChannelMeans(const v1::InputSpec& spec) {
  return PerChannel(spec.mean(), spec.channels());
}

std::vector<float> ChannelStds(const v1::InputSpec& spec) {
  return PerChannel(spec.std(), spec.channels());
}

}  // namespace hapi
