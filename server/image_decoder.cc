#include "server/image_decoder.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "stb_image.h"
#include "stb_image_resize.h"

namespace hapi {
namespace {

constexpr int kSide = 28;

absl::StatusOr<std::vector<float>> FromGray(const uint8_t* pixels, int width, int height) {
  std::vector<uint8_t> resized;
  if (width != kSide || height != kSide) {
    resized.resize(kSide * kSide);
    if (!stbir_resize_uint8(pixels, width, height, 0, resized.data(), kSide, kSide, 0, 1)) {
      return absl::InvalidArgumentError("cannot resize the image to 28x28");
    }
    pixels = resized.data();
  }
  std::vector<float> out(kSide * kSide);
  for (int i = 0; i < kSide * kSide; ++i) out[i] = pixels[i] / 255.0f;
  return out;
}

absl::Status CheckShape(int height, int width) {
  if (height <= 0 || width <= 0 || height > kMaxImageSide || width > kMaxImageSide) {
    return absl::InvalidArgumentError(absl::StrCat("image shape ", height, "x", width,
                                                   " must be within 1..", kMaxImageSide));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<float>> DecodeImage(const v1::Image& image) {
  const int height = image.height() == 0 ? kSide : image.height();
  const int width = image.width() == 0 ? kSide : image.width();
  switch (image.data_case()) {
    case v1::Image::kEncoded: {
      const std::string& bytes = image.encoded();
      if (bytes.empty()) return absl::InvalidArgumentError("empty image bytes");
      int w = 0, h = 0, channels = 0;
      const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
      const int len = static_cast<int>(bytes.size());
      if (!stbi_info_from_memory(data, len, &w, &h, &channels)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "cannot decode image (", bytes.size(), " bytes): ", stbi_failure_reason(),
            "; send PNG or JPEG bytes, or a raw tensor"));
      }
      if (absl::Status st = CheckShape(h, w); !st.ok()) return st;
      stbi_uc* gray = stbi_load_from_memory(data, len, &w, &h, &channels, /*desired=*/1);
      if (gray == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot decode image: ", stbi_failure_reason()));
      }
      absl::StatusOr<std::vector<float>> out = FromGray(gray, w, h);
      stbi_image_free(gray);
      return out;
    }
    case v1::Image::kRawUint8: {
      if (absl::Status st = CheckShape(height, width); !st.ok()) return st;
      const std::string& raw = image.raw_uint8();
      if (raw.empty()) return absl::InvalidArgumentError("empty raw_uint8 tensor");
      if (raw.size() != static_cast<size_t>(height) * width) {
        return absl::InvalidArgumentError(absl::StrCat("raw_uint8 has ", raw.size(),
                                                       " bytes, expected ", height, "x", width,
                                                       " = ", height * width));
      }
      return FromGray(reinterpret_cast<const uint8_t*>(raw.data()), width, height);
    }
    case v1::Image::kRawFloat32: {
      if (absl::Status st = CheckShape(height, width); !st.ok()) return st;
      const std::string& raw = image.raw_float32();
      if (raw.empty()) return absl::InvalidArgumentError("empty raw_float32 tensor");
      const size_t n = static_cast<size_t>(height) * width;
      if (raw.size() != n * 4) {
        return absl::InvalidArgumentError(absl::StrCat("raw_float32 has ", raw.size(),
                                                       " bytes, expected 4 x ", height, "x",
                                                       width, " = ", n * 4));
      }
      std::vector<float> values(n);
      std::memcpy(values.data(), raw.data(), n * 4);
      for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(values[i]) || values[i] < 0.0f || values[i] > 1.0f) {
          return absl::InvalidArgumentError(absl::StrCat(
              "raw_float32 value ", values[i], " at index ", i, " is not a number in [0, 1]"));
        }
      }
      if (height == kSide && width == kSide) return values;
      std::vector<float> out(kSide * kSide);
      if (!stbir_resize_float(values.data(), width, height, 0, out.data(), kSide, kSide, 0, 1)) {
        return absl::InvalidArgumentError("cannot resize the image to 28x28");
      }
      for (float& v : out) v = std::fmin(1.0f, std::fmax(0.0f, v));
      return out;
    }
    case v1::Image::DATA_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("request has no image (set encoded, raw_uint8 or raw_float32)");
}

}  // namespace hapi
