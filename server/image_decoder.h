// Turns a request's image into the network input: 28x28 grayscale floats in
// [0,1]. PNG/JPEG go through stb_image; other sizes are resized with
// stb_image_resize; colour becomes luma.
#pragma once

#include <vector>

#include "absl/status/statusor.h"
#include "hapi/v1/inference.pb.h"

namespace hapi {

inline constexpr int kMaxImageSide = 4096;

// INVALID_ARGUMENT naming the problem: empty input, undecodable bytes, a raw
// tensor whose length does not match its shape, NaN/inf or out-of-range
// floats, images larger than kMaxImageSide.
absl::StatusOr<std::vector<float>> DecodeImage(const v1::Image& image);

}  // namespace hapi
