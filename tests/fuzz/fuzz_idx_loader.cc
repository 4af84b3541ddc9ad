// The IDX (Fashion-MNIST) readers, ReadIdxImages and ReadIdxLabels, on files
// in a private temporary directory (they read paths, through zlib's gzread,
// which also passes plain files through).
//
// Input layout:
//   byte 0     flags: bit 0 gzips both files (so that mutations reach the IDX
//              headers inside a gzip stream); bit 1 then cuts the last
//              1-16 bytes (byte 1 & 15) off each gzip stream
//   byte 1     label count expected when the images file is refused
//   bytes 2-3  big-endian length of the images file's part of the rest
//   rest       the images file's bytes, then the labels file's bytes
//
// Checks: every file is either refused (DATA_LOSS, printable message naming
// the file) or read as the header promises: 784 pixels per image, one label
// in 0..9 per image.
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/fashion_mnist.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

// One directory per process (libFuzzer's -jobs run several), removed at exit;
// in $TMPDIR, else in memory (/dev/shm) when there is one: two files are
// written per input. Never destroyed: the exit handler needs it.
const std::string& WorkDir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string base = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    if ((tmp == nullptr || *tmp == '\0') && std::filesystem::is_directory("/dev/shm")) {
      base = "/dev/shm";
    }
    auto* path = new std::string(base + "/hapi-fuzz-idx-XXXXXX");
    HAPI_FUZZ_CHECK(mkdtemp(path->data()) != nullptr);
    std::atexit([] { std::filesystem::remove_all(WorkDir()); });
    return path;
  }();
  return *dir;
}

std::string Gzip(const std::string& data) {
  z_stream z{};
  HAPI_FUZZ_CHECK(deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) ==
                  Z_OK);
  std::string out(deflateBound(&z, data.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  HAPI_FUZZ_CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  HAPI_FUZZ_CHECK(f != nullptr);
  HAPI_FUZZ_CHECK(std::fwrite(contents.data(), 1, contents.size(), f) == contents.size());
  HAPI_FUZZ_CHECK(std::fclose(f) == 0);
}

void CheckRefused(const absl::Status& status, const std::string& path) {
  hapi::fuzz::CheckRefusal(status, absl::StatusCode::kDataLoss);
  HAPI_FUZZ_CHECK(status.message().find(path) != absl::string_view::npos);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const bool gzip = data[0] & 1, truncate = data[0] & 2;
  const size_t fallback_labels = data[1];
  const std::string rest(reinterpret_cast<const char*>(data) + 4, size - 4);
  const size_t split = std::min<size_t>((size_t{data[2]} << 8) | data[3], rest.size());
  std::string files[2] = {rest.substr(0, split), rest.substr(split)};
  if (gzip) {
    for (std::string& f : files) {
      f = Gzip(f);
      if (truncate) f.resize(f.size() - std::min<size_t>(f.size(), 1 + (data[1] & 15)));
    }
  }
  const std::string images_path = WorkDir() + "/images-idx3-ubyte.gz";
  const std::string labels_path = WorkDir() + "/labels-idx1-ubyte.gz";
  WriteFile(images_path, files[0]);
  WriteFile(labels_path, files[1]);

  absl::StatusOr<hapi::ImageSet> set = hapi::ReadIdxImages(images_path);
  if (set.ok()) {
    HAPI_FUZZ_CHECK(set->pixels.size() == set->labels.size() * hapi::kImagePixels);
  } else {
    CheckRefused(set.status(), images_path);
    set = hapi::ImageSet();
    set->labels.assign(fallback_labels, 0);
    set->pixels.assign(fallback_labels * hapi::kImagePixels, 0);
  }
  const size_t images = set->labels.size();
  absl::Status labels = hapi::ReadIdxLabels(labels_path, &*set);
  if (!labels.ok()) {
    CheckRefused(labels, labels_path);
    return 0;
  }
  HAPI_FUZZ_CHECK(set->labels.size() == images);
  for (uint8_t label : set->labels) HAPI_FUZZ_CHECK(label < hapi::kNumClasses);
  if (images > 0) {
    set->Truncate(static_cast<int>(images) - 1);
    HAPI_FUZZ_CHECK(set->size() == static_cast<int>(images) - 1);
    HAPI_FUZZ_CHECK(set->pixels.size() == (images - 1) * hapi::kImagePixels);
  }
  return 0;
}
