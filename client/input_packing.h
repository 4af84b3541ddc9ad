// How hapi-client turns the grey images it holds (Fashion-MNIST test images,
// 1x28x28) into what the served model eats. The client asks the server for the
// model's input spec (ServingStatus.input) once per command instead of
// assuming 1x28x28, and packs every image by one rule (GrayImageFor):
// - the model's height and width are the image's: a raw uint8 CHW tensor,
//   the grey plane replicated into each of the model's channels (1 or 3),
//   Image.channels/height/width always set;
// - any other size: a grayscale PNG, which the server converts (resized by the
//   model's resize policy, grey replicated into R, G and B for an RGB model),
//   since the Open Inference Protocol takes raw tensors of the model's exact
//   shape only.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "hapi/v1/inference.pb.h"
#include "hapi/v1/model.pb.h"

namespace hapi::client {

// The spec the server reports; one without a shape (a server older than input
// specs) serves the default model's 1x28x28.
v1::InputSpec ServedInputSpec(const v1::ServingStatus& status);

// Bytes of one raw uint8 sample for `spec`: channels x height x width.
int64_t RawSampleBytes(const v1::InputSpec& spec);

// "3x32x32 (RESIZE_CENTER_CROP)": channels x height x width and the resize
// policy.
std::string DescribeInputSpec(const v1::InputSpec& spec);

// `plane` (`pixels` bytes) repeated `channels` times: a CHW tensor whose
// channels are all that grey.
std::string ReplicateChannels(const uint8_t* plane, int64_t pixels, int channels);

// A grey height x width image (row-major) as a grayscale PNG.
absl::StatusOr<std::string> EncodeGrayPng(const uint8_t* pixels, int height, int width);

// A grey height x width image as the model of `spec` takes it, by the rule
// above. INVALID_ARGUMENT when the spec's channel count is neither 1 nor 3,
// or the image has no pixels.
absl::StatusOr<v1::Image> GrayImageFor(const uint8_t* pixels, int height, int width,
                                       const v1::InputSpec& spec);

// An image already decoded to `spec` (an image folder's, core/image_folder.h:
// channels x height x width floats in [0,1]) as a raw uint8 CHW tensor of the
// model's shape, each value rounded to the nearest of 0..255: the server then
// sees within 1/510 of what it would decode from the file itself.
v1::Image QuantizedImageFor(const float* chw, const v1::InputSpec& spec);

}  // namespace hapi::client
