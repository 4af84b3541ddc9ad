#include "server/image_decoder.h"

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

#include <cmath>
#include <csetjmp>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "stb_image_resize.h"

namespace hapi {
namespace {

constexpr int kSide = 28;

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

// An image decoded to 8-bit luma, not yet resized.
struct GrayImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // [height][width]
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

void PngRowToGray(const PngDecoder& d, const png_byte* row, uint8_t* out) {
  const int step = d.channels * (d.bit_depth / 8);
  for (png_uint_32 x = 0; x < d.width; ++x, row += step) {
    if (d.bit_depth == 8) {
      out[x] = d.channels >= 3 ? Luma(row[0], row[1], row[2]) : row[0];
    } else if (d.channels >= 3) {
      out[x] = Luma16((row[0] << 8) | row[1], (row[2] << 8) | row[3], (row[4] << 8) | row[5]);
    } else {
      out[x] = row[0];  // the high byte of a 16-bit grey sample
    }
  }
}

// Decodes the pixels into gray (width x height). rows holds the whole image
// for an interlaced PNG (row_pointers indexes it), one row otherwise.
bool PngReadPixels(PngDecoder* d, png_bytep rows, png_bytepp row_pointers, uint8_t* gray) {
  if (setjmp(d->jump)) return false;
  if (d->interlaced) {
    png_read_image(d->png, row_pointers);
    for (png_uint_32 y = 0; y < d->height; ++y) {
      PngRowToGray(*d, row_pointers[y], gray + static_cast<size_t>(y) * d->width);
    }
  } else {
    for (png_uint_32 y = 0; y < d->height; ++y) {
      png_read_row(d->png, rows, nullptr);
      PngRowToGray(*d, rows, gray + static_cast<size_t>(y) * d->width);
    }
  }
  // Up to IEND: a PNG cut anywhere is refused, not only one cut in its pixels.
  png_read_end(d->png, nullptr);
  return true;
}

uint32_t BigEndian32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

absl::StatusOr<GrayImage> DecodePng(absl::string_view bytes) {
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
  GrayImage image;
  image.width = static_cast<int>(d.width);
  image.height = static_cast<int>(d.height);
  image.pixels.resize(static_cast<size_t>(d.width) * d.height);
  if (!PngReadPixels(&d, rows.data(), row_pointers.data(), image.pixels.data())) {
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
  // JCS_GRAYSCALE (libjpeg's grey), or JCS_CMYK / JCS_YCCK as stored, made
  // grey here the way stb_image did.
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

// Decodes every scanline into gray (image_width x image_height); row holds one
// output row (4 bytes per pixel).
bool JpegReadPixels(JpegDecoder* d, JSAMPROW row, uint8_t* gray) {
  if (setjmp(d->error.jump)) return false;
  d->cinfo.out_color_space = d->output;
  jpeg_start_decompress(&d->cinfo);
  if (d->cinfo.output_width != d->cinfo.image_width ||
      d->cinfo.output_height != d->cinfo.image_height ||
      d->cinfo.output_components != (d->output == JCS_GRAYSCALE ? 1 : 4)) {
    std::snprintf(d->error.message, sizeof d->error.message, "unexpected output layout");
    return false;
  }
  const JDIMENSION width = d->cinfo.output_width;
  while (d->cinfo.output_scanline < d->cinfo.output_height) {
    uint8_t* out = gray + static_cast<size_t>(d->cinfo.output_scanline) * width;
    if (jpeg_read_scanlines(&d->cinfo, &row, 1) != 1) {
      std::snprintf(d->error.message, sizeof d->error.message, "truncated JPEG data");
      return false;
    }
    if (d->output == JCS_GRAYSCALE) {
      std::memcpy(out, row, width);
    } else if (d->output == JCS_CMYK) {
      // C, M, Y as stored (Adobe's inverted CMYK) each scaled by K, then luma.
      for (JDIMENSION x = 0; x < width; ++x) {
        const JSAMPLE* p = row + 4 * x;
        out[x] = Luma(ScaleByK(p[0], p[3]), ScaleByK(p[1], p[3]), ScaleByK(p[2], p[3]));
      }
    } else {
      // YCCK: the inverted Y scaled by K.
      for (JDIMENSION x = 0; x < width; ++x) {
        const JSAMPLE* p = row + 4 * x;
        out[x] = ScaleByK(255 - p[0], p[3]);
      }
    }
  }
  // Up to EOI: a JPEG cut anywhere is refused (as a warning, see above).
  jpeg_finish_decompress(&d->cinfo);
  return true;
}

absl::StatusOr<GrayImage> DecodeJpeg(absl::string_view bytes) {
  JpegDecoder d;
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  if (!JpegReadHeader(&d, data, bytes.size())) {
    return Undecodable("JPEG", bytes.size(), d.error.message);
  }
  if (absl::Status st = CheckEncodedShape("JPEG", d.cinfo.image_height, d.cinfo.image_width);
      !st.ok()) {
    return st;
  }
  switch (d.cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:  // grey output is the Y channel itself, as stb_image gave
    case JCS_RGB:
      d.output = JCS_GRAYSCALE;
      break;
    case JCS_CMYK:
    case JCS_YCCK:  // both decoded as stored (libjpeg's null conversion)
      d.output = d.cinfo.jpeg_color_space;
      break;
    default:
      return Undecodable(
          "JPEG", bytes.size(),
          absl::StrCat("unsupported colour space with ", d.cinfo.num_components, " components"));
  }
  GrayImage image;
  image.width = static_cast<int>(d.cinfo.image_width);
  image.height = static_cast<int>(d.cinfo.image_height);
  image.pixels.resize(static_cast<size_t>(image.width) * image.height);
  std::vector<JSAMPLE> row(static_cast<size_t>(image.width) * 4);
  if (!JpegReadPixels(&d, row.data(), image.pixels.data())) {
    return Undecodable("JPEG", bytes.size(), d.error.message);
  }
  return image;
}

absl::StatusOr<std::vector<float>> DecodeEncoded(const std::string& bytes) {
  if (bytes.empty()) return absl::InvalidArgumentError("empty image bytes");
  absl::StatusOr<GrayImage> image;
  if (bytes.size() >= sizeof(kPngSignature) &&
      std::memcmp(bytes.data(), kPngSignature, sizeof(kPngSignature)) == 0) {
    image = DecodePng(bytes);
  } else if (bytes.size() >= sizeof(kJpegSignature) &&
             std::memcmp(bytes.data(), kJpegSignature, sizeof(kJpegSignature)) == 0) {
    image = DecodeJpeg(bytes);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot decode image (", bytes.size(),
        " bytes): not a PNG or JPEG signature; encoded images must be PNG or JPEG, other data "
        "can be sent as a raw_uint8 or raw_float32 tensor"));
  }
  if (!image.ok()) return image.status();
  return FromGray(image->pixels.data(), image->width, image->height);
}

}  // namespace

absl::StatusOr<std::vector<float>> DecodeImage(const v1::Image& image) {
  const int height = image.height() == 0 ? kSide : image.height();
  const int width = image.width() == 0 ? kSide : image.width();
  switch (image.data_case()) {
    case v1::Image::kEncoded:
      return DecodeEncoded(image.encoded());
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
                                                       " bytes, expected 4 x ", height, "x", width,
                                                       " = ", n * 4));
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
