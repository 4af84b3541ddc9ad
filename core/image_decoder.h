// Turns an image into the input of a model, as its input spec
// (core/input_spec.h) says: channels x height x width floats in [0,1]
// (pixel/255), channel-major (CHW), before the model's normalisation. The
// server decodes requests with it, the image-folder loader (core/
// image_folder.h) its files: both get the same floats from the same bytes.
// Library hapi::image (libpng, libjpeg-turbo, stb_image_resize; no gRPC).
//
// Encoded images are PNG (libpng) or JPEG (libjpeg-turbo), both fuzzed
// upstream, told apart by their signature; nothing else is decoded.
// - Colour: a 3-channel model gets RGB as decoded (a grey image has its grey
//   replicated into R, G and B); a 1-channel model gets luma (BT.601 integer
//   weights, as stb_image computed it). CMYK and YCCK JPEGs become RGB the
//   way stb_image made them; alpha is dropped, not composited.
// - Size, by the spec's resize policy (stb_image_resize, its default filters,
//   edges clamped), for any image whose size differs from the model's:
//   RESIZE scales to height x width, not keeping the aspect ratio;
//   RESIZE_CENTER_CROP scales the image so that it covers height x width
//   with its shorter side (relative to the target's) fitting exactly, and
//   keeps the centre, cropping the longer side equally on both sides. Both
//   are one resampling pass from the source pixels.
//
// Raw tensors (raw_uint8 in 0..255, raw_float32 in [0,1]) are
// channels x height x width, row-major; `channels` 0 means 1, and a height or
// width of 0 means the model's. Their channel count must be the model's (no
// colour conversion: a raw tensor is taken as the model's colour space), and
// their length channels x height x width; a tensor of another height or width
// is resized by the same policy as an encoded image (as 1-channel tensors
// always were: a raw tensor is an image in another encoding, not a
// pre-processed input).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "hapi/v1/inference.pb.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

// Largest height or width of any image, encoded or raw.
inline constexpr int kMaxImageSide = 4096;

// Largest width x height of an encoded image, checked from its header before
// any pixel is decoded. An encoded image amplifies: a 130 KB PNG can declare
// 4096x4096 RGBA 16-bit, 128 MiB and about half a second of CPU to decode, all
// of it to be averaged down to a model's input (28x28 for the default one). 4 Mpx (2048x2048, or
// 4096x1024) keeps the worst accepted image near a tenth of that (at most 32 MiB for an interlaced
// RGBA 16-bit PNG or a progressive CMYK JPEG) while still taking a scan, a screenshot or a 2-3 Mpx
// photo as it is; larger photos are better downscaled by the client, which also saves the
// bandwidth. Raw tensors are not held to it: they do not amplify, their cost follows the bytes
// received, which gRPC's message limit bounds.
inline constexpr int64_t kMaxEncodedImagePixels = int64_t{2048} * 2048;

// `spec` must be valid (ValidateInputSpec). INVALID_ARGUMENT naming the
// problem: empty input, bytes that are neither PNG nor JPEG, truncated or
// corrupt PNG/JPEG data, a raw tensor with other than 1 or 3 channels or
// another channel count than the model's (naming both shapes), or whose length
// does not match its shape, NaN/inf or out-of-range floats, images with a side
// beyond kMaxImageSide, encoded images beyond kMaxEncodedImagePixels. Messages
// are printable ASCII: decoder messages can echo input bytes, which are
// escaped.
absl::StatusOr<std::vector<float>> DecodeImage(const v1::Image& image, const v1::InputSpec& spec);

// `channels` planes of width x height 8-bit samples (already decoded, in the
// model's channel count) as the model's input: each plane resized by the
// spec's policy, as DecodeImage does, then in [0,1]. For data sets that hold
// decoded images (model/labelled_images.cc).
absl::StatusOr<std::vector<float>> PlanesToInput(const uint8_t* planes, int channels, int width,
                                                 int height, const v1::InputSpec& spec);

// DecodeImage of an Image whose `encoded` is `bytes`, without copying them.
absl::StatusOr<std::vector<float>> DecodeEncodedImage(absl::string_view bytes,
                                                      const v1::InputSpec& spec);

}  // namespace hapi
