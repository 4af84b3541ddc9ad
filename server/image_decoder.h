// Turns a request's image into the network input: 28x28 grayscale floats in
// [0,1]. Encoded images are PNG (libpng) or JPEG (libjpeg-turbo), both fuzzed
// upstream, told apart by their signature; nothing else is decoded. Colour
// becomes luma; other sizes are resized with stb_image_resize.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "hapi/v1/inference.pb.h"

namespace hapi {

// Largest height or width of any image, encoded or raw.
inline constexpr int kMaxImageSide = 4096;

// Largest width x height of an encoded image, checked from its header before
// any pixel is decoded. An encoded image amplifies: a 130 KB PNG can declare
// 4096x4096 RGBA 16-bit, 128 MiB and about half a second of CPU to decode, all
// of it to be averaged down to 28x28. 4 Mpx (2048x2048, or 4096x1024) keeps
// the worst accepted image near a tenth of that (at most 32 MiB for an
// interlaced RGBA 16-bit PNG or a progressive CMYK JPEG) while still taking a
// scan, a screenshot or a 2-3 Mpx photo as it is; larger photos are better
// downscaled by the client, which also saves the bandwidth. Raw tensors are
// not held to it: they do not amplify, their cost follows the bytes received,
// which gRPC's message limit bounds.
inline constexpr int64_t kMaxEncodedImagePixels = int64_t{2048} * 2048;

// INVALID_ARGUMENT naming the problem: empty input, bytes that are neither PNG
// nor JPEG, truncated or corrupt PNG/JPEG data, a raw tensor whose length does
// not match its shape, NaN/inf or out-of-range floats, images with a side
// beyond kMaxImageSide, encoded images beyond kMaxEncodedImagePixels. Messages
// are printable ASCII: decoder messages can echo input bytes, which are
// escaped.
absl::StatusOr<std::vector<float>> DecodeImage(const v1::Image& image);

}  // namespace hapi
