// DecodeImage on encoded images: hostile bytes (each built here byte by byte)
// are refused with INVALID_ARGUMENT and a valid UTF-8 message, and valid PNG
// and JPEG images decode to what stb_image gave before, within 1/255, for a
// 1x28x28 model. Then the input spec: colour kept or made luma as the model
// asks, the two resize policies, raw tensors against the model's shape.
#include "core/image_decoder.h"

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/input_spec.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "stb_image.h"
#include "stb_image_resize.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace {

using ::hapi::testing::IsOk;
using ::hapi::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr int kSide = 28;

// The default model's spec, and an RGB one.
const v1::InputSpec kGray = MakeInputSpec(1, kSide, kSide, 0.5f, 0.25f);
const v1::InputSpec kRgb32 = MakeInputSpec(3, 32, 32, 0.5f, 0.25f);

absl::StatusOr<std::vector<float>> Decode(const std::string& bytes,
                                          const v1::InputSpec& spec = kGray) {
  v1::Image image;
  image.set_encoded(bytes);
  return DecodeImage(image, spec);
}

// RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF.
bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int extra;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;
    for (int k = 1; k <= extra; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += extra + 1;
  }
  return true;
}

TEST(Utf8Test, Validator) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xc0\x80"));          // overlong
  EXPECT_FALSE(IsValidUtf8("\xc0XYZ"));           // lead byte never valid
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // cut short
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
}

// Every refusal: INVALID_ARGUMENT, a valid UTF-8 message, never a tensor.
void ExpectRefused(const absl::StatusOr<std::vector<float>>& result,
                   const ::testing::Matcher<const std::string&>& message) {
  ASSERT_FALSE(result.ok()) << "decoded to a tensor";
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_TRUE(IsValidUtf8(std::string(result.status().message()))) << result.status();
  EXPECT_THAT(std::string(result.status().message()), message);
}

// --- Byte-level builders -------------------------------------------------------

std::string BigEndian32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

const std::string kPngSignature("\x89PNG\r\n\x1a\n", 8);

// A PNG chunk with a correct CRC, whatever its type bytes.
std::string PngChunk(const std::string& type, const std::string& data) {
  std::string body = type + data;
  const uLong crc =
      crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()));
  return BigEndian32(static_cast<uint32_t>(data.size())) + body +
         BigEndian32(static_cast<uint32_t>(crc));
}

std::string Ihdr(uint32_t width, uint32_t height, int bit_depth, int color_type) {
  return PngChunk("IHDR", BigEndian32(width) + BigEndian32(height) +
                              std::string{static_cast<char>(bit_depth),
                                          static_cast<char>(color_type), 0, 0, 0});
}

std::string Zlib(const std::string& raw) {
  uLongf size = compressBound(static_cast<uLong>(raw.size()));
  std::string out(size, '\0');
  EXPECT_EQ(compress2(reinterpret_cast<Bytef*>(out.data()), &size,
                      reinterpret_cast<const Bytef*>(raw.data()), static_cast<uLong>(raw.size()),
                      Z_BEST_COMPRESSION),
            Z_OK);
  out.resize(size);
  return out;
}

// A PNG of zero samples (filter byte 0 on every row), deflated in a stream so
// that a 128 MiB image costs a 64 KiB buffer to build.
std::string ZeroPng(uint32_t width, uint32_t height, int bit_depth, int color_type, int channels) {
  const size_t row = 1 + static_cast<size_t>(width) * channels * bit_depth / 8;
  size_t left = row * height;
  z_stream z{};
  EXPECT_EQ(deflateInit(&z, Z_BEST_COMPRESSION), Z_OK);
  const std::string zeros(64 * 1024, '\0');
  std::string idat;
  char out[64 * 1024];
  int ret = Z_OK;
  while (ret != Z_STREAM_END) {
    if (z.avail_in == 0 && left > 0) {
      const size_t n = std::min(left, zeros.size());
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(zeros.data()));
      z.avail_in = static_cast<uInt>(n);
      left -= n;
    }
    z.next_out = reinterpret_cast<Bytef*>(out);
    z.avail_out = sizeof out;
    ret = deflate(&z, left == 0 && z.avail_in == 0 ? Z_FINISH : Z_NO_FLUSH);
    EXPECT_NE(ret, Z_STREAM_ERROR);
    idat.append(out, sizeof out - z.avail_out);
  }
  deflateEnd(&z);
  return kPngSignature + Ihdr(width, height, bit_depth, color_type) + PngChunk("IDAT", idat) +
         PngChunk("IEND", "");
}

// An 8-bit grey PNG with the given rows (filter byte 0 added).
std::string GrayPng(uint32_t width, uint32_t height, uint8_t value = 100) {
  std::string raw;
  for (uint32_t y = 0; y < height; ++y) {
    raw.push_back('\0');
    raw.append(width, static_cast<char>(value));
  }
  return kPngSignature + Ihdr(width, height, 8, 0) + PngChunk("IDAT", Zlib(raw)) +
         PngChunk("IEND", "");
}

std::string JpegSegment(uint8_t marker, const std::string& payload) {
  const size_t length = payload.size() + 2;
  return std::string{'\xff', static_cast<char>(marker), static_cast<char>(length >> 8),
                     static_cast<char>(length)} +
         payload;
}

const std::string kSoi("\xff\xd8", 2);
const std::string kEoi("\xff\xd9", 2);

std::string Dqt() { return JpegSegment(0xdb, std::string(1, '\0') + std::string(64, '\x01')); }

// One grey component, 1x1 sampling, quantisation table 0; baseline (SOF0)
// unless told otherwise.
std::string Sof(uint16_t width, uint16_t height, uint8_t marker = 0xc0) {
  return JpegSegment(
      marker, std::string{8, static_cast<char>(height >> 8), static_cast<char>(height),
                          static_cast<char>(width >> 8), static_cast<char>(width), 1, 1, 0x11, 0});
}

// table_class 0 = DC, 1 = AC. counts[i]: codes of length i+1.
std::string Dht(int table_class, int id, const std::vector<uint8_t>& counts,
                const std::string& symbols) {
  std::string payload(1, static_cast<char>((table_class << 4) | id));
  for (uint8_t c : counts) payload.push_back(static_cast<char>(c));
  return JpegSegment(0xc4, payload + symbols);
}

// One code of length 1 for symbol 0: DC difference 0, or AC end of block.
std::string OneCodeDht(int table_class, int id) {
  std::vector<uint8_t> counts(16, 0);
  counts[0] = 1;
  return Dht(table_class, id, counts, std::string(1, '\0'));
}

std::string Sos(int dc_table, int ac_table) {
  return JpegSegment(0xda,
                     std::string{1, 1, static_cast<char>((dc_table << 4) | ac_table), 0, 63, 0});
}

// An 8x8 grey JPEG built by hand, every pixel 128: one block whose DC
// difference (code '0') and end of block (code '0') fit in one byte.
std::string HandMadeJpeg(uint16_t width = 8, uint16_t height = 8) {
  return kSoi + Dqt() + Sof(width, height) + OneCodeDht(0, 0) + OneCodeDht(1, 0) + Sos(0, 0) +
         std::string("\x3f", 1) + kEoi;
}

// --- Encoders for valid images, and the old decoder as reference ---------------

struct PngSpec {
  int width = 0;
  int height = 0;
  int color_type = PNG_COLOR_TYPE_GRAY;
  int bit_depth = 8;
  bool interlaced = false;
  std::vector<png_color> palette;
  std::vector<png_byte> palette_alpha;  // tRNS
};

PngSpec Png(int width, int height, int color_type = PNG_COLOR_TYPE_GRAY, int bit_depth = 8,
            bool interlaced = false) {
  PngSpec spec;
  spec.width = width;
  spec.height = height;
  spec.color_type = color_type;
  spec.bit_depth = bit_depth;
  spec.interlaced = interlaced;
  return spec;
}

PngSpec PalettePng(int width, int height, bool with_alpha) {
  PngSpec spec = Png(width, height, PNG_COLOR_TYPE_PALETTE);
  for (int i = 0; i < 37; ++i) {
    spec.palette.push_back({static_cast<png_byte>(i * 7), static_cast<png_byte>(255 - i * 5),
                            static_cast<png_byte>((i * 53) % 256)});
    if (with_alpha) spec.palette_alpha.push_back(static_cast<png_byte>(i * 6));
  }
  return spec;
}

void AppendPngBytes(png_structp png, png_bytep data, size_t length) {
  static_cast<std::string*>(png_get_io_ptr(png))->append(reinterpret_cast<char*>(data), length);
}
void FlushNothing(png_structp) {}

// No C++ object lives in this frame: libpng's errors longjmp into it.
bool WritePng(const PngSpec* spec, png_bytepp rows, std::string* out) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return false;
  }
  png_set_write_fn(png, out, AppendPngBytes, FlushNothing);
  png_set_IHDR(png, info, spec->width, spec->height, spec->bit_depth, spec->color_type,
               spec->interlaced ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (!spec->palette.empty()) {
    png_set_PLTE(png, info, spec->palette.data(), static_cast<int>(spec->palette.size()));
  }
  if (!spec->palette_alpha.empty()) {
    png_set_tRNS(png, info, spec->palette_alpha.data(),
                 static_cast<int>(spec->palette_alpha.size()), nullptr);
  }
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return true;
}

int Channels(int color_type) {
  switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
    case PNG_COLOR_TYPE_PALETTE:
      return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      return 2;
    case PNG_COLOR_TYPE_RGB:
      return 3;
    default:
      return 4;
  }
}

// A pattern with edges and gradients, different per channel; sample values
// use the full range of the bit depth (so 16-bit low bytes matter).
uint32_t Sample(int x, int y, int c, int bit_depth) {
  const uint32_t max = (1u << bit_depth) - 1;
  double v = 0.5 + 0.45 * std::sin(0.37 * x + 1.3 * c) * std::cos(0.23 * y - 0.7 * c);
  if ((x / 7 + y / 5 + c) % 3 == 0) v = 1.0 - v;
  return static_cast<uint32_t>(std::lround(v * max));
}

std::string EncodePng(const PngSpec& spec) {
  const int channels = Channels(spec.color_type);
  const size_t row_bytes = (static_cast<size_t>(spec.width) * channels * spec.bit_depth + 7) / 8;
  std::vector<png_byte> pixels(row_bytes * spec.height, 0);
  for (int y = 0; y < spec.height; ++y) {
    png_bytep row = pixels.data() + y * row_bytes;
    for (int x = 0; x < spec.width; ++x) {
      for (int c = 0; c < channels; ++c) {
        const size_t i = static_cast<size_t>(x) * channels + c;
        if (spec.color_type == PNG_COLOR_TYPE_PALETTE) {
          const uint32_t index = Sample(x, y, 0, 8) % spec.palette.size();
          row[i] = static_cast<png_byte>(index);
        } else if (spec.bit_depth == 16) {
          const uint32_t v = Sample(x, y, c, 16);
          row[2 * i] = static_cast<png_byte>(v >> 8);
          row[2 * i + 1] = static_cast<png_byte>(v);
        } else if (spec.bit_depth == 8) {
          row[i] = static_cast<png_byte>(Sample(x, y, c, 8));
        } else {  // grey below 8 bits, packed from the most significant bit
          const size_t bit = i * spec.bit_depth;
          row[bit / 8] |= static_cast<png_byte>(Sample(x, y, c, spec.bit_depth)
                                                << (8 - spec.bit_depth - bit % 8));
        }
      }
    }
  }
  std::vector<png_bytep> rows(spec.height);
  for (int y = 0; y < spec.height; ++y) rows[y] = pixels.data() + y * row_bytes;
  std::string out;
  EXPECT_TRUE(WritePng(&spec, rows.data(), &out));
  return out;
}

struct JpegSpec {
  int width = 0;
  int height = 0;
  J_COLOR_SPACE input = JCS_GRAYSCALE;  // JCS_GRAYSCALE, JCS_RGB or JCS_CMYK
  bool progressive = false;
  J_COLOR_SPACE stored = JCS_UNKNOWN;  // colour space in the file; default if unknown
};

JpegSpec Jpeg(int width, int height, J_COLOR_SPACE input = JCS_GRAYSCALE, bool progressive = false,
              J_COLOR_SPACE stored = JCS_UNKNOWN) {
  JpegSpec spec;
  spec.width = width;
  spec.height = height;
  spec.input = input;
  spec.progressive = progressive;
  spec.stored = stored;
  return spec;
}

// libjpeg's default error handler exits; the parameters here are fixed and
// valid, so an error is a bug in this file.
std::string EncodeJpeg(const JpegSpec& spec) {
  const int components = spec.input == JCS_GRAYSCALE ? 1 : spec.input == JCS_RGB ? 3 : 4;
  std::vector<JSAMPLE> pixels(static_cast<size_t>(spec.width) * spec.height * components);
  for (int y = 0; y < spec.height; ++y) {
    for (int x = 0; x < spec.width; ++x) {
      for (int c = 0; c < components; ++c) {
        pixels[(static_cast<size_t>(y) * spec.width + x) * components + c] =
            static_cast<JSAMPLE>(Sample(x, y, c, 8));
      }
    }
  }
  jpeg_compress_struct cinfo;
  jpeg_error_mgr error;
  cinfo.err = jpeg_std_error(&error);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = spec.width;
  cinfo.image_height = spec.height;
  cinfo.input_components = components;
  cinfo.in_color_space = spec.input;
  jpeg_set_defaults(&cinfo);
  if (spec.stored != JCS_UNKNOWN) jpeg_set_colorspace(&cinfo, spec.stored);
  jpeg_set_quality(&cinfo, 90, TRUE);
  if (spec.progressive) jpeg_simple_progression(&cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row =
        pixels.data() + static_cast<size_t>(cinfo.next_scanline) * spec.width * components;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buffer), size);
  std::free(buffer);
  return out;
}

// What DecodeImage computed before libpng and libjpeg: stb_image's luma,
// resized by stb_image_resize, scaled to [0,1].
std::vector<float> DecodedByStb(const std::string& bytes) {
  int width = 0, height = 0, channels = 0;
  stbi_uc* gray =
      stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()),
                            static_cast<int>(bytes.size()), &width, &height, &channels, 1);
  EXPECT_NE(gray, nullptr) << stbi_failure_reason();
  if (gray == nullptr) return {};
  std::vector<stbi_uc> resized(gray, gray + static_cast<size_t>(width) * height);
  if (width != kSide || height != kSide) {
    resized.resize(kSide * kSide);
    EXPECT_TRUE(stbir_resize_uint8(gray, width, height, 0, resized.data(), kSide, kSide, 0, 1));
  }
  stbi_image_free(gray);
  std::vector<float> out(kSide * kSide);
  for (int i = 0; i < kSide * kSide; ++i) out[i] = resized[i] / 255.0f;
  return out;
}

void ExpectSameAsBefore(const std::string& bytes) {
  absl::StatusOr<std::vector<float>> decoded = Decode(bytes);
  ASSERT_THAT(decoded, IsOk());
  const std::vector<float> before = DecodedByStb(bytes);
  ASSERT_EQ(decoded->size(), static_cast<size_t>(kSide * kSide));
  ASSERT_EQ(before.size(), decoded->size());
  float worst = 0;
  for (size_t i = 0; i < before.size(); ++i)
    worst = std::max(worst, std::fabs((*decoded)[i] - before[i]));
  EXPECT_LE(worst, 1.0f / 255 + 1e-6f) << "largest difference " << worst * 255 << "/255";
}

// --- Formats other than PNG and JPEG -------------------------------------------

// The fault that stopped the server: a PNM header declaring 4096x4096 with
// 16-bit samples and no pixel data (30 bytes).
TEST(ImageDecoderTest, PnmHeaderWithoutPixelsIsRefused) {
  const std::string pnm = "P6\n# 30 bytes\n4096 4096\n65535\n";
  ASSERT_EQ(pnm.size(), 30u);
  ExpectRefused(Decode(pnm), HasSubstr("PNG or JPEG"));
}

TEST(ImageDecoderTest, SixteenBitPnmDeclaringALargeImageIsRefused) {
  ExpectRefused(Decode("P5\n4000 3000\n65535\n" + std::string(64, '\x7f')),
                HasSubstr("PNG or JPEG"));
  ExpectRefused(Decode("P5 4096 4096 255\n"), HasSubstr("PNG or JPEG"));
}

TEST(ImageDecoderTest, ValidImagesOfOtherFormatsAreRefused) {
  // A 2x2 24-bit BMP and a 1x1 GIF, both of which stb_image decoded.
  std::string bmp = "BM" + std::string("\x46\0\0\0", 4) + std::string(4, '\0') +
                    std::string("\x36\0\0\0", 4) + std::string("\x28\0\0\0", 4) +
                    std::string("\x02\0\0\0\x02\0\0\0\x01\0\x18\0", 12) + std::string(4, '\0') +
                    std::string("\x10\0\0\0", 4) + std::string(16, '\0') + std::string(16, '\x80');
  ASSERT_EQ(bmp.size(), 70u);
  const std::string gif(
      "GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01"
      "\x00\x00\x02\x02\x44\x01\x00\x3b",
      35);
  const std::string pgm = "P5\n2 2\n255\n" + std::string(4, '\x40');
  for (const std::string& bytes : {bmp, gif, pgm}) {
    ExpectRefused(Decode(bytes), AllOf(HasSubstr("cannot decode"), HasSubstr("PNG or JPEG")));
  }
  // A PNG or JPEG signature cut short is not a signature.
  ExpectRefused(Decode(kPngSignature.substr(0, 7)), HasSubstr("PNG or JPEG"));
  ExpectRefused(Decode(kSoi), HasSubstr("PNG or JPEG"));
}

// --- PNG -----------------------------------------------------------------------

TEST(ImageDecoderTest, TruncatedPngIsRefusedAtEveryLength) {
  const std::string png = EncodePng(Png(40, 30, PNG_COLOR_TYPE_RGB));
  ASSERT_THAT(Decode(png), IsOk());
  for (size_t length = 8; length < png.size(); ++length) {
    SCOPED_TRACE(absl::StrCat(length, " of ", png.size(), " bytes"));
    ExpectRefused(Decode(png.substr(0, length)), HasSubstr("PNG"));
  }
  // Cut in the pixel data: the message says so.
  ExpectRefused(Decode(png.substr(0, png.size() / 2)), HasSubstr("truncated"));
  // A zlib stream cut short, in a well-formed IDAT and followed by IEND.
  std::string raw;
  for (int y = 0; y < 30; ++y) {
    raw.push_back('\0');
    for (int x = 0; x < 30; ++x) raw.push_back(static_cast<char>(Sample(x, y, 0, 8)));
  }
  const std::string zlib = Zlib(raw);
  for (size_t length : {size_t{2}, zlib.size() / 3, zlib.size() / 2, zlib.size() - 5}) {
    SCOPED_TRACE(absl::StrCat("zlib stream cut to ", length, " of ", zlib.size(), " bytes"));
    ExpectRefused(Decode(kPngSignature + Ihdr(30, 30, 8, 0) +
                         PngChunk("IDAT", zlib.substr(0, length)) + PngChunk("IEND", "")),
                  HasSubstr("PNG"));
  }
}

TEST(ImageDecoderTest, CorruptPngIsRefused) {
  const std::string png = GrayPng(28, 28);
  ASSERT_THAT(Decode(png), IsOk());
  // An IDAT of bytes that are no zlib stream, with a correct CRC.
  ExpectRefused(Decode(kPngSignature + Ihdr(28, 28, 8, 0) +
                       PngChunk("IDAT", std::string(40, '\x5a')) + PngChunk("IEND", "")),
                HasSubstr("PNG"));
  // A wrong CRC on IHDR.
  std::string bad_crc = png;
  bad_crc[8 + 8 + 13] ^= 0x01;
  ExpectRefused(Decode(bad_crc), HasSubstr("CRC"));
  // Too few rows in a complete zlib stream.
  std::string raw;
  for (int y = 0; y < 27; ++y) raw += '\0' + std::string(28, '\x10');
  ExpectRefused(Decode(kPngSignature + Ihdr(28, 28, 8, 0) + PngChunk("IDAT", Zlib(raw)) +
                       PngChunk("IEND", "")),
                HasSubstr("image data"));
}

TEST(ImageDecoderTest, PngCriticalChunkWithNonUtf8TypeGivesUtf8Message) {
  for (const std::string& type :
       {std::string("\xc0XYZ"), std::string("\xff\xfe\xfd\xfc"), std::string("A\x80\x00Z", 4)}) {
    const std::string png = kPngSignature + Ihdr(2, 2, 8, 0) + PngChunk(type, "payload") +
                            PngChunk("IDAT", Zlib(std::string("\0\1\2\0\3\4", 6))) +
                            PngChunk("IEND", "");
    ExpectRefused(Decode(png), HasSubstr("PNG"));
  }
  // Well-formed but unknown critical chunks are refused too.
  ExpectRefused(
      Decode(kPngSignature + Ihdr(2, 2, 8, 0) + PngChunk("ABCD", "x") +
             PngChunk("IDAT", Zlib(std::string("\0\1\2\0\3\4", 6))) + PngChunk("IEND", "")),
      HasSubstr("critical"));
}

TEST(ImageDecoderTest, PngBeyondTheSideLimitIsRefusedNamingIt) {
  for (uint32_t side : {65535u, 20000u, 4097u, 0x7fffffffu}) {
    SCOPED_TRACE(side);
    const std::string png = kPngSignature + Ihdr(side, side, 8, 2) +
                            PngChunk("IDAT", Zlib(std::string(100, '\0'))) + PngChunk("IEND", "");
    ExpectRefused(Decode(png), AllOf(HasSubstr("within 1..4096"), HasSubstr(absl::StrCat(side))));
  }
  ExpectRefused(Decode(kPngSignature + Ihdr(1, 5000, 8, 0) + PngChunk("IEND", "")),
                HasSubstr("within 1..4096"));
  // Zero is no size.
  ExpectRefused(Decode(kPngSignature + Ihdr(0, 10, 8, 0) + PngChunk("IEND", "")),
                HasSubstr("within 1..4096"));
}

// The 130 KB PNG that decoded to 4096x4096 RGBA 16-bit (128 MiB, about half a
// second) is refused by the pixel budget from its header: the refusal comes
// before any pixel (the IDAT of the second one is not even zlib).
TEST(ImageDecoderTest, PngBeyondThePixelBudgetIsRefusedBeforeDecoding) {
  const std::string bomb = ZeroPng(4096, 4096, 16, PNG_COLOR_TYPE_RGB_ALPHA, 4);
  EXPECT_LT(bomb.size(), 200u * 1024);
  ExpectRefused(Decode(bomb), AllOf(HasSubstr("4096x4096"), HasSubstr("pixels")));
  ExpectRefused(Decode(kPngSignature + Ihdr(4096, 1025, 8, 0) +
                       PngChunk("IDAT", std::string(10, '\x5a')) + PngChunk("IEND", "")),
                AllOf(HasSubstr("1025x4096"), HasSubstr("pixels"), HasSubstr("4194304")));
}

TEST(ImageDecoderTest, PngAtThePixelBudgetIsDecoded) {
  EXPECT_THAT(Decode(GrayPng(2048, 2048, 200)), IsOk());
  EXPECT_THAT(Decode(GrayPng(4096, 1024, 200)), IsOk());
  absl::StatusOr<std::vector<float>> decoded = Decode(GrayPng(1, 4096, 51));
  ASSERT_THAT(decoded, IsOk());
  for (float v : *decoded) EXPECT_NEAR(v, 51 / 255.0f, 0.5f / 255);
}

TEST(ImageDecoderTest, ValidPngsDecodeAsBefore) {
  const struct {
    const char* name;
    PngSpec spec;
  } cases[] = {
      {"gray 28x28", Png(28, 28)},
      {"gray 61x45", Png(61, 45)},
      {"gray 1-bit", Png(50, 33, PNG_COLOR_TYPE_GRAY, 1)},
      {"gray 2-bit", Png(29, 30, PNG_COLOR_TYPE_GRAY, 2)},
      {"gray 4-bit", Png(33, 29, PNG_COLOR_TYPE_GRAY, 4)},
      {"gray 16-bit", Png(28, 28, PNG_COLOR_TYPE_GRAY, 16)},
      {"gray+alpha", Png(40, 40, PNG_COLOR_TYPE_GRAY_ALPHA)},
      {"gray+alpha 16-bit", Png(28, 28, PNG_COLOR_TYPE_GRAY_ALPHA, 16)},
      {"rgb 28x28", Png(28, 28, PNG_COLOR_TYPE_RGB)},
      {"rgb 100x80", Png(100, 80, PNG_COLOR_TYPE_RGB)},
      {"rgba", Png(57, 31, PNG_COLOR_TYPE_RGB_ALPHA)},
      {"rgb 16-bit", Png(28, 28, PNG_COLOR_TYPE_RGB, 16)},
      {"rgba 16-bit", Png(45, 52, PNG_COLOR_TYPE_RGB_ALPHA, 16)},
      {"palette", PalettePng(28, 28, false)},
      {"palette + tRNS", PalettePng(70, 20, true)},
      {"interlaced gray", Png(28, 28, PNG_COLOR_TYPE_GRAY, 8, true)},
      {"interlaced rgb", Png(77, 63, PNG_COLOR_TYPE_RGB, 8, true)},
      {"interlaced rgba 16-bit", Png(30, 29, PNG_COLOR_TYPE_RGB_ALPHA, 16, true)},
      {"interlaced palette",
       [] {
         PngSpec spec = PalettePng(31, 17, true);
         spec.interlaced = true;
         return spec;
       }()},
      {"1x1", Png(1, 1, PNG_COLOR_TYPE_RGB)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    ExpectSameAsBefore(EncodePng(c.spec));
  }
}

TEST(ImageDecoderTest, PngAncillaryChunksDoNotMatter) {
  // A text chunk, and a zTXt whose payload is not zlib: both skipped.
  const std::string png = GrayPng(28, 28, 77);
  const std::string with_chunks =
      png.substr(0, 8 + 25) + PngChunk("tEXt", std::string("Comment\0hi", 10)) +
      PngChunk("zTXt", std::string("k\0\0garbage", 10)) + png.substr(8 + 25);
  absl::StatusOr<std::vector<float>> decoded = Decode(with_chunks);
  ASSERT_THAT(decoded, IsOk());
  EXPECT_NEAR((*decoded)[0], 77 / 255.0f, 1e-6f);
}

// --- JPEG ----------------------------------------------------------------------

TEST(ImageDecoderTest, HandMadeJpegDecodes) {
  absl::StatusOr<std::vector<float>> decoded = Decode(HandMadeJpeg());
  ASSERT_THAT(decoded, IsOk());
  for (float v : *decoded) EXPECT_NEAR(v, 128 / 255.0f, 1.0f / 255);
}

TEST(ImageDecoderTest, JpegHuffmanTableWithMoreThan256CodesIsRefused) {
  // 16 lengths x 32 codes = 512 symbols, all present in the segment.
  const std::string dht = Dht(0, 0, std::vector<uint8_t>(16, 32), std::string(512, '\0'));
  ExpectRefused(Decode(kSoi + Dqt() + Sof(8, 8) + dht + OneCodeDht(1, 0) + Sos(0, 0) +
                       std::string("\x3f", 1) + kEoi),
                AllOf(HasSubstr("JPEG"), HasSubstr("Huffman")));
  // The same past 256 with every count 255.
  const std::string huge = Dht(1, 0, std::vector<uint8_t>(16, 255), std::string(4080, '\0'));
  ExpectRefused(Decode(kSoi + Dqt() + Sof(8, 8) + OneCodeDht(0, 0) + huge + Sos(0, 0) +
                       std::string("\x3f", 1) + kEoi),
                HasSubstr("JPEG"));
}

TEST(ImageDecoderTest, JpegScanWithUndefinedAcTableIsRefused) {
  // Tables 0 and 1 get libjpeg's standard tables when absent (Motion JPEG
  // leaves them out); 2 and 3 have no default.
  for (int table : {2, 3}) {
    SCOPED_TRACE(table);
    ExpectRefused(Decode(kSoi + Dqt() + Sof(8, 8) + OneCodeDht(0, 0) + OneCodeDht(1, 0) +
                         Sos(0, table) + std::string("\x3f", 1) + kEoi),
                  AllOf(HasSubstr("JPEG"), HasSubstr("not defined")));
  }
  // An undefined DC table, and no quantisation table.
  ExpectRefused(Decode(kSoi + Dqt() + Sof(8, 8) + OneCodeDht(0, 0) + OneCodeDht(1, 0) + Sos(3, 0) +
                       std::string("\x3f", 1) + kEoi),
                HasSubstr("JPEG"));
  ExpectRefused(Decode(kSoi + Sof(8, 8) + OneCodeDht(0, 0) + OneCodeDht(1, 0) + Sos(0, 0) +
                       std::string("\x3f", 1) + kEoi),
                HasSubstr("JPEG"));
}

TEST(ImageDecoderTest, TruncatedJpegIsRefusedAtEveryLength) {
  for (bool progressive : {false, true}) {
    SCOPED_TRACE(progressive ? "progressive" : "baseline");
    const std::string jpeg = EncodeJpeg(Jpeg(40, 32, JCS_RGB, progressive));
    ASSERT_THAT(Decode(jpeg), IsOk());
    for (size_t length = 3; length < jpeg.size(); ++length) {
      SCOPED_TRACE(absl::StrCat(length, " of ", jpeg.size(), " bytes"));
      ExpectRefused(Decode(jpeg.substr(0, length)), HasSubstr("JPEG"));
    }
    ExpectRefused(Decode(jpeg.substr(0, jpeg.size() * 2 / 3)), HasSubstr("Premature end"));
  }
  // Cut in the entropy-coded data and closed again with EOI: libjpeg would
  // fill the rest with grey, stb_image decoded it from zeros.
  const std::string jpeg = EncodeJpeg(Jpeg(40, 32, JCS_RGB));
  const size_t scan = jpeg.find("\xff\xda");
  ASSERT_NE(scan, std::string::npos);
  const size_t data = scan + 2 + 12;  // SOS segment of 3 components
  for (size_t length = data + 1; length < jpeg.size() - 2; ++length) {
    SCOPED_TRACE(absl::StrCat("entropy-coded data cut to ", length - data, " of ",
                              jpeg.size() - 2 - data, " bytes"));
    ExpectRefused(Decode(jpeg.substr(0, length) + kEoi), HasSubstr("JPEG"));
  }
  // The hand-made JPEG without its entropy-coded byte.
  const std::string hand = HandMadeJpeg();
  ExpectRefused(Decode(hand.substr(0, hand.size() - 3) + kEoi), HasSubstr("JPEG"));
}

TEST(ImageDecoderTest, CorruptJpegDataIsRefused) {
  const std::string jpeg = EncodeJpeg(Jpeg(64, 48, JCS_RGB));
  // A restart marker in the middle of the entropy-coded data that has none.
  const size_t sos = jpeg.find("\xff\xda");
  ASSERT_NE(sos, std::string::npos);
  std::string corrupt = jpeg;
  const size_t middle = sos + (jpeg.size() - sos) / 2;
  corrupt.replace(middle, 2, "\xff\xd3");
  ExpectRefused(Decode(corrupt), HasSubstr("JPEG"));
  // Bytes after the image data before EOI.
  ExpectRefused(Decode(jpeg.substr(0, jpeg.size() - 2) + "junk" + kEoi), HasSubstr("JPEG"));
}

TEST(ImageDecoderTest, JpegBeyondTheLimitsIsRefusedFromItsHeader) {
  const std::string tail =
      OneCodeDht(0, 0) + OneCodeDht(1, 0) + Sos(0, 0) + std::string("\x3f", 1) + kEoi;
  ExpectRefused(Decode(kSoi + Dqt() + Sof(8000, 8000) + tail), HasSubstr("within 1..4096"));
  ExpectRefused(Decode(kSoi + Dqt() + Sof(4097, 8) + tail), HasSubstr("within 1..4096"));
  ExpectRefused(Decode(kSoi + Dqt() + Sof(4096, 4096) + tail),
                AllOf(HasSubstr("4096x4096"), HasSubstr("pixels")));
  ExpectRefused(Decode(kSoi + Dqt() + Sof(65535, 65535) + tail), HasSubstr("JPEG"));
  ExpectRefused(Decode(kSoi + Dqt() + Sof(8, 0) + tail), HasSubstr("JPEG"));
}

TEST(ImageDecoderTest, JpegWithTooManyScansIsRefused) {
  // A progressive grey image whose DC scan is followed by many AC scans of
  // one coefficient each (each a valid, empty refinement of band k..k).
  // A progressive (SOF2) grey 8x8 image: a DC scan, then a first scan of each
  // AC coefficient alone at Al=1 (64 scans, the limit), then refinement scans
  // (Ah=1, Al=0). Each scan's one block is a single '0' code: DC difference
  // 0, or end of band.
  auto scan = [](int first, int last, int ah_al) {
    return JpegSegment(0xda, std::string{1, 1, 0x00, static_cast<char>(first),
                                         static_cast<char>(last), static_cast<char>(ah_al)}) +
           std::string("\x7f", 1);
  };
  std::string jpeg = kSoi + Dqt() + Sof(8, 8, 0xc2) + OneCodeDht(0, 0) + OneCodeDht(1, 0);
  jpeg += scan(0, 0, 0x00);
  for (int k = 1; k <= 63; ++k) jpeg += scan(k, k, 0x01);
  ASSERT_THAT(Decode(jpeg + kEoi), IsOk());
  for (int k = 1; k <= 3; ++k) jpeg += scan(k, k, 0x10);
  ExpectRefused(Decode(jpeg + kEoi), HasSubstr("scans"));
}

TEST(ImageDecoderTest, ValidJpegsDecodeAsBefore) {
  const struct {
    const char* name;
    JpegSpec spec;
  } cases[] = {
      {"gray 28x28", Jpeg(28, 28)},
      {"gray 64x48", Jpeg(64, 48)},
      {"colour 28x28", Jpeg(28, 28, JCS_RGB)},
      {"colour 100x75", Jpeg(100, 75, JCS_RGB)},
      {"colour stored as RGB", Jpeg(40, 40, JCS_RGB, false, JCS_RGB)},
      {"progressive gray", Jpeg(28, 28, JCS_GRAYSCALE, true)},
      {"progressive colour 28x28", Jpeg(28, 28, JCS_RGB, true)},
      {"progressive colour 90x70", Jpeg(90, 70, JCS_RGB, true)},
      {"CMYK", Jpeg(36, 30, JCS_CMYK)},
      {"YCCK", Jpeg(36, 30, JCS_CMYK, false, JCS_YCCK)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    ExpectSameAsBefore(EncodeJpeg(c.spec));
  }
}

TEST(ImageDecoderTest, RawTensorsKeepTheirLimits) {
  // The pixel budget is for encoded images: a raw tensor does not amplify.
  v1::Image image;
  image.set_raw_uint8(std::string(4096 * 1100, '\x20'));
  image.set_height(1100);
  image.set_width(4096);
  EXPECT_THAT(DecodeImage(image, kGray), IsOk());
  image.set_height(4097);
  EXPECT_THAT(DecodeImage(image, kGray),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("within 1..4096")));
}

// --- The input spec ------------------------------------------------------------

// An 8-bit grey PNG whose pixel (x, y) is value(x, y).
template <typename Value>
std::string GrayPngOf(uint32_t width, uint32_t height, Value value) {
  std::string raw;
  for (uint32_t y = 0; y < height; ++y) {
    raw.push_back('\0');
    for (uint32_t x = 0; x < width; ++x) raw.push_back(static_cast<char>(value(x, y)));
  }
  return kPngSignature + Ihdr(width, height, 8, 0) + PngChunk("IDAT", Zlib(raw)) +
         PngChunk("IEND", "");
}

v1::InputSpec Spec(int channels, int height, int width,
                   v1::InputSpec::Resize resize = v1::InputSpec::RESIZE) {
  v1::InputSpec spec = MakeInputSpec(channels, height, width, 0.0f, 1.0f);
  spec.set_resize(resize);
  return spec;
}

// Sample (x, y) of channel c of a decoded CHW tensor of `spec`'s shape.
float At(const std::vector<float>& chw, const v1::InputSpec& spec, int c, int x, int y) {
  return chw[(static_cast<size_t>(c) * spec.height() + y) * spec.width() + x];
}

float LargestDifference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst, std::fabs(a[i] - b[i]));
  }
  return worst;
}

TEST(InputSpecDecodeTest, RgbModelGivenGrayscalePngGetsItsGreyInEveryChannel) {
  const std::string png =
      GrayPngOf(32, 32, [](uint32_t x, uint32_t y) { return (x * 7 + y * 3) % 256; });
  absl::StatusOr<std::vector<float>> rgb = Decode(png, kRgb32);
  ASSERT_THAT(rgb, IsOk());
  ASSERT_EQ(rgb->size(), 3u * 32 * 32);
  for (int y = 0; y < 32; ++y) {
    for (int x = 0; x < 32; ++x) {
      for (int c = 0; c < 3; ++c) {
        ASSERT_EQ(At(*rgb, kRgb32, c, x, y), ((x * 7 + y * 3) % 256) / 255.0f) << x << "," << y;
      }
    }
  }
  // Resized, the three channels are still the grey image's.
  const v1::InputSpec small = Spec(3, 20, 24);
  absl::StatusOr<std::vector<float>> resized_rgb = Decode(png, small);
  absl::StatusOr<std::vector<float>> resized_gray = Decode(png, Spec(1, 20, 24));
  ASSERT_THAT(resized_rgb, IsOk());
  ASSERT_THAT(resized_gray, IsOk());
  for (int c = 0; c < 3; ++c) {
    const std::vector<float> plane(resized_rgb->begin() + c * 20 * 24,
                                   resized_rgb->begin() + (c + 1) * 20 * 24);
    EXPECT_EQ(plane, *resized_gray) << "channel " << c;
  }
}

// Every PNG colour type keeps its colour for an RGB model: 16-bit samples
// give their high byte, a palette its colours, grey is replicated, alpha is
// dropped.
TEST(InputSpecDecodeTest, RgbModelGivenColourPngsGetsTheirColour) {
  const PngSpec palette = PalettePng(32, 32, true);
  const struct {
    const char* name;
    PngSpec spec;
  } cases[] = {
      {"rgb", Png(32, 32, PNG_COLOR_TYPE_RGB)},
      {"rgba", Png(32, 32, PNG_COLOR_TYPE_RGB_ALPHA)},
      {"rgb 16-bit", Png(32, 32, PNG_COLOR_TYPE_RGB, 16)},
      {"interlaced rgba 16-bit", Png(32, 32, PNG_COLOR_TYPE_RGB_ALPHA, 16, true)},
      {"gray+alpha", Png(32, 32, PNG_COLOR_TYPE_GRAY_ALPHA)},
      {"palette + tRNS", palette},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.name);
    absl::StatusOr<std::vector<float>> rgb = Decode(EncodePng(k.spec), kRgb32);
    ASSERT_THAT(rgb, IsOk());
    const bool colour = Channels(k.spec.color_type) >= 3;
    for (int y = 0; y < 32; ++y) {
      for (int x = 0; x < 32; ++x) {
        for (int c = 0; c < 3; ++c) {
          uint32_t expected =
              Sample(x, y, colour ? c : 0, k.spec.bit_depth) >> (k.spec.bit_depth - 8);
          if (k.spec.color_type == PNG_COLOR_TYPE_PALETTE) {
            const png_color& p = palette.palette[Sample(x, y, 0, 8) % palette.palette.size()];
            expected = c == 0 ? p.red : c == 1 ? p.green : p.blue;
          }
          ASSERT_EQ(At(*rgb, kRgb32, c, x, y), expected / 255.0f) << x << "," << y << "," << c;
        }
      }
    }
  }
}

// stb_image's RGB at the image's own size, CHW in [0,1].
std::vector<float> RgbByStb(const std::string& bytes) {
  int width = 0, height = 0, channels = 0;
  stbi_uc* rgb =
      stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()),
                            static_cast<int>(bytes.size()), &width, &height, &channels, 3);
  EXPECT_NE(rgb, nullptr) << stbi_failure_reason();
  if (rgb == nullptr) return {};
  std::vector<float> out(static_cast<size_t>(3) * width * height);
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < width * height; ++i) out[c * width * height + i] = rgb[3 * i + c] / 255.0f;
  }
  stbi_image_free(rgb);
  return out;
}

// Colour JPEGs for an RGB model: what stb_image gives as RGB, up to the two
// decoders' different chroma upsampling and colour conversion rounding (at
// most 3/255 on these images).
TEST(InputSpecDecodeTest, RgbModelGivenColourJpegsGetsTheirColour) {
  const struct {
    const char* name;
    JpegSpec spec;
  } cases[] = {
      {"colour", Jpeg(32, 32, JCS_RGB)},
      {"progressive colour", Jpeg(32, 32, JCS_RGB, true)},
      {"colour stored as RGB", Jpeg(32, 32, JCS_RGB, false, JCS_RGB)},
      {"CMYK", Jpeg(32, 32, JCS_CMYK)},
      {"YCCK", Jpeg(32, 32, JCS_CMYK, false, JCS_YCCK)},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(k.name);
    const std::string jpeg = EncodeJpeg(k.spec);
    absl::StatusOr<std::vector<float>> rgb = Decode(jpeg, kRgb32);
    ASSERT_THAT(rgb, IsOk());
    const float worst = LargestDifference(*rgb, RgbByStb(jpeg));
    EXPECT_LE(worst, 3.0f / 255 + 1e-6f) << "largest difference " << worst * 255 << "/255";
  }
  // A grey JPEG: its grey in every channel.
  absl::StatusOr<std::vector<float>> grey = Decode(EncodeJpeg(Jpeg(32, 32)), Spec(1, 32, 32));
  absl::StatusOr<std::vector<float>> rgb = Decode(EncodeJpeg(Jpeg(32, 32)), kRgb32);
  ASSERT_THAT(grey, IsOk());
  ASSERT_THAT(rgb, IsOk());
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(std::vector<float>(rgb->begin() + c * 32 * 32, rgb->begin() + (c + 1) * 32 * 32),
              *grey);
  }
}

// A grayscale model given an RGB JPEG gets its luma: what stb_image's luma
// gave (ValidJpegsDecodeAsBefore has every colour space), and close to the
// BT.601 luma of the RGB an RGB model gets.
TEST(InputSpecDecodeTest, GrayscaleModelGivenRgbJpegGetsLuma) {
  const std::string jpeg = EncodeJpeg(Jpeg(32, 32, JCS_RGB));
  ExpectSameAsBefore(jpeg);
  absl::StatusOr<std::vector<float>> luma = Decode(jpeg, Spec(1, 32, 32));
  absl::StatusOr<std::vector<float>> rgb = Decode(jpeg, kRgb32);
  ASSERT_THAT(luma, IsOk());
  ASSERT_THAT(rgb, IsOk());
  ASSERT_EQ(luma->size(), 32u * 32);
  std::vector<float> from_rgb(32 * 32);
  for (size_t i = 0; i < from_rgb.size(); ++i) {
    from_rgb[i] = 0.299f * (*rgb)[i] + 0.587f * (*rgb)[1024 + i] + 0.114f * (*rgb)[2048 + i];
  }
  EXPECT_LE(LargestDifference(*luma, from_rgb), 3.0f / 255);
  // And the same for an RGB PNG, exactly in integer weights.
  const std::string png = EncodePng(Png(32, 32, PNG_COLOR_TYPE_RGB));
  luma = Decode(png, Spec(1, 32, 32));
  ASSERT_THAT(luma, IsOk());
  for (int i = 0; i < 32 * 32; ++i) {
    const int x = i % 32, y = i / 32;
    const uint32_t l =
        (Sample(x, y, 0, 8) * 77 + Sample(x, y, 1, 8) * 150 + Sample(x, y, 2, 8) * 29) >> 8;
    ASSERT_EQ((*luma)[i], l / 255.0f) << i;
  }
}

// 64x32, white in the middle half of its width (x in 16..47), black on both
// sides; made 16x16.
const std::string& WideBandPng() {
  static const std::string png =
      GrayPngOf(64, 32, [](uint32_t x, uint32_t) { return x >= 16 && x < 48 ? 255 : 0; });
  return png;
}

TEST(InputSpecDecodeTest, ResizeScalesTheWholeImage) {
  const v1::InputSpec spec = Spec(1, 16, 16, v1::InputSpec::RESIZE);
  absl::StatusOr<std::vector<float>> out = Decode(WideBandPng(), spec);
  ASSERT_THAT(out, IsOk());
  // Squeezed 4:1 horizontally: columns 0-1 and 14-15 black, 6-9 white (the
  // filter blurs the 2 columns next to each edge).
  for (int y = 0; y < 16; ++y) {
    for (int x : {0, 1, 14, 15}) EXPECT_NEAR(At(*out, spec, 0, x, y), 0.0f, 1.0f / 255) << x;
    for (int x : {6, 7, 8, 9}) EXPECT_NEAR(At(*out, spec, 0, x, y), 1.0f, 1.0f / 255) << x;
  }
}

TEST(InputSpecDecodeTest, CenterCropScalesTheShorterSideAndKeepsTheCentre) {
  const v1::InputSpec spec = Spec(1, 16, 16, v1::InputSpec::RESIZE_CENTER_CROP);
  absl::StatusOr<std::vector<float>> out = Decode(WideBandPng(), spec);
  ASSERT_THAT(out, IsOk());
  // Height 32 -> 16 fixes the scale (1/2): the width becomes 32, and its
  // centre 16 columns are the white band, all of it. Only the outermost
  // columns see a little of the black beyond the band through the filter.
  for (int y = 0; y < 16; ++y) {
    for (int x = 2; x < 14; ++x) EXPECT_NEAR(At(*out, spec, 0, x, y), 1.0f, 1.0f / 255) << x;
    for (int x : {0, 15}) {
      EXPECT_GT(At(*out, spec, 0, x, y), 0.5f) << x;
      EXPECT_LT(At(*out, spec, 0, x, y), 1.0f) << x;
    }
  }
  // The same band across a tall image: crops rows instead.
  const std::string tall =
      GrayPngOf(32, 64, [](uint32_t, uint32_t y) { return y >= 16 && y < 48 ? 255 : 0; });
  out = Decode(tall, spec);
  ASSERT_THAT(out, IsOk());
  for (int y = 2; y < 14; ++y) EXPECT_NEAR(At(*out, spec, 0, 5, y), 1.0f, 1.0f / 255) << y;
}

TEST(InputSpecDecodeTest, CenterCropOfTheTargetsAspectRatioIsAResize) {
  const std::string png = EncodePng(Png(40, 30, PNG_COLOR_TYPE_RGB));
  const v1::InputSpec crop = Spec(3, 12, 16, v1::InputSpec::RESIZE_CENTER_CROP);
  const v1::InputSpec resize = Spec(3, 12, 16, v1::InputSpec::RESIZE);
  absl::StatusOr<std::vector<float>> cropped = Decode(png, crop);
  absl::StatusOr<std::vector<float>> resized = Decode(png, resize);
  ASSERT_THAT(cropped, IsOk());
  ASSERT_THAT(resized, IsOk());
  EXPECT_EQ(*cropped, *resized);
  // At the model's size neither policy touches a pixel.
  const v1::InputSpec same = Spec(3, 30, 40, v1::InputSpec::RESIZE_CENTER_CROP);
  cropped = Decode(png, same);
  ASSERT_THAT(cropped, IsOk());
  EXPECT_EQ(At(*cropped, same, 2, 7, 5), Sample(7, 5, 2, 8) / 255.0f);
}

std::string FloatBytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

TEST(InputSpecDecodeTest, ThreeChannelRawTensorsArePlanes) {
  const v1::InputSpec spec = Spec(3, 4, 5);
  std::string bytes;
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 20; ++i) bytes.push_back(static_cast<char>(c * 80 + i));
  }
  v1::Image image;
  image.set_raw_uint8(bytes);
  image.set_channels(3);
  image.set_height(4);
  image.set_width(5);
  absl::StatusOr<std::vector<float>> out = DecodeImage(image, spec);
  ASSERT_THAT(out, IsOk());
  ASSERT_EQ(out->size(), 60u);
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < 20; ++i) EXPECT_EQ((*out)[c * 20 + i], (c * 80 + i) / 255.0f);
  }
  // float32, height and width left to the model's.
  std::vector<float> values(60);
  for (int i = 0; i < 60; ++i) values[i] = i / 60.0f;
  image.set_raw_float32(FloatBytes(values));
  image.clear_height();
  image.clear_width();
  out = DecodeImage(image, spec);
  ASSERT_THAT(out, IsOk());
  EXPECT_EQ(*out, values);
  // Another size is resized plane by plane, each keeping its own value.
  image.set_raw_uint8(std::string(64, '\x10') + std::string(64, '\x80') + std::string(64, '\xf0'));
  image.set_height(8);
  image.set_width(8);
  out = DecodeImage(image, spec);
  ASSERT_THAT(out, IsOk());
  for (int i = 0; i < 60; ++i)
    EXPECT_EQ((*out)[i], (i < 20 ? 0x10 : i < 40 ? 0x80 : 0xf0) / 255.0f);
}

TEST(InputSpecDecodeTest, RawTensorsOfTheWrongShapeAreRefusedNamingBothShapes) {
  v1::Image image;
  // One channel (channels unset) for an RGB model.
  image.set_raw_uint8(std::string(32 * 32, '\x10'));
  image.set_height(32);
  image.set_width(32);
  ExpectRefused(DecodeImage(image, kRgb32), AllOf(HasSubstr("1x32x32"), HasSubstr("3x32x32")));
  image.set_raw_float32(FloatBytes(std::vector<float>(32 * 32, 0.5f)));
  ExpectRefused(DecodeImage(image, kRgb32), AllOf(HasSubstr("1x32x32"), HasSubstr("3x32x32")));
  // Three channels for a grayscale model.
  image.set_raw_uint8(std::string(3 * 28 * 28, '\x10'));
  image.set_channels(3);
  image.set_height(28);
  image.set_width(28);
  ExpectRefused(DecodeImage(image, kGray), AllOf(HasSubstr("3x28x28"), HasSubstr("1x28x28")));
  // Neither 1 nor 3 channels.
  for (int channels : {2, 4, -1}) {
    image.set_channels(channels);
    ExpectRefused(DecodeImage(image, kGray), HasSubstr("must be 1 (grayscale) or 3 (RGB)"));
  }
  // Bytes that are not channels x height x width, either type.
  image.set_channels(3);
  image.set_height(32);
  image.set_width(32);
  image.set_raw_uint8(std::string(3 * 32 * 32 - 1, '\x10'));
  ExpectRefused(DecodeImage(image, kRgb32), AllOf(HasSubstr("3x32x32"), HasSubstr("3072")));
  image.set_raw_float32(FloatBytes(std::vector<float>(32 * 32, 0.5f)));
  ExpectRefused(DecodeImage(image, kRgb32), AllOf(HasSubstr("3x32x32"), HasSubstr("expected")));
}

}  // namespace
}  // namespace hapi
