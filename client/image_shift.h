// Deterministic distribution shifts for benchmarks: what a served model meets
// when its inputs stop looking like its validation data (sensor noise, a
// washed-out exposure, defocus, a tilted camera). hapi-client bench applies one
// to the test images before it sends them (--shift), so that the server's live
// accuracy monitor and drift detector can be watched reacting
// (bench/shift_scenario.sh, docs/live-monitor.md).
//
// Images are CHW, float in [0, 1] or uint8 in [0, 255]; uint8 images are
// shifted in [0, 1] and rounded back to the nearest level. Every result is
// clamped to the range. A shift of an image depends only on the shift, the
// image and its index: the same arguments give the same bytes in any order, on
// any thread.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hapi::client {

enum class ShiftKind { kNone, kNoise, kContrast, kBlur, kRotate };
enum class BlurKernel { kGaussian, kBox };

struct ImageShift {
  ShiftKind kind = ShiftKind::kNone;
  // What `kind` takes:
  // - noise: the standard deviation of zero-mean gaussian noise added to every
  //   pixel, in units of the full scale (0.1 is 25.5 levels of a uint8
  //   image), >= 0;
  // - contrast: the factor, in [0, 1], by which every pixel's deviation from
  //   its channel's mean is multiplied (1: unchanged, 0: flat);
  // - blur: the radius in pixels, >= 0: the gaussian's sigma (the kernel is cut
  //   at 3 sigma) or, for the box kernel, a whole number r (a (2r+1)^2 mean);
  //   the border is extended by its edge pixels;
  // - rotate: degrees, counter-clockwise as the image is displayed (rows going
  //   down), about the image's centre, in [-180, 180]; bilinear, and what comes
  //   from outside the image is 0 (Fashion-MNIST's black background).
  // A level of 0 (1 for contrast) leaves the image as it is.
  double level = 0;
  BlurKernel blur = BlurKernel::kGaussian;  // blur only
  uint64_t seed = 1;                        // noise only: with the image's index, its noise
};

// The largest blur radius: beyond it the image is a flat mean anyway.
inline constexpr double kMaxBlurRadius = 64;

// "none", "noise", "contrast", "blur", "rotate".
absl::StatusOr<ShiftKind> ParseShiftKind(absl::string_view name);
absl::string_view ShiftKindName(ShiftKind kind);
// "gaussian", "box".
absl::StatusOr<BlurKernel> ParseBlurKernel(absl::string_view name);

// INVALID_ARGUMENT naming the parameter when `shift.level` is not one its
// kind takes (see ImageShift), e.g. a negative sigma or a contrast factor of 2.
absl::Status ValidateShift(const ImageShift& shift);

// One line: "noise sigma 0.1 (seed 1)", "blur gaussian radius 2", "none".
std::string DescribeShift(const ImageShift& shift);

// Shifts the channels x height x width image `pixels` (image number `index`
// of a set: it picks the noise) in place. INVALID_ARGUMENT for a bad shift
// (ValidateShift), a shape without pixels or null pixels.
absl::Status ApplyShift(const ImageShift& shift, int channels, int height, int width, int64_t index,
                        float* pixels);
absl::Status ApplyShift(const ImageShift& shift, int channels, int height, int width, int64_t index,
                        uint8_t* pixels);

}  // namespace hapi::client
