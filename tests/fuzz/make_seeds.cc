// Writes the fuzz targets' seed corpora: small valid inputs of every kind a
// target takes (and a few near misses), built with the same libraries and
// project code that produce the real ones. scripts/fuzz.sh seeds runs it;
// its output is committed under tests/fuzz/corpus/<target>/.
//
// Usage: fuzz_seeds <corpus dir>

// jpeglib.h needs FILE and size_t declared before it.
#include <cstddef>
#include <cstdio>
// Then the codecs.
#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/calibration_table.h"
#include "core/device_profile.h"
#include "google/protobuf/text_format.h"
#include "hapi/v1/inference.pb.h"
#include "hapi/v1/optimizer.pb.h"
#include "tests/fuzz/fuzz_fixtures.h"

namespace hapi {
namespace {

std::string g_root;

void Write(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = absl::StrCat(g_root, "/", target);
  std::filesystem::create_directories(dir);
  std::ofstream(absl::StrCat(dir, "/", name), std::ios::binary) << bytes;
}

// A smooth pattern, so that the encoders have something to compress.
uint8_t Pattern(int x, int y, int c) {
  return static_cast<uint8_t>((x * 37 + y * 11 + c * 80) & 0xff);
}

// --- PNG -----------------------------------------------------------------------

void PngAppend(png_structp png, png_bytep data, size_t size) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<char*>(data), size);
}

// color_type as libpng names it; bit depth 8 or 16 (or 1/2/4 for grey and
// palette); palette images get a 16-entry palette and a tRNS chunk.
std::string Png(int width, int height, int color_type, int bit_depth, bool interlaced) {
  std::string out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) std::abort();
  png_set_write_fn(png, &out, PngAppend, nullptr);
  png_set_IHDR(png, info, width, height, bit_depth, color_type,
               interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_color palette[16];
    png_byte alpha[16];
    for (int i = 0; i < 16; ++i) {
      palette[i] = {static_cast<png_byte>(i * 16), static_cast<png_byte>(255 - i * 16),
                    static_cast<png_byte>(i * 7)};
      alpha[i] = static_cast<png_byte>(255 - i * 8);
    }
    png_set_PLTE(png, info, palette, 16);
    png_set_tRNS(png, info, alpha, 16, nullptr);
  }
  png_write_info(png, info);
  const int channels = png_get_channels(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  std::vector<std::vector<png_byte>> rows(height, std::vector<png_byte>(row_bytes));
  for (int y = 0; y < height; ++y) {
    if (bit_depth < 8) {
      for (size_t i = 0; i < row_bytes; ++i) rows[y][i] = Pattern(static_cast<int>(i), y, 0);
      continue;
    }
    const int bytes = bit_depth / 8;
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < channels; ++c) {
        for (int b = 0; b < bytes; ++b) {
          rows[y][(x * channels + c) * bytes + b] = Pattern(x, y, c) ^ static_cast<uint8_t>(b);
        }
      }
    }
  }
  std::vector<png_bytep> pointers;
  for (auto& r : rows) pointers.push_back(r.data());
  png_write_image(png, pointers.data());
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return out;
}

// --- JPEG ----------------------------------------------------------------------

// `in` is what the samples are (GRAYSCALE, RGB or CMYK); `stored` what the
// file holds (JCS_UNKNOWN: libjpeg's default for `in`).
std::string Jpeg(int width, int height, J_COLOR_SPACE in, int components, J_COLOR_SPACE stored,
                 bool progressive, int quality = 75) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr error;
  cinfo.err = jpeg_std_error(&error);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = width;
  cinfo.image_height = height;
  cinfo.input_components = components;
  cinfo.in_color_space = in;
  jpeg_set_defaults(&cinfo);
  if (stored != JCS_UNKNOWN) jpeg_set_colorspace(&cinfo, stored);
  jpeg_set_quality(&cinfo, quality, TRUE);
  if (progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  std::vector<JSAMPLE> row(static_cast<size_t>(width) * components);
  while (cinfo.next_scanline < cinfo.image_height) {
    const int y = static_cast<int>(cinfo.next_scanline);
    for (int x = 0; x < width; ++x) {
      for (int c = 0; c < components; ++c) row[x * components + c] = Pattern(x, y, c);
    }
    JSAMPROW p = row.data();
    jpeg_write_scanlines(&cinfo, &p, 1);
  }
  jpeg_finish_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buffer), size);
  jpeg_destroy_compress(&cinfo);
  std::free(buffer);
  return out;
}

// --- Targets -------------------------------------------------------------------

void ImageDecoder() {
  const char* t = "fuzz_image_decoder";
  Write(t, "gray8-28x28.png", Png(28, 28, PNG_COLOR_TYPE_GRAY, 8, false));
  Write(t, "rgb8-40x30-interlaced.png", Png(40, 30, PNG_COLOR_TYPE_RGB, 8, true));
  Write(t, "palette4-16x16-trns.png", Png(16, 16, PNG_COLOR_TYPE_PALETTE, 4, false));
  Write(t, "gray16-12x9.png", Png(12, 9, PNG_COLOR_TYPE_GRAY, 16, false));
  Write(t, "rgba16-7x5-interlaced.png", Png(7, 5, PNG_COLOR_TYPE_RGBA, 16, true));
  Write(t, "gray1-9x3.png", Png(9, 3, PNG_COLOR_TYPE_GRAY, 1, false));
  Write(t, "gray-28x28.jpg", Jpeg(28, 28, JCS_GRAYSCALE, 1, JCS_UNKNOWN, false));
  Write(t, "rgb-32x24.jpg", Jpeg(32, 24, JCS_RGB, 3, JCS_UNKNOWN, false));
  Write(t, "rgb-20x20-progressive.jpg", Jpeg(20, 20, JCS_RGB, 3, JCS_UNKNOWN, true));
  Write(t, "cmyk-16x8.jpg", Jpeg(16, 8, JCS_CMYK, 4, JCS_UNKNOWN, false));
  Write(t, "ycck-8x8.jpg", Jpeg(8, 8, JCS_CMYK, 4, JCS_YCCK, false));
  std::string cut = Png(28, 28, PNG_COLOR_TYPE_GRAY, 8, false);
  Write(t, "truncated.png", cut.substr(0, cut.size() / 2));
}

std::string Request(const v1::Image& image, const std::string& id = "") {
  v1::ClassifyRequest r;
  *r.mutable_image() = image;
  r.set_request_id(id);
  return r.SerializeAsString();
}

void ClassifyRequest() {
  const char* t = "fuzz_classify_request";
  v1::Image image;
  image.set_encoded(Png(28, 28, PNG_COLOR_TYPE_GRAY, 8, false));
  Write(t, "encoded-png", Request(image, "r-1"));
  image.set_encoded(Jpeg(30, 26, JCS_RGB, 3, JCS_UNKNOWN, false, 50));
  Write(t, "encoded-jpeg", Request(image));
  image.Clear();
  std::string pixels;
  for (int i = 0; i < 28 * 28; ++i) pixels.push_back(static_cast<char>(Pattern(i % 28, i / 28, 0)));
  image.set_raw_uint8(pixels);
  Write(t, "raw-uint8-28x28", Request(image, "r-2"));
  image.set_raw_uint8(pixels.substr(0, 10 * 14));
  image.set_height(10);
  image.set_width(14);
  Write(t, "raw-uint8-10x14", Request(image));
  image.Clear();
  std::string floats;
  for (int i = 0; i < 28 * 28; ++i) {
    const float v = (i % 29) / 28.0f;
    floats.append(reinterpret_cast<const char*>(&v), 4);  // little-endian hosts only
  }
  image.set_raw_float32(floats);
  Write(t, "raw-float32-28x28", Request(image));
  image.set_raw_float32(floats.substr(0, 4 * 4 * 4));
  image.set_height(4);
  image.set_width(4);
  Write(t, "raw-float32-4x4", Request(image, "small"));
  image.Clear();
  // Three channels: the RGB model's input as it is, and a small float tensor.
  std::string rgb;
  for (int i = 0; i < 3 * 32 * 32; ++i) {
    rgb.push_back(static_cast<char>(Pattern(i % 32, i / 32 % 32, i / 1024)));
  }
  image.set_raw_uint8(rgb);
  image.set_channels(3);
  image.set_height(32);
  image.set_width(32);
  Write(t, "raw-uint8-3x32x32", Request(image, "rgb"));
  image.set_raw_float32(floats.substr(0, 3 * 4 * 5 * 4));
  image.set_height(4);
  image.set_width(5);
  Write(t, "raw-float32-3x4x5", Request(image));
  image.Clear();
  image.set_raw_uint8(pixels.substr(0, 100));
  Write(t, "raw-uint8-wrong-length", Request(image));
  Write(t, "empty", Request(v1::Image()));
}

std::string Idx(uint32_t magic, std::vector<uint32_t> dims, const std::string& data) {
  std::string out;
  dims.insert(dims.begin(), magic);
  for (uint32_t v : dims) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>(v >> s));
  }
  return out + data;
}

// The fuzz target's layout: flags, fallback label count, images part length.
std::string IdxInput(uint8_t flags, uint8_t fallback, const std::string& images,
                     const std::string& labels) {
  std::string out = {static_cast<char>(flags), static_cast<char>(fallback),
                     static_cast<char>(images.size() >> 8), static_cast<char>(images.size())};
  return out + images + labels;
}

void IdxLoader() {
  const char* t = "fuzz_idx_loader";
  std::string pixels;
  for (int i = 0; i < 2 * 784; ++i) pixels.push_back(static_cast<char>(Pattern(i % 28, i / 28, 0)));
  const std::string images = Idx(2051, {2, 28, 28}, pixels);
  const std::string labels = Idx(2049, {2}, std::string("\x03\x09", 2));
  Write(t, "plain-2", IdxInput(0, 0, images, labels));
  Write(t, "gzip-2", IdxInput(1, 0, images, labels));
  Write(t, "gzip-truncated", IdxInput(3, 5, images, labels));
  Write(t, "one-image-gzip",
        IdxInput(1, 0, Idx(2051, {1, 28, 28}, pixels.substr(0, 784)),
                 Idx(2049, {1}, std::string(1, '\x07'))));
  Write(t, "empty-sets", IdxInput(0, 0, Idx(2051, {0, 28, 28}, ""), Idx(2049, {0}, "")));
  Write(t, "bad-label", IdxInput(0, 0, images, Idx(2049, {2}, std::string("\x01\x0a", 2))));
  Write(t, "labels-only",
        IdxInput(0, 3, Idx(2051, {3, 27, 28}, ""), Idx(2049, {3}, std::string("\x00\x01\x02", 3))));
}

// `table` in the earlier HAPICAL1 format (u8 labels and predictions), which
// Parse still reads: HAPICAL2's bytes with each u16 cut to its low byte.
std::string Hapical1(const CalibrationTable& table) {
  const std::string v2 = table.Serialize();
  const size_t labels = static_cast<size_t>(table.num_samples()) * (1 + table.num_exits());
  std::string out = "HAPICAL1" + v2.substr(8, 12);
  for (size_t i = 0; i < labels; ++i) out.push_back(v2[20 + 2 * i]);
  out += v2.substr(20 + 2 * labels, v2.size() - 24 - 2 * labels);
  const uint32_t crc =
      static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(out.data()), out.size()));
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(crc >> (8 * i)));
  return out;
}

void CalibrationTableSeeds() {
  const char* t = "fuzz_calibration_table";
  auto seed = [&](const std::string& name, uint8_t flags, int stages, int classes, int samples) {
    const CalibrationTable table =
        fuzz::SyntheticTable(fuzz::FakeManifest(stages, classes), samples);
    Write(t, name, std::string(1, static_cast<char>(flags)) + table.Serialize());
    if (classes <= 255) {
      Write(t, "v1-" + name, std::string(1, static_cast<char>(flags)) + Hapical1(table));
    }
  };
  seed("fake-6x10-16", 1, 6, 10, 16);
  seed("fake-6x10-16-entropy-crc-kept", 2, 6, 10, 16);
  seed("fake-3x2-40-margin", 5, 3, 2, 40);
  seed("fake-1x4-8", 1, 1, 4, 8);
  seed("fake-12x3-5", 1, 12, 3, 5);
  seed("fake-3x1000-8", 1, 3, 1000, 8);
  Write(t, "header-only", std::string("\x01HAPICAL2", 9) + std::string(16, '\0'));
  Write(t, "v1-header-only", std::string("\x01HAPICAL1", 9) + std::string(16, '\0'));
}

std::string Text(uint8_t selector, const google::protobuf::Message& m) {
  std::string text;
  google::protobuf::TextFormat::PrintToString(m, &text);
  return std::string(1, static_cast<char>(selector)) + text;
}

void TextProtos() {
  const char* t = "fuzz_text_protos";
  const v1::ModelManifest manifest = fuzz::FakeManifest();
  // 0: device profiles of the fixed model.
  v1::DeviceProfile analytic = *MakeAnalyticProfile("edge-1", manifest, 2e9, 1e-6, {1, 8});
  Write(t, "profile-analytic", Text(0, analytic));
  v1::DeviceProfile measured = analytic;
  measured.set_name("this-machine");
  measured.mutable_measured()->set_hostname("host");
  measured.mutable_measured()->set_iterations(200);
  measured.mutable_measured()->set_warmup_iterations(20);
  Write(t, "profile-measured", Text(4, measured));
  Write(t, "profile-scaled", Text(8, *MakeScaledProfile("slow-2", analytic, 2.0)));
  v1::DeviceProfile no_batch1 = analytic;
  no_batch1.mutable_batches()->DeleteSubrange(0, 1);
  Write(t, "profile-no-batch-1", Text(0, no_batch1));
  // 1: model manifests.
  Write(t, "manifest-fake-6x10", Text(1, manifest));
  Write(t, "manifest-fake-3x2", Text(5, fuzz::FakeManifest(3, 2)));
  v1::ModelManifest skewed = manifest;
  skewed.mutable_exits(2)->set_after_stage(3);
  Write(t, "manifest-exit-misplaced", Text(1, skewed));
  // 2: CreateVariant requests.
  v1::CreateVariantRequest request;
  request.set_model("fake");
  request.set_device("edge-1");
  request.mutable_sla()->set_latency_budget_ms(0.02);
  request.mutable_sla()->set_statistic(v1::MEAN);
  Write(t, "create-hapi-max-accuracy", Text(2, request));
  request.mutable_sla()->set_objective(v1::MIN_LATENCY);
  request.mutable_sla()->set_latency_budget_ms(0);
  request.mutable_sla()->set_use_accuracy_drop(true);
  request.mutable_sla()->set_max_accuracy_drop(0.005);
  request.set_algorithm("exhaustive");
  request.set_per_exit_thresholds(true);
  request.set_exit_policy("entropy");
  request.set_variant_id("fake-edge-min");
  Write(t, "create-exhaustive-min-latency", Text(6, request));
  request.Clear();
  request.set_model("fake");
  request.set_device("edge-1");
  request.mutable_sla()->set_latency_budget_ms(0.03);
  request.mutable_sla()->set_statistic(v1::P95);
  request.mutable_sla()->set_latency_confidence(0.95);
  request.mutable_sla()->set_min_throughput_rps(1000);
  request.set_algorithm("random");
  request.set_exit_policy("margin");
  Write(t, "create-random-p95", Text(10, request));
  request.set_algorithm("annealing");
  request.mutable_sla()->set_statistic(v1::WORST);
  Write(t, "create-annealing-worst", Text(14, request));
  request.set_device("Bad/Name");
  Write(t, "create-bad-device", Text(2, request));
  // 3: variant manifests.
  v1::VariantManifest variant;
  variant.set_id("fake-edge-1");
  variant.set_model("fake");
  variant.set_device("edge-1");
  variant.add_enabled_exits(1);
  variant.add_enabled_exits(3);
  variant.add_thresholds(0.8f);
  variant.add_thresholds(0.9f);
  variant.set_exit_policy("max_softmax");
  variant.set_predicted_accuracy(0.9);
  Write(t, "variant-two-exits", Text(3, variant));
  variant.set_exit_policy("margin");
  variant.add_enabled_exits(4);
  variant.add_thresholds(0.5f);
  Write(t, "variant-margin", Text(7, variant));
  variant.clear_enabled_exits();
  variant.clear_thresholds();
  variant.clear_exit_policy();
  Write(t, "variant-final-only", Text(11, variant));
  variant.add_enabled_exits(3);
  variant.add_enabled_exits(1);
  variant.add_thresholds(0.8f);
  variant.add_thresholds(0.9f);
  Write(t, "variant-descending", Text(3, variant));
}

}  // namespace
}  // namespace hapi

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  hapi::g_root = argv[1];
  hapi::ImageDecoder();
  hapi::ClassifyRequest();
  hapi::IdxLoader();
  hapi::CalibrationTableSeeds();
  hapi::TextProtos();
  return 0;
}
