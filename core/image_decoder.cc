#include "core/image_decoder.h"

// jpeglib.h needs FILE and size_t declared before it.
#include <cstddef>
#include <cstdio>
// Decoding goes through libjpeg-turbo's libjpeg API rather than its TurboJPEG
// API: Debian 12's TurboJPEG (2.1) has no memory limit and only a fixed scan
// limit, while the libjpeg API lets us read the header alone, refuse the
// image before any pixel is decoded, cap libjpeg's whole-image buffers, pick
// the scan limit and treat every warning (truncated or corrupt data) as an
// error, all behind one longjmp boundary per phase.
#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "core/input_spec.h"
#include "core/status_macros.h"
#include "stb_image_resize.h"

namespace hapi {
namespace {

constexpr unsigned char kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
constexpr unsigned char kJpegSignature[3] = {0xff, 0xd8, 0xff};

// libjpeg's standard progressions use 10 scans (colour) or 6 (grey), and
// optimised ones stay well below this. Every scan of a progressive image
// passes over the whole coefficient buffer, so a crafted file with thousands
// of tiny scans would otherwise cost seconds within the pixel budget.
constexpr int kMaxJpegScans = 64;
// libjpeg's whole-image buffers: a progressive or multi-scan image keeps every
// coefficient (2 bytes per sample, 4 components at most for the colour spaces
// accepted) of at most kMaxEncodedImagePixels: 32 MiB, with room to spare.
constexpr long kMaxJpegMemory = 64L << 20;

// An image decoded to 8-bit planes, not yet resized: luma (1 channel) or RGB
// (3), as the model takes.
struct Planes {
  int channels = 0;
  int width = 0;
  int height = 0;
  std::vector<uint8_t> samples;  // [channels][height][width]

  Planes(int channels, int width, int height)
      : channels(channels),
        width(width),
        height(height),
        samples(static_cast<size_t>(channels) * width * height) {}
  // Sample (x, y) of channel c.
  uint8_t& at(int c, size_t x, size_t y) {
    return samples[(static_cast<size_t>(c) * height + y) * width + x];
  }
};

// Decoder messages can echo bytes of the input (a chunk type, a marker);
// status messages must be valid UTF-8. Printable ASCII is kept, anything else
// is written as \xNN.
std::string Printable(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    }
  }
  return out;
}

// Luma exactly as stb_image computed it when it decoded PNG and JPEG here:
// integer BT.601 weights, 16-bit samples weighted first and then cut to their
// high byte, alpha ignored (not composited).
uint8_t Luma(int r, int g, int b) { return static_cast<uint8_t>((r * 77 + g * 150 + b * 29) >> 8); }
uint8_t Luma16(int r, int g, int b) {
  return static_cast<uint8_t>((r * 77 + g * 150 + b * 29) >> 16);
}

// The part of a width x height image that becomes the model's input, as
// stb_image_resize's region (fractions of the source): all of it for RESIZE;
// for RESIZE_CENTER_CROP, the centre whose aspect ratio is the target's.
struct SourceRegion {
  float s0 = 0, t0 = 0, s1 = 1, t1 = 1;
};
SourceRegion RegionFor(int width, int height, const v1::InputSpec& spec) {
  SourceRegion r;
  if (spec.resize() != v1::InputSpec::RESIZE_CENTER_CROP) return r;
  // Scaled by `scale`, the image covers the target and fits it along its
  // shorter side; the fractions kept of each side follow.
  const double scale = std::max(static_cast<double>(spec.width()) / width,
                                static_cast<double>(spec.height()) / height);
  const double kept_width = spec.width() / scale / width;
  const double kept_height = spec.height() / scale / height;
  r.s0 = static_cast<float>((1 - kept_width) / 2);
  r.s1 = static_cast<float>((1 + kept_width) / 2);
  r.t0 = static_cast<float>((1 - kept_height) / 2);
  r.t1 = static_cast<float>((1 + kept_height) / 2);
  return r;
}

constexpr stbir_datatype StbType(const uint8_t*) { return STBIR_TYPE_UINT8; }
constexpr stbir_datatype StbType(const float*) { return STBIR_TYPE_FLOAT; }
float Unit(uint8_t v) { return v / 255.0f; }
float Unit(float v) { return std::fmin(1.0f, std::fmax(0.0f, v)); }  // resampling overshoots

// `samples` (channels planes of width x height) as the model's input: each
// plane resized to the spec's size by its policy (see the header), then in
// [0,1].
template <typename T>
absl::StatusOr<std::vector<float>> ToInput(const T* samples, int channels, int width, int height,
                                           const v1::InputSpec& spec) {
  const size_t in_plane = static_cast<size_t>(width) * height;
  const size_t out_plane = static_cast<size_t>(spec.width()) * spec.height();
  std::vector<T> resized;
  if (width != spec.width() || height != spec.height()) {
    resized.resize(out_plane * channels);
    const SourceRegion r = RegionFor(width, height, spec);
    for (int c = 0; c < channels; ++c) {
      if (!stbir_resize_region(samples + c * in_plane, width, height, 0,
                               resized.data() + c * out_plane, spec.width(), spec.height(), 0,
                               StbType(samples), 1, -1, 0, STBIR_EDGE_CLAMP, STBIR_EDGE_CLAMP,
                               STBIR_FILTER_DEFAULT, STBIR_FILTER_DEFAULT, STBIR_COLORSPACE_LINEAR,
                               nullptr, r.s0, r.t0, r.s1, r.t1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("cannot resize the image to ", spec.height(), "x", spec.width()));
      }
    }
    samples = resized.data();
  }
  std::vector<float> out(out_plane * channels);
  for (size_t i = 0; i < out.size(); ++i) out[i] = Unit(samples[i]);
  return out;
}

absl::Status CheckShape(int64_t height, int64_t width, absl::string_view what = "image") {
  if (height <= 0 || width <= 0 || height > kMaxImageSide || width > kMaxImageSide) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " shape ", height, "x", width, " must be within 1..", kMaxImageSide));
  }
  return absl::OkStatus();
}

// Both limits, from an encoded image's header, before any pixel is decoded.
absl::Status CheckEncodedShape(absl::string_view format, int64_t height, int64_t width) {
  if (absl::Status st = CheckShape(height, width, absl::StrCat(format, " image")); !st.ok()) {
    return st;
  }
  if (height * width > kMaxEncodedImagePixels) {
    return absl::InvalidArgumentError(
        absl::StrCat(format, " image shape ", height, "x", width, " has ", height * width,
                     " pixels, more than the ", kMaxEncodedImagePixels,
                     " (2048x2048) an encoded image may have; downscale it before sending"));
  }
  return absl::OkStatus();
}

absl::Status Undecodable(absl::string_view format, size_t size, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("cannot decode ", format, " image (", size, " bytes): ", Printable(why)));
}

// --- PNG (libpng) ------------------------------------------------------------
//
// libpng reports errors by longjmp. Everything the setjmp scopes below touch
// lives in a PngDecoder (or a buffer) owned by the caller, so a longjmp skips
// no destructor and leaves no clobbered local behind; the scopes create no
// C++ object.

struct PngDecoder {
  const unsigned char* data = nullptr;
  size_t size = 0;
  size_t offset = 0;
  std::jmp_buf jump;
  char message[256] = "";
  png_structp png = nullptr;
  png_infop info = nullptr;
  // After PngReadHeader: the image and the rows libpng will hand out (after
  // the expansion to 8 or 16 bits per sample).
  png_uint_32 width = 0;
  png_uint_32 height = 0;
  int channels = 0;
  int bit_depth = 0;
  bool interlaced = false;
  size_t row_bytes = 0;

  ~PngDecoder() {
    if (png != nullptr) png_destroy_read_struct(&png, info != nullptr ? &info : nullptr, nullptr);
  }
};

[[noreturn]] void PngError(png_structp png, png_const_charp message) {
  auto* d = static_cast<PngDecoder*>(png_get_error_ptr(png));
  std::snprintf(d->message, sizeof d->message, "%s", message);
  std::longjmp(d->jump, 1);
}

// Warnings are about ancillary chunks (all skipped here) or surplus data after
// a complete image: libpng reports every shortfall or corruption of the pixel
// data itself (a truncated or corrupt zlib stream, a missing IDAT, a bad CRC
// in a critical chunk) as an error, and PngRead turns running out of input
// into one.
void PngWarning(png_structp, png_const_charp) {}

void PngRead(png_structp png, png_bytep out, size_t length) {
  auto* d = static_cast<PngDecoder*>(png_get_io_ptr(png));
  if (length > d->size - d->offset) png_error(png, "truncated PNG data");
  std::memcpy(out, d->data + d->offset, length);
  d->offset += length;
}

// Reads every chunk before the first IDAT and sets up the transformations;
// decodes no pixel.
bool PngReadHeader(PngDecoder* d) {
  if (setjmp(d->jump)) return false;
  d->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d, PngError, PngWarning);
  if (d->png == nullptr) {
    std::snprintf(d->message, sizeof d->message, "out of memory");
    return false;
  }
  d->info = png_create_info_struct(d->png);
  if (d->info == nullptr) png_error(d->png, "out of memory");
  png_set_read_fn(d->png, d, PngRead);
  // Defence in depth: DecodePng checks the IHDR itself first.
  png_set_user_limits(d->png, kMaxImageSide, kMaxImageSide);
  // Skip every ancillary chunk but tRNS (text, ICC profiles, ...): none
  // changes a pixel here, and skipping them keeps their decompression and
  // parsing off the attack surface.
  png_set_keep_unknown_chunks(d->png, PNG_HANDLE_CHUNK_NEVER, nullptr, -1);
  png_read_info(d->png, d->info);
  // Palette to RGB(A), grey below 8 bits to 8 bits; 16 bits stay 16 so that
  // luma is weighted as before.
  png_set_expand(d->png);
  d->interlaced = png_set_interlace_handling(d->png) > 1;
  png_read_update_info(d->png, d->info);
  d->width = png_get_image_width(d->png, d->info);
  d->height = png_get_image_height(d->png, d->info);
  d->channels = png_get_channels(d->png, d->info);
  d->bit_depth = png_get_bit_depth(d->png, d->info);
  d->row_bytes = png_get_rowbytes(d->png, d->info);
  return true;
}

// Row y of the image into `out`: luma, or RGB (grey replicated); 16-bit
// samples give their high byte (luma weighs all 16 bits first); alpha is
// dropped.
void PngRowToPlanes(const PngDecoder& d, const png_byte* row, png_uint_32 y, Planes* out) {
  const int bytes = d.bit_depth / 8;
  const int step = d.channels * bytes;
  const bool colour = d.channels >= 3;
  for (png_uint_32 x = 0; x < d.width; ++x, row += step) {
    if (out->channels == 3) {
      for (int c = 0; c < 3; ++c) out->at(c, x, y) = row[colour ? c * bytes : 0];
    } else if (!colour) {
      out->at(0, x, y) = row[0];
    } else if (d.bit_depth == 8) {
      out->at(0, x, y) = Luma(row[0], row[1], row[2]);
    } else {
      out->at(0, x, y) =
          Luma16((row[0] << 8) | row[1], (row[2] << 8) | row[3], (row[4] << 8) | row[5]);
    }
  }
}

// Decodes the pixels into `out` (width x height). rows holds the whole image
// for an interlaced PNG (row_pointers indexes it), one row otherwise.
bool PngReadPixels(PngDecoder* d, png_bytep rows, png_bytepp row_pointers, Planes* out) {
  if (setjmp(d->jump)) return false;
  if (d->interlaced) {
    png_read_image(d->png, row_pointers);
    for (png_uint_32 y = 0; y < d->height; ++y) PngRowToPlanes(*d, row_pointers[y], y, out);
  } else {
    for (png_uint_32 y = 0; y < d->height; ++y) {
      png_read_row(d->png, rows, nullptr);
      PngRowToPlanes(*d, rows, y, out);
    }
  }
  // Up to IEND: a PNG cut anywhere is refused, not only one cut in its pixels.
  png_read_end(d->png, nullptr);
  return true;
}

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

absl::StatusOr<Planes> DecodePng(absl::string_view bytes, int channels) {
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  // The IHDR chunk must come first: its size is checked before libpng sees a
  // byte, so that any declared size (up to 2^31-1) is refused naming the limit.
  if (bytes.size() >= 24 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    if (absl::Status st = CheckEncodedShape("PNG", BigEndian32(data + 20), BigEndian32(data + 16));
        !st.ok()) {
      return st;
    }
  }
  PngDecoder d;
  d.data = data;
  d.size = bytes.size();
  if (!PngReadHeader(&d)) return Undecodable("PNG", bytes.size(), d.message);
  if (absl::Status st = CheckEncodedShape("PNG", d.height, d.width); !st.ok()) return st;
  const int bytes_per_pixel = d.channels * d.bit_depth / 8;
  if (d.channels < 1 || d.channels > 4 || (d.bit_depth != 8 && d.bit_depth != 16) ||
      d.row_bytes != static_cast<size_t>(d.width) * bytes_per_pixel) {
    return Undecodable(
        "PNG", bytes.size(),
        absl::StrCat("unexpected row layout: ", d.channels, " channels of ", d.bit_depth, " bits"));
  }
  std::vector<png_byte> rows(d.row_bytes * (d.interlaced ? d.height : 1));
  std::vector<png_bytep> row_pointers;
  if (d.interlaced) {
    row_pointers.resize(d.height);
    for (png_uint_32 y = 0; y < d.height; ++y) row_pointers[y] = rows.data() + y * d.row_bytes;
  }
  Planes image(channels, static_cast<int>(d.width), static_cast<int>(d.height));
  if (!PngReadPixels(&d, rows.data(), row_pointers.data(), &image)) {
    return Undecodable("PNG", bytes.size(), d.message);
  }
  return image;
}

// --- JPEG (libjpeg-turbo) ----------------------------------------------------
//
// Same discipline as for PNG: libjpeg's error_exit and warnings longjmp out of
// setjmp scopes that create no C++ object, into state owned by the caller.

struct JpegErrorManager {
  jpeg_error_mgr pub;  // first: libjpeg sees only this
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX + 64] = "";
};

struct JpegDecoder {
  jpeg_decompress_struct cinfo{};  // zeroed: destroying it before create is safe
  JpegErrorManager error;
  jpeg_progress_mgr progress{};
  // What libjpeg outputs (JpegOutput), made luma or RGB here.
  J_COLOR_SPACE output = JCS_GRAYSCALE;

  ~JpegDecoder() { jpeg_destroy_decompress(&cinfo); }
};

// v * k / 255, rounded, as stb_image computed it for CMYK and YCCK JPEGs.
uint8_t ScaleByK(int v, int k) {
  const unsigned t = static_cast<unsigned>(v * k) + 128u;
  return static_cast<uint8_t>((t + (t >> 8)) >> 8);
}

[[noreturn]] void JpegFail(j_common_ptr cinfo) {
  auto* error = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  std::longjmp(error->jump, 1);
}

// Replaces libjpeg's error_exit, which would print and call exit().
[[noreturn]] void JpegErrorExit(j_common_ptr cinfo) {
  auto* error = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, error->message);
  JpegFail(cinfo);
}

// Level -1 is a warning: truncated data ("Premature end of JPEG file"),
// corrupt entropy-coded data, bogus progression. libjpeg would go on and fill
// the rest of the image with made-up pixels; refuse it instead. Other levels
// are trace messages, ignored.
void JpegEmitMessage(j_common_ptr cinfo, int msg_level) {
  if (msg_level >= 0) return;
  JpegErrorExit(cinfo);
}

void JpegProgress(j_common_ptr cinfo) {
  if (!cinfo->is_decompressor) return;
  const int scans = reinterpret_cast<j_decompress_ptr>(cinfo)->input_scan_number;
  if (scans > kMaxJpegScans) {
    auto* error = reinterpret_cast<JpegErrorManager*>(cinfo->err);
    std::snprintf(error->message, sizeof error->message, "more than %d scans", kMaxJpegScans);
    JpegFail(cinfo);
  }
}

// Reads the markers up to the first scan; decodes no pixel.
bool JpegReadHeader(JpegDecoder* d, const unsigned char* data, size_t size) {
  d->cinfo.err = jpeg_std_error(&d->error.pub);
  d->error.pub.error_exit = JpegErrorExit;
  d->error.pub.emit_message = JpegEmitMessage;
  if (setjmp(d->error.jump)) return false;
  jpeg_create_decompress(&d->cinfo);
  d->cinfo.mem->max_memory_to_use = kMaxJpegMemory;
  d->progress.progress_monitor = JpegProgress;
  d->cinfo.progress = &d->progress;
  jpeg_mem_src(&d->cinfo, data, static_cast<unsigned long>(size));
  if (jpeg_read_header(&d->cinfo, TRUE) != JPEG_HEADER_OK) {
    std::snprintf(d->error.message, sizeof d->error.message, "no image in the JPEG data");
    return false;
  }
  return true;
}

// libjpeg's output for a JPEG stored in `stored`, for a model of `channels`:
// grey, luma (libjpeg's, the Y channel itself for YCbCr, as stb_image gave)
// or RGB; CMYK and YCCK as CMYK (libjpeg converts YCCK), but YCCK as stored
// for luma, each turned into the model's channels by JpegRowToPlanes as
// stb_image did. JCS_UNKNOWN for colour spaces not decoded.
J_COLOR_SPACE JpegOutput(J_COLOR_SPACE stored, int channels) {
  switch (stored) {
    case JCS_GRAYSCALE:
      return JCS_GRAYSCALE;
    case JCS_YCbCr:
    case JCS_RGB:
      return channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    case JCS_CMYK:
      return JCS_CMYK;
    case JCS_YCCK:
      return channels == 1 ? JCS_YCCK : JCS_CMYK;
    default:
      return JCS_UNKNOWN;
  }
}

int JpegOutputComponents(J_COLOR_SPACE output) {
  return output == JCS_GRAYSCALE ? 1 : output == JCS_RGB ? 3 : 4;
}

// Pixel x of a scanline of libjpeg's `output` as one luma or three RGB
// samples into `out`.
void JpegPixel(J_COLOR_SPACE output, const JSAMPLE* row, JDIMENSION x, int channels, uint8_t* out) {
  const JSAMPLE* p = row + static_cast<size_t>(x) * JpegOutputComponents(output);
  if (output == JCS_GRAYSCALE) {
    std::fill(out, out + channels, p[0]);
  } else if (output == JCS_RGB) {
    std::copy(p, p + 3, out);
  } else if (output == JCS_YCCK) {
    out[0] = ScaleByK(255 - p[0], p[3]);  // luma only: the inverted Y scaled by K
  } else {
    // C, M, Y as stored (Adobe's inverted CMYK) each scaled by K: RGB.
    const uint8_t rgb[3] = {ScaleByK(p[0], p[3]), ScaleByK(p[1], p[3]), ScaleByK(p[2], p[3])};
    if (channels == 3) {
      std::copy(rgb, rgb + 3, out);
    } else {
      out[0] = Luma(rgb[0], rgb[1], rgb[2]);
    }
  }
}

void JpegRowToPlanes(J_COLOR_SPACE output, const JSAMPLE* row, JDIMENSION y, Planes* out) {
  uint8_t pixel[3];
  for (int x = 0; x < out->width; ++x) {
    JpegPixel(output, row, x, out->channels, pixel);
    for (int c = 0; c < out->channels; ++c) out->at(c, x, y) = pixel[c];
  }
}

// Decodes every scanline into `out` (image_width x image_height); row holds
// one output row (4 bytes per pixel).
bool JpegReadPixels(JpegDecoder* d, JSAMPROW row, Planes* out) {
  if (setjmp(d->error.jump)) return false;
  d->cinfo.out_color_space = d->output;
  jpeg_start_decompress(&d->cinfo);
  if (d->cinfo.output_width != d->cinfo.image_width ||
      d->cinfo.output_height != d->cinfo.image_height ||
      d->cinfo.output_components != JpegOutputComponents(d->output)) {
    std::snprintf(d->error.message, sizeof d->error.message, "unexpected output layout");
    return false;
  }
  while (d->cinfo.output_scanline < d->cinfo.output_height) {
    const JDIMENSION y = d->cinfo.output_scanline;
    if (jpeg_read_scanlines(&d->cinfo, &row, 1) != 1) {
      std::snprintf(d->error.message, sizeof d->error.message, "truncated JPEG data");
      return false;
    }
    JpegRowToPlanes(d->output, row, y, out);
  }
  // Up to EOI: a JPEG cut anywhere is refused (as a warning, see above).
  jpeg_finish_decompress(&d->cinfo);
  return true;
}

absl::StatusOr<Planes> DecodeJpeg(absl::string_view bytes, int channels) {
  JpegDecoder d;
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  if (!JpegReadHeader(&d, data, bytes.size())) {
    return Undecodable("JPEG", bytes.size(), d.error.message);
  }
  if (absl::Status st = CheckEncodedShape("JPEG", d.cinfo.image_height, d.cinfo.image_width);
      !st.ok()) {
    return st;
  }
  d.output = JpegOutput(d.cinfo.jpeg_color_space, channels);
  if (d.output == JCS_UNKNOWN) {
    return Undecodable(
        "JPEG", bytes.size(),
        absl::StrCat("unsupported colour space with ", d.cinfo.num_components, " components"));
  }
  Planes image(channels, static_cast<int>(d.cinfo.image_width),
               static_cast<int>(d.cinfo.image_height));
  std::vector<JSAMPLE> row(static_cast<size_t>(image.width) * 4);
  if (!JpegReadPixels(&d, row.data(), &image)) {
    return Undecodable("JPEG", bytes.size(), d.error.message);
  }
  return image;
}

absl::StatusOr<std::vector<float>> DecodeEncoded(absl::string_view bytes,
                                                 const v1::InputSpec& spec) {
  if (bytes.empty()) return absl::InvalidArgumentError("empty image bytes");
  absl::StatusOr<Planes> image = absl::UnknownError("");
  if (bytes.size() >= sizeof(kPngSignature) &&
      std::memcmp(bytes.data(), kPngSignature, sizeof(kPngSignature)) == 0) {
    image = DecodePng(bytes, spec.channels());
  } else if (bytes.size() >= sizeof(kJpegSignature) &&
             std::memcmp(bytes.data(), kJpegSignature, sizeof(kJpegSignature)) == 0) {
    image = DecodeJpeg(bytes, spec.channels());
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot decode image (", bytes.size(),
        " bytes): not a PNG or JPEG signature; encoded images must be PNG or JPEG, other data "
        "can be sent as a raw_uint8 or raw_float32 tensor"));
  }
  if (!image.ok()) return image.status();
  return ToInput(image->samples.data(), image->channels, image->width, image->height, spec);
}

// A raw tensor's shape: channels 0 means 1, a height or width of 0 the
// model's. Checked against the limits and the model's channel count.
struct RawShape {
  int channels, height, width;
  int64_t size() const { return int64_t{channels} * height * width; }
};

absl::StatusOr<RawShape> CheckRawShape(const v1::Image& image, const v1::InputSpec& spec,
                                       absl::string_view field) {
  const RawShape shape{image.channels() == 0 ? 1 : image.channels(),
                       image.height() == 0 ? spec.height() : image.height(),
                       image.width() == 0 ? spec.width() : image.width()};
  if (shape.channels != 1 && shape.channels != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " channels ", shape.channels, " must be 1 (grayscale) or 3 (RGB)"));
  }
  HAPI_RETURN_IF_ERROR(CheckShape(shape.height, shape.width));
  if (shape.channels != spec.channels()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " tensor is ", ShapeString(shape.channels, shape.height, shape.width),
                     " (channels x height x width); the model takes ", ShapeString(spec), ": send ",
                     spec.channels(), "-channel data (Image.channels = ", spec.channels(),
                     ") or an encoded image"));
  }
  return shape;
}

absl::StatusOr<std::vector<float>> DecodeRawUint8(const v1::Image& image,
                                                  const v1::InputSpec& spec) {
  HAPI_ASSIGN_OR_RETURN(const RawShape shape, CheckRawShape(image, spec, "raw_uint8"));
  const std::string& raw = image.raw_uint8();
  if (raw.empty()) return absl::InvalidArgumentError("empty raw_uint8 tensor");
  if (raw.size() != static_cast<size_t>(shape.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_uint8 has ", raw.size(), " bytes, expected ",
                     ShapeString(shape.channels, shape.height, shape.width), " = ", shape.size()));
  }
  return ToInput(reinterpret_cast<const uint8_t*>(raw.data()), shape.channels, shape.width,
                 shape.height, spec);
}

absl::StatusOr<std::vector<float>> DecodeRawFloat32(const v1::Image& image,
                                                    const v1::InputSpec& spec) {
  HAPI_ASSIGN_OR_RETURN(const RawShape shape, CheckRawShape(image, spec, "raw_float32"));
  const std::string& raw = image.raw_float32();
  if (raw.empty()) return absl::InvalidArgumentError("empty raw_float32 tensor");
  const size_t n = static_cast<size_t>(shape.size());
  if (raw.size() != n * 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_float32 has ", raw.size(), " bytes, expected 4 x ",
                     ShapeString(shape.channels, shape.height, shape.width), " = ", n * 4));
  }
  std::vector<float> values(n);
  std::memcpy(values.data(), raw.data(), n * 4);
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(values[i]) || values[i] < 0.0f || values[i] > 1.0f) {
      return absl::InvalidArgumentError(absl::StrCat("raw_float32 value ", values[i], " at index ",
                                                     i, " is not a number in [0, 1]"));
    }
  }
  return ToInput(values.data(), shape.channels, shape.width, shape.height, spec);
}

}  // namespace

absl::StatusOr<std::vector<float>> PlanesToInput(const uint8_t* planes, int channels, int width,
                                                 int height, const v1::InputSpec& spec) {
  HAPI_RETURN_IF_ERROR(CheckShape(height, width));
  return ToInput(planes, channels, width, height, spec);
}

absl::StatusOr<std::vector<float>> DecodeImage(const v1::Image& image, const v1::InputSpec& spec) {
  switch (image.data_case()) {
    case v1::Image::kEncoded:
      return DecodeEncoded(image.encoded(), spec);
    case v1::Image::kRawUint8:
      return DecodeRawUint8(image, spec);
    case v1::Image::kRawFloat32:
      return DecodeRawFloat32(image, spec);
    case v1::Image::DATA_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("request has no image (set encoded, raw_uint8 or raw_float32)");
}

absl::StatusOr<std::vector<float>> DecodeEncodedImage(absl::string_view bytes,
                                                      const v1::InputSpec& spec) {
  return DecodeEncoded(bytes, spec);
}

}  // namespace hapi
