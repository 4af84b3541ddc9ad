// DecodeImage on encoded bytes: the input is the `encoded` field of an
// hapi.v1.Image, told apart as PNG or JPEG by its signature and decoded with
// libpng or libjpeg-turbo under the project's limits, then made the input of
// two models: 1x28x28 grayscale resized (the default model's), and 3x32x32
// RGB resized and centre-cropped.
//
// Checks: for each model, every input is either refused with INVALID_ARGUMENT
// and a printable message, or decoded to exactly the model's input size of
// floats in [0, 1]. (The two may differ on an input: libjpeg skips the chroma
// components of a luma-only output, so a JPEG whose chroma it cannot upsample
// decodes for the grayscale model only.)
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/image_decoder.h"
#include "core/input_spec.h"
#include "hapi/v1/inference.pb.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

const hapi::v1::InputSpec& GraySpec() {
  static const hapi::v1::InputSpec spec = hapi::MakeInputSpec(1, 28, 28, 0.0f, 1.0f);
  return spec;
}

const hapi::v1::InputSpec& RgbSpec() {
  static const hapi::v1::InputSpec spec = [] {
    hapi::v1::InputSpec s = hapi::MakeInputSpec(3, 32, 32, 0.5f, 0.25f);
    s.set_resize(hapi::v1::InputSpec::RESIZE_CENTER_CROP);
    return s;
  }();
  return spec;
}

void DecodeChecked(const hapi::v1::Image& image, const hapi::v1::InputSpec& spec) {
  absl::StatusOr<std::vector<float>> pixels = hapi::DecodeImage(image, spec);
  if (!pixels.ok()) {
    hapi::fuzz::CheckPrintableRefusal(pixels.status(), absl::StatusCode::kInvalidArgument);
    return;
  }
  HAPI_FUZZ_CHECK(pixels->size() == static_cast<size_t>(hapi::InputSize(spec)));
  for (float v : *pixels) HAPI_FUZZ_CHECK(v >= 0 && v <= 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  hapi::v1::Image image;
  image.set_encoded(std::string(reinterpret_cast<const char*>(data), size));
  DecodeChecked(image, GraySpec());
  DecodeChecked(image, RgbSpec());
  return 0;
}
