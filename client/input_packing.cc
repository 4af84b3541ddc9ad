#include "client/input_packing.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/fashion_mnist.h"
#include "stb_image_write.h"

namespace hapi::client {

v1::InputSpec ServedInputSpec(const v1::ServingStatus& status) {
  v1::InputSpec spec = status.input();
  if (spec.channels() == 0 && spec.height() == 0 && spec.width() == 0) {
    spec.set_channels(1);
    spec.set_height(kImageSide);
    spec.set_width(kImageSide);
  }
  return spec;
}

int64_t RawSampleBytes(const v1::InputSpec& spec) {
  return int64_t{spec.channels()} * spec.height() * spec.width();
}

std::string DescribeInputSpec(const v1::InputSpec& spec) {
  return absl::StrCat(spec.channels(), "x", spec.height(), "x", spec.width(), " (",
                      v1::InputSpec::Resize_Name(spec.resize()), ")");
}

std::string ReplicateChannels(const uint8_t* plane, int64_t pixels, int channels) {
  std::string out;
  out.reserve(static_cast<size_t>(pixels) * channels);
  for (int c = 0; c < channels; ++c) out.append(reinterpret_cast<const char*>(plane), pixels);
  return out;
}

namespace {

void AppendBytes(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), size);
}

}  // namespace

absl::StatusOr<std::string> EncodeGrayPng(const uint8_t* pixels, int height, int width) {
  std::string png;
  if (height < 1 || width < 1 ||
      !stbi_write_png_to_func(AppendBytes, &png, width, height, 1, pixels, width)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot encode a ", height, "x", width, " grey image as PNG"));
  }
  return png;
}

absl::StatusOr<v1::Image> GrayImageFor(const uint8_t* pixels, int height, int width,
                                       const v1::InputSpec& spec) {
  if (spec.channels() != 1 && spec.channels() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("the server's model takes ", spec.channels(),
                     " channels; hapi-client can send grey images to 1- or 3-channel models"));
  }
  if (height < 1 || width < 1) {
    return absl::InvalidArgumentError(absl::StrCat("empty image (", height, "x", width, ")"));
  }
  v1::Image image;
  if (spec.height() == height && spec.width() == width) {
    image.set_raw_uint8(ReplicateChannels(pixels, int64_t{height} * width, spec.channels()));
    image.set_channels(spec.channels());
    image.set_height(height);
    image.set_width(width);
    return image;
  }
  absl::StatusOr<std::string> png = EncodeGrayPng(pixels, height, width);
  if (!png.ok()) return png.status();
  image.set_encoded(*std::move(png));
  return image;
}

v1::Image QuantizedImageFor(const float* chw, const v1::InputSpec& spec) {
  const int64_t n = RawSampleBytes(spec);
  std::string raw(static_cast<size_t>(n), '\0');
  for (int64_t i = 0; i < n; ++i) {
    const long v = std::lround(std::clamp(chw[i], 0.0f, 1.0f) * 255.0f);
    raw[i] = static_cast<char>(static_cast<uint8_t>(v));
  }
  v1::Image image;
  image.set_raw_uint8(std::move(raw));
  image.set_channels(spec.channels());
  image.set_height(spec.height());
  image.set_width(spec.width());
  return image;
}

}  // namespace hapi::client
