// DecodeImage on encoded bytes: the input is the `encoded` field of an
// hapi.v1.Image, told apart as PNG or JPEG by its signature and decoded with
// libpng or libjpeg-turbo under the project's limits, then resized to 28x28.
//
// Checks: every input is either refused with INVALID_ARGUMENT and a printable
// message, or decoded to 28x28 floats in [0, 1].
#include <cstddef>
#include <cstdint>
#include <string>

#include "hapi/v1/inference.pb.h"
#include "server/image_decoder.h"
#include "tests/fuzz/fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  hapi::v1::Image image;
  image.set_encoded(std::string(reinterpret_cast<const char*>(data), size));
  absl::StatusOr<std::vector<float>> pixels = hapi::DecodeImage(image);
  if (!pixels.ok()) {
    hapi::fuzz::CheckPrintableRefusal(pixels.status(), absl::StatusCode::kInvalidArgument);
    return 0;
  }
  HAPI_FUZZ_CHECK(pixels->size() == 28 * 28);
  for (float v : *pixels) HAPI_FUZZ_CHECK(v >= 0 && v <= 1);
  return 0;
}
