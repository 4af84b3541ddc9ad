#include "client/image_shift.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace hapi::client {
namespace {

constexpr double kPi = 3.14159265358979323846;

// SplitMix64 (Steele, Lea, Flood 2014): a tiny generator whose stream is the
// same on every platform, unlike std::normal_distribution's.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1]: 53 random bits, never 0 (Box-Muller takes its log).
  double Uniform() { return (static_cast<double>(Next() >> 11) + 1.0) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

// Standard normal deviates, two per Box-Muller draw.
class GaussianStream {
 public:
  GaussianStream(uint64_t seed, int64_t index)
      : random_(SplitMix64(seed ^ (static_cast<uint64_t>(index) * 0xd1b54a32d192ed03ULL)).Next()) {}
  double Next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double radius = std::sqrt(-2.0 * std::log(random_.Uniform()));
    const double angle = 2.0 * kPi * random_.Uniform();
    spare_ = radius * std::sin(angle);
    has_spare_ = true;
    return radius * std::cos(angle);
  }

 private:
  SplitMix64 random_;
  double spare_ = 0;
  bool has_spare_ = false;
};

float Clamp01(double v) { return static_cast<float>(std::clamp(v, 0.0, 1.0)); }

void AddNoise(double sigma, uint64_t seed, int64_t index, int64_t size, float* pixels) {
  if (sigma == 0) return;
  GaussianStream gaussian(seed, index);
  for (int64_t i = 0; i < size; ++i) pixels[i] = Clamp01(pixels[i] + sigma * gaussian.Next());
}

void LowerContrast(double factor, int64_t plane, int channels, float* pixels) {
  for (int c = 0; c < channels; ++c) {
    float* p = pixels + c * plane;
    double sum = 0;
    for (int64_t i = 0; i < plane; ++i) sum += p[i];
    const double mean = sum / plane;
    for (int64_t i = 0; i < plane; ++i) p[i] = Clamp01(mean + factor * (p[i] - mean));
  }
}

// Normalised weights of taps -r..r.
std::vector<double> BlurWeights(const ImageShift& shift) {
  const double radius = shift.level;
  if (shift.blur == BlurKernel::kBox) {
    const int r = static_cast<int>(radius);
    return std::vector<double>(2 * r + 1, 1.0 / (2 * r + 1));
  }
  const int r = static_cast<int>(std::ceil(3 * radius));
  std::vector<double> weights(2 * r + 1);
  double sum = 0;
  for (int k = -r; k <= r; ++k) {
    weights[k + r] = std::exp(-0.5 * k * k / (radius * radius));
    sum += weights[k + r];
  }
  for (double& w : weights) w /= sum;
  return weights;
}

// Separable: rows, then columns; the border extended by its edge pixels, so
// that the weights always sum to 1 (a flat image stays flat).
void Blur(const ImageShift& shift, int channels, int height, int width, float* pixels) {
  if (shift.level == 0) return;
  const std::vector<double> weights = BlurWeights(shift);
  const int r = static_cast<int>(weights.size() / 2);
  std::vector<double> rows(static_cast<size_t>(height) * width);
  for (int c = 0; c < channels; ++c) {
    float* p = pixels + static_cast<int64_t>(c) * height * width;
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        double v = 0;
        for (int k = -r; k <= r; ++k) {
          v += weights[k + r] * p[y * width + std::clamp(x + k, 0, width - 1)];
        }
        rows[y * width + x] = v;
      }
    }
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        double v = 0;
        for (int k = -r; k <= r; ++k) {
          v += weights[k + r] * rows[std::clamp(y + k, 0, height - 1) * width + x];
        }
        p[y * width + x] = Clamp01(v);
      }
    }
  }
}

// Sampling coordinates within this of a whole pixel are that pixel: a
// rotation by a multiple of 90 degrees moves whole pixels, exactly.
constexpr double kSnap = 1e-9;

double Snapped(double v) {
  const double nearest = std::round(v);
  return std::abs(v - nearest) < kSnap ? nearest : v;
}

// Every output pixel samples the source at its own position rotated back
// about the centre ((width-1)/2, (height-1)/2). With rows going down, a
// counter-clockwise turn by `degrees` on screen takes the output's offset
// (dx, dy) back to the source's (dx cos - dy sin, dx sin + dy cos).
void Rotate(double degrees, int channels, int height, int width, float* pixels) {
  if (degrees == 0) return;
  const double angle = degrees * kPi / 180;
  const double cos_a = std::cos(angle), sin_a = std::sin(angle);
  const double cx = (width - 1) / 2.0, cy = (height - 1) / 2.0;
  const int64_t plane = int64_t{height} * width;
  std::vector<float> source(pixels, pixels + plane * channels);
  for (int c = 0; c < channels; ++c) {
    const float* in = source.data() + c * plane;
    auto at = [&](int x, int y) -> double {
      return x < 0 || y < 0 || x >= width || y >= height ? 0.0 : in[y * width + x];
    };
    for (int y = 0; y < height; ++y) {
      for (int x = 0; x < width; ++x) {
        const double dx = x - cx, dy = y - cy;
        const double sx = Snapped(cx + dx * cos_a - dy * sin_a);
        const double sy = Snapped(cy + dx * sin_a + dy * cos_a);
        const int x0 = static_cast<int>(std::floor(sx)), y0 = static_cast<int>(std::floor(sy));
        const double fx = sx - x0, fy = sy - y0;
        const double v = (1 - fy) * ((1 - fx) * at(x0, y0) + fx * at(x0 + 1, y0)) +
                         fy * ((1 - fx) * at(x0, y0 + 1) + fx * at(x0 + 1, y0 + 1));
        pixels[c * plane + y * width + x] = Clamp01(v);
      }
    }
  }
}

absl::Status ValidateShape(int channels, int height, int width, const void* pixels) {
  if (channels < 1 || height < 1 || width < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot shift an image of ", channels, "x", height, "x", width, " pixels"));
  }
  if (pixels == nullptr) return absl::InvalidArgumentError("cannot shift an image without pixels");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ShiftKind> ParseShiftKind(absl::string_view name) {
  for (ShiftKind kind : {ShiftKind::kNone, ShiftKind::kNoise, ShiftKind::kContrast,
                         ShiftKind::kBlur, ShiftKind::kRotate}) {
    if (name == ShiftKindName(kind)) return kind;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown shift '", name, "': expected none, noise, contrast, blur or rotate"));
}

absl::string_view ShiftKindName(ShiftKind kind) {
  switch (kind) {
    case ShiftKind::kNone:
      return "none";
    case ShiftKind::kNoise:
      return "noise";
    case ShiftKind::kContrast:
      return "contrast";
    case ShiftKind::kBlur:
      return "blur";
    case ShiftKind::kRotate:
      return "rotate";
  }
  return "?";
}

absl::StatusOr<BlurKernel> ParseBlurKernel(absl::string_view name) {
  if (name == "gaussian") return BlurKernel::kGaussian;
  if (name == "box") return BlurKernel::kBox;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown blur kernel '", name, "': expected gaussian or box"));
}

absl::Status ValidateShift(const ImageShift& shift) {
  const double level = shift.level;
  const auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(ShiftKindName(shift.kind), ": ", what,
                                                   " (level ", absl::StrFormat("%g", level), ")"));
  };
  switch (shift.kind) {
    case ShiftKind::kNone:
      return absl::OkStatus();
    case ShiftKind::kNoise:
      if (!(level >= 0 && level <= 1)) return bad("sigma must be in [0, 1] of the full scale");
      return absl::OkStatus();
    case ShiftKind::kContrast:
      if (!(level >= 0 && level <= 1)) return bad("the contrast factor must be in [0, 1]");
      return absl::OkStatus();
    case ShiftKind::kBlur:
      if (!(level >= 0 && level <= kMaxBlurRadius)) {
        return bad(absl::StrCat("the radius must be in [0, ", kMaxBlurRadius, "] pixels"));
      }
      if (shift.blur == BlurKernel::kBox && level != std::floor(level)) {
        return bad("a box blur's radius must be a whole number of pixels");
      }
      return absl::OkStatus();
    case ShiftKind::kRotate:
      if (!(level >= -180 && level <= 180)) return bad("degrees must be in [-180, 180]");
      return absl::OkStatus();
  }
  return absl::InvalidArgumentError("unknown shift kind");
}

std::string DescribeShift(const ImageShift& shift) {
  switch (shift.kind) {
    case ShiftKind::kNone:
      return "none";
    case ShiftKind::kNoise:
      return absl::StrFormat("noise sigma %g (seed %d)", shift.level, shift.seed);
    case ShiftKind::kContrast:
      return absl::StrFormat("contrast factor %g", shift.level);
    case ShiftKind::kBlur:
      return absl::StrFormat("blur %s radius %g",
                             shift.blur == BlurKernel::kBox ? "box" : "gaussian", shift.level);
    case ShiftKind::kRotate:
      return absl::StrFormat("rotate %g degrees", shift.level);
  }
  return "?";
}

absl::Status ApplyShift(const ImageShift& shift, int channels, int height, int width, int64_t index,
                        float* pixels) {
  if (absl::Status s = ValidateShift(shift); !s.ok()) return s;
  if (absl::Status s = ValidateShape(channels, height, width, pixels); !s.ok()) return s;
  const int64_t plane = int64_t{height} * width;
  switch (shift.kind) {
    case ShiftKind::kNone:
      break;
    case ShiftKind::kNoise:
      AddNoise(shift.level, shift.seed, index, plane * channels, pixels);
      break;
    case ShiftKind::kContrast:
      LowerContrast(shift.level, plane, channels, pixels);
      break;
    case ShiftKind::kBlur:
      Blur(shift, channels, height, width, pixels);
      break;
    case ShiftKind::kRotate:
      Rotate(shift.level, channels, height, width, pixels);
      break;
  }
  return absl::OkStatus();
}

absl::Status ApplyShift(const ImageShift& shift, int channels, int height, int width, int64_t index,
                        uint8_t* pixels) {
  if (absl::Status s = ValidateShift(shift); !s.ok()) return s;
  if (absl::Status s = ValidateShape(channels, height, width, pixels); !s.ok()) return s;
  if (shift.kind == ShiftKind::kNone) return absl::OkStatus();
  const int64_t size = int64_t{channels} * height * width;
  std::vector<float> scaled(pixels, pixels + size);
  for (float& v : scaled) v /= 255.0f;
  if (absl::Status s = ApplyShift(shift, channels, height, width, index, scaled.data()); !s.ok()) {
    return s;
  }
  for (int64_t i = 0; i < size; ++i) {
    pixels[i] = static_cast<uint8_t>(std::lround(std::clamp(scaled[i], 0.0f, 1.0f) * 255.0f));
  }
  return absl::OkStatus();
}

}  // namespace hapi::client
