// What a model eats (hapi.v1.InputSpec, in its manifest): channels (1 or 3),
// height, width, per-channel normalisation, resize policy, layout. Requests are
// decoded to channels x height x width floats in [0,1] (pixel/255); the model
// normalises them per channel, (x - mean[c]) / std[c].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

// The input of manifests written before `input` existed, which all describe
// the default Fashion-MNIST network: 1x28x28 grayscale.
inline constexpr int kLegacyInputChannels = 1;
inline constexpr int kLegacyInputSide = 28;

// Largest height or width of a model's input.
inline constexpr int kMaxInputSide = 4096;

// The only layout served.
inline constexpr char kInputLayoutNchw[] = "NCHW";

// The spec `manifest`'s model eats, validated (ValidateInputSpec), with the
// layout filled in. A manifest without `input` is one written before it
// existed: 1x28x28 with its input_mean and input_std (an unset std, 0, means
// 1: no scaling), resized with RESIZE. INVALID_ARGUMENT naming the model and
// what is wrong.
absl::StatusOr<v1::InputSpec> EffectiveInputSpec(const v1::ModelManifest& manifest);

// OK when `spec` can be served: channels 1 or 3; height and width within
// 1..kMaxInputSide; mean and std each one value (for every channel) or one per
// channel, finite, std > 0; a known resize policy; layout "NCHW" or empty
// (meaning NCHW). INVALID_ARGUMENT saying what is wrong otherwise.
absl::Status ValidateInputSpec(const v1::InputSpec& spec);

// The shape of a manifest written before `input` existed, with no
// normalisation (mean 0, std 1): 1x28x28, resized with RESIZE.
v1::InputSpec LegacyInputSpec();

// A spec of the given shape with one mean and one std for every channel,
// resized with RESIZE, layout NCHW.
v1::InputSpec MakeInputSpec(int channels, int height, int width, float mean, float std);

// Floats per sample: channels x height x width.
int64_t InputSize(const v1::InputSpec& spec);

// channels x height x width as a TensorShape (the model seam's input_shape()).
v1::TensorShape InputShape(const v1::InputSpec& spec);

// "3x32x32": channels x height x width, for messages.
std::string ShapeString(const v1::InputSpec& spec);
std::string ShapeString(int64_t channels, int64_t height, int64_t width);

// The mean and std of every channel (a single value repeated), channels
// values each. `spec` must be valid.
std::vector<float> ChannelMeans(const v1::InputSpec& spec);
std::vector<float> ChannelStds(const v1::InputSpec& spec);

}  // namespace hapi
