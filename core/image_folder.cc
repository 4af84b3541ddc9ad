#include "core/image_folder.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/image_decoder.h"
#include "core/input_spec.h"
#include "core/progress_bar.h"
#include "core/status_macros.h"

namespace hapi {
namespace {

namespace fs = std::filesystem;

// Larger files are bad images without being read: the decoder refuses
// anything beyond 4 Mpx, which no sane PNG or JPEG needs 64 MiB for.
constexpr int64_t kMaxImageFileBytes = int64_t{64} << 20;
// Decoding fewer images than this takes well under a second: no bar.
constexpr int64_t kProgressBarMinImages = 1000;
constexpr size_t kIgnoredExamples = 5;

// Well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, at most
// U+10FFFF).
bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int extra;
    uint32_t code;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1;
      code = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      code = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      code = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // cut short
    for (int k = 1; k <= extra; ++k) {
      const auto next = static_cast<unsigned char>(s[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      code = (code << 6) | (next & 0x3f);
    }
    constexpr uint32_t kMin[4] = {0, 0x80, 0x800, 0x10000};
    if (code < kMin[extra] || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return false;
    i += extra + 1;
  }
  return true;
}

// Names and paths in messages: valid UTF-8 as it is but for control
// characters, which are written as \xNN; in a name that is not valid UTF-8,
// every byte beyond ASCII too (status messages must be valid UTF-8).
std::string Printable(absl::string_view text) {
  const bool utf8 = IsValidUtf8(text);
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x20 && c != 0x7f && (utf8 || c < 0x80)) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppendFormat(&out, "\\x%02x", c);
    }
  }
  return out;
}

absl::Status ValidateClassName(absl::string_view name, const std::string& folder) {
  if (!IsValidUtf8(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("class folder ", Printable(folder),
                     ": its name is not valid UTF-8 (class names are shown and stored as UTF-8)"));
  }
  for (unsigned char c : name) {
    if (c < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError(
          absl::StrCat("class folder ", Printable(folder),
                       ": its name has a control character (class names are shown and stored)"));
    }
  }
  return absl::OkStatus();
}

bool IsHidden(absl::string_view name) { return !name.empty() && name[0] == '.'; }

bool HasImageExtension(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  const std::string ext = absl::AsciiStrToLower(absl::string_view(name).substr(dot + 1));
  return ext == "png" || ext == "jpg" || ext == "jpeg";
}

// FNV-1a over the bytes, then splitmix64's finaliser keyed with the seed: a
// hash that is the same on every platform, unlike std::hash.
uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
uint64_t KeyedPathHash(absl::string_view path, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : path) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return Mix64(h ^ Mix64(seed + 0x9E3779B97F4A7C15ULL));
}
// In [0, 1), 53 bits.
double UnitHash(absl::string_view path, uint64_t seed) {
  return static_cast<double>(KeyedPathHash(path, seed) >> 11) * 0x1.0p-53;
}
// The key of max_per_split's sample: another stream than the split's.
constexpr uint64_t kSampleKey = 0x5eed5a3b1e5a3b1eULL;

// A folder's entries in byte order of their names. Not-found and permission
// errors name the folder.
struct Entry {
  std::string name;
  bool directory = false;  // following links
};
absl::StatusOr<std::vector<Entry>> ListFolder(const fs::path& dir) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot list ", Printable(dir.string()), ": ", ec.message()));
  }
  std::vector<Entry> entries;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    std::error_code status_ec;
    const bool directory = it->is_directory(status_ec);  // false for a dangling link
    entries.push_back({it->path().filename().string(), directory && !status_ec});
  }
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot list ", Printable(dir.string()), ": ", ec.message()));
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.name < b.name; });
  return entries;
}

// A listed image: its path relative to the root, its label and the split it
// ends up in.
struct Listed {
  std::string path;
  int label = 0;
  DataSplit split = DataSplit::kTrain;
};

// The class folders of one source folder (the root, or a split folder): name
// -> the image files in it, relative to the root.
using ClassFiles = std::map<std::string, std::vector<std::string>>;

class FolderLister {
 public:
  FolderLister(const fs::path& root, ImageFolderDataset* data) : root_(root), data_(data) {}

  void Ignore(const std::string& relative) {
    ++data_->ignored;
    if (data_->ignored_examples.size() < kIgnoredExamples) {
      data_->ignored_examples.push_back(Printable(relative));
    }
  }

  // `prefix` is the source folder relative to the root ("" or "train/").
  absl::StatusOr<ClassFiles> ListClasses(const std::string& prefix) {
    const fs::path dir = prefix.empty() ? root_ : root_ / prefix;
    HAPI_ASSIGN_OR_RETURN(std::vector<Entry> entries, ListFolder(dir));
    ClassFiles classes;
    for (const Entry& e : entries) {
      const std::string relative = prefix + e.name;
      if (IsHidden(e.name) || !e.directory) {
        Ignore(relative);
        continue;
      }
      HAPI_RETURN_IF_ERROR(ValidateClassName(e.name, (root_ / relative).string()));
      HAPI_ASSIGN_OR_RETURN(std::vector<Entry> files, ListFolder(root_ / relative));
      std::vector<std::string>& images = classes[e.name];
      for (const Entry& f : files) {
        const std::string path = relative + "/" + f.name;
        if (IsHidden(f.name) || f.directory || !HasImageExtension(f.name)) {
          Ignore(path);
        } else {
          images.push_back(path);
        }
      }
      if (images.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("class folder ", Printable((root_ / relative).string()),
                         " has no image files (.png, .jpg or .jpeg); every class needs images"));
      }
    }
    if (classes.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Printable(dir.string()),
                       " has no class folders (expected <class>/<image> or "
                       "{train,val,test}/<class>/<image>)"));
    }
    return classes;
  }

 private:
  const fs::path root_;
  ImageFolderDataset* const data_;
};

absl::Status CheckSameClasses(const fs::path& root, const std::string& a, const ClassFiles& ca,
                              const std::string& b, const ClassFiles& cb) {
  for (const auto& [name, files] : ca) {
    if (cb.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(Printable((root / b).string()), " has no class folder '", Printable(name),
                       "' (", a, "/ has it): every split needs the same class folders"));
    }
  }
  for (const auto& [name, files] : cb) {
    if (ca.count(name) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(Printable((root / b / name).string()), " is a class folder that ", a,
                       "/ does not have: every split needs the same class folders"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateOptions(const ImageFolderOptions& o) {
  auto fraction_ok = [](double f) { return std::isfinite(f) && f >= 0 && f < 1; };
  if (!fraction_ok(o.validation_fraction) || !fraction_ok(o.test_fraction) ||
      o.validation_fraction + o.test_fraction >= 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "validation fraction %g and test fraction %g must each be in [0, 1) and sum below 1",
        o.validation_fraction, o.test_fraction));
  }
  if (o.max_per_split < 0) {
    return absl::InvalidArgumentError("max images per split must be at least 0 (0: all)");
  }
  return absl::OkStatus();
}

// The file's bytes, or why it is a bad image.
absl::StatusOr<std::string> ReadImageFile(const fs::path& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    return absl::InvalidArgumentError(
        fs::is_symlink(fs::symlink_status(path, ec)) ? "dangling symbolic link" : "not found");
  }
  if (!fs::is_regular_file(status)) return absl::InvalidArgumentError("not a regular file");
  const uintmax_t size = fs::file_size(path, ec);
  if (!ec && size > static_cast<uintmax_t>(kMaxImageFileBytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat(size, " bytes, more than the ", kMaxImageFileBytes, " an image may have"));
  }
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot open: ", std::strerror(errno)));
  }
  std::string bytes;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) {
    bytes.append(buffer, n);
    if (bytes.size() > static_cast<size_t>(kMaxImageFileBytes)) break;
  }
  const bool failed = std::ferror(file) != 0;
  const int error = errno;
  std::fclose(file);
  if (failed)
    return absl::InvalidArgumentError(absl::StrCat("cannot read: ", std::strerror(error)));
  if (bytes.size() > static_cast<size_t>(kMaxImageFileBytes)) {
    return absl::InvalidArgumentError(
        absl::StrCat("more than the ", kMaxImageFileBytes, " bytes an image may have"));
  }
  return bytes;
}

}  // namespace

const char* DataSplitName(DataSplit split) {
  switch (split) {
    case DataSplit::kTrain:
      return "train";
    case DataSplit::kValidation:
      return "val";
    case DataSplit::kTest:
      return "test";
  }
  return "?";
}

absl::StatusOr<DataSplit> ParseDataSplit(absl::string_view name) {
  if (name == "train") return DataSplit::kTrain;
  if (name == "val" || name == "validation") return DataSplit::kValidation;
  if (name == "test") return DataSplit::kTest;
  return absl::InvalidArgumentError(
      absl::StrCat("split '", Printable(name), "' must be train, val or test"));
}

const ImageSplit& ImageFolderDataset::split(DataSplit s) const {
  return s == DataSplit::kTrain ? train : s == DataSplit::kValidation ? validation : test;
}
ImageSplit& ImageFolderDataset::split(DataSplit s) {
  return s == DataSplit::kTrain ? train : s == DataSplit::kValidation ? validation : test;
}

namespace {

// Images of one source folder by class, and the split they belong to (or
// the pool's, split here by the fixed seed).
struct Source {
  std::string folder;  // relative to the root: "" or "train" ...
  ClassFiles classes;
  bool pool = false;
  DataSplit split = DataSplit::kTrain;
};

// Which splits have their own folder, and the shares the pool gives away
// (only to splits whose folder is not there).
struct Shares {
  bool folder[kNumDataSplits] = {false, false, false};
  double test = 0, validation = 0;
  double of(DataSplit s) const {
    return s == DataSplit::kTest ? test : s == DataSplit::kValidation ? validation : 1;
  }
};

// The layout from the root's folders, and every source folder with its
// classes (the same in every split folder); sets data->layout and
// data->class_names.
absl::StatusOr<std::vector<Source>> ListSources(const std::string& root, const fs::path& root_path,
                                                const ImageFolderOptions& options,
                                                FolderLister& lister, ImageFolderDataset* data,
                                                Shares* shares) {
  HAPI_ASSIGN_OR_RETURN(std::vector<Entry> top, ListFolder(root_path));
  std::vector<std::string> split_folders, other_folders;
  for (const Entry& e : top) {
    if (!e.directory || IsHidden(e.name)) continue;
    (e.name == "train" || e.name == "val" || e.name == "test" ? split_folders : other_folders)
        .push_back(e.name);
  }
  if (!split_folders.empty() && !other_folders.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Printable(root), " mixes split folders (", absl::StrJoin(split_folders, ", "),
                     ") with other folders (", Printable(absl::StrJoin(other_folders, ", ")),
                     "): use <root>/<class>/<image> or <root>/{train,val,test}/<class>/<image>"));
  }
  data->layout =
      split_folders.empty() ? ImageFolderLayout::kClassFolders : ImageFolderLayout::kSplitFolders;
  std::vector<Source> sources;
  if (data->layout == ImageFolderLayout::kClassFolders) {
    HAPI_ASSIGN_OR_RETURN(ClassFiles classes, lister.ListClasses(""));
    sources.push_back({"", std::move(classes), true, DataSplit::kTrain});
  } else {
    for (const Entry& e : top) {
      if (!e.directory || IsHidden(e.name)) lister.Ignore(e.name);
    }
    for (DataSplit s : {DataSplit::kTrain, DataSplit::kValidation, DataSplit::kTest}) {
      const std::string name = DataSplitName(s);
      if (std::find(split_folders.begin(), split_folders.end(), name) == split_folders.end()) {
        continue;
      }
      shares->folder[static_cast<int>(s)] = true;
      HAPI_ASSIGN_OR_RETURN(ClassFiles classes, lister.ListClasses(name + "/"));
      sources.push_back({name, std::move(classes), s == DataSplit::kTrain, s});
    }
    for (size_t k = 1; k < sources.size(); ++k) {
      HAPI_RETURN_IF_ERROR(CheckSameClasses(root_path, sources[0].folder, sources[0].classes,
                                            sources[k].folder, sources[k].classes));
    }
  }
  for (const auto& [name, files] : sources[0].classes) data->class_names.push_back(name);
  shares->test = shares->folder[static_cast<int>(DataSplit::kTest)] ? 0 : options.test_fraction;
  shares->validation =
      shares->folder[static_cast<int>(DataSplit::kValidation)] ? 0 : options.validation_fraction;
  return sources;
}

// Every image with its class and split, each split in traversal order.
void AssignSplits(const std::vector<Source>& sources, const Shares& shares, uint64_t seed,
                  std::vector<Listed> (&listed)[kNumDataSplits]) {
  for (const Source& source : sources) {
    int label = 0;
    for (const auto& [name, files] : source.classes) {
      for (const std::string& path : files) {
        DataSplit split = source.split;
        if (source.pool) {
          const double u = UnitHash(path, seed);
          split = u < shares.test                       ? DataSplit::kTest
                  : u < shares.test + shares.validation ? DataSplit::kValidation
                                                        : DataSplit::kTrain;
        }
        listed[static_cast<int>(split)].push_back({path, label, split});
      }
      ++label;
    }
  }
}

// A fixed sample of `max` of `listed`, kept in traversal order.
void KeepSample(std::vector<Listed>* listed, int64_t max, uint64_t seed) {
  std::vector<std::pair<uint64_t, size_t>> keyed;
  for (size_t i = 0; i < listed->size(); ++i) {
    keyed.emplace_back(KeyedPathHash((*listed)[i].path, seed ^ kSampleKey), i);
  }
  std::sort(keyed.begin(), keyed.end());
  keyed.resize(static_cast<size_t>(max));
  std::sort(keyed.begin(), keyed.end(),
            [](const auto& a, const auto& b) { return a.second < b.second; });
  std::vector<Listed> kept;
  for (const auto& [hash, i] : keyed) kept.push_back(std::move((*listed)[i]));
  *listed = std::move(kept);
}

// Describes each split in `data`, and keeps in `listed` the images to decode
// (only the splits asked for, sampled down to max_per_split); how many.
absl::StatusOr<int64_t> SelectImages(const std::string& root, const v1::InputSpec& spec,
                                     const ImageFolderOptions& options, bool pool,
                                     const Shares& shares, ImageFolderDataset* data,
                                     std::vector<Listed> (&listed)[kNumDataSplits]) {
  int64_t to_decode = 0;
  for (int s = 0; s < kNumDataSplits; ++s) {
    ImageSplit& split = data->split(static_cast<DataSplit>(s));
    split.split = static_cast<DataSplit>(s);
    split.channels = spec.channels();
    split.height = spec.height();
    split.width = spec.width();
    split.listed = static_cast<int64_t>(listed[s].size());
    if (!options.decode[s]) {
      listed[s].clear();
      continue;
    }
    // Empty: an error when images were expected (a split carved out with a
    // share above 0, or one with neither a folder nor a pool to carve it from).
    const bool carved = !shares.folder[s] && pool;
    if (listed[s].empty() && (!carved || shares.of(split.split) > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "image folder ", Printable(root), " has no images in its ", DataSplitName(split.split),
          " split",
          carved ? " (carved out of the pool by its fraction: add images or raise the fraction)"
                 : absl::StrCat(" (no ", DataSplitName(split.split),
                                "/ folder, nor a train/ to carve it from)")));
    }
    if (options.max_per_split > 0 &&
        static_cast<int64_t>(listed[s].size()) > options.max_per_split) {
      KeepSample(&listed[s], options.max_per_split, options.split_seed);
    }
    to_decode += static_cast<int64_t>(listed[s].size());
  }
  return to_decode;
}

// Decodes the selected images into `data`'s splits (skipping bad ones when
// the options say so).
absl::Status DecodeImages(const std::string& root, const fs::path& root_path,
                          const v1::InputSpec& spec, const ImageFolderOptions& options,
                          const std::vector<Listed> (&listed)[kNumDataSplits], int64_t to_decode,
                          ImageFolderDataset* data) {
  std::unique_ptr<ProgressBar> bar;
  if (options.progress && to_decode >= kProgressBarMinImages && ::isatty(::fileno(stderr)) != 0) {
    bar = std::make_unique<ProgressBar>(absl::StrCat("decode ", Printable(root)), to_decode);
  }
  int64_t done = 0;
  for (int s = 0; s < kNumDataSplits; ++s) {
    ImageSplit& split = data->split(static_cast<DataSplit>(s));
    split.images.reserve(listed[s].size() * static_cast<size_t>(split.image_floats()));
    for (const Listed& image : listed[s]) {
      absl::StatusOr<std::vector<float>> pixels = [&]() -> absl::StatusOr<std::vector<float>> {
        HAPI_ASSIGN_OR_RETURN(std::string bytes, ReadImageFile(root_path / image.path));
        return DecodeEncodedImage(bytes, spec);
      }();
      if (!pixels.ok()) {
        if (options.bad_images == BadImagePolicy::kFail) {
          return absl::InvalidArgumentError(
              absl::StrCat("bad image ", Printable((root_path / image.path).string()), ": ",
                           pixels.status().message(),
                           " (fix or remove it, or skip bad images: docs/datasets.md)"));
        }
        data->skipped.push_back({Printable(image.path), std::string(pixels.status().message())});
      } else {
        split.images.insert(split.images.end(), pixels->begin(), pixels->end());
        split.labels.push_back(image.label);
        split.paths.push_back(image.path);
      }
      if (bar != nullptr) bar->Update(++done);
    }
  }
  if (bar != nullptr) {
    bar->Finish(absl::StrCat(data->skipped.size(), " bad images skipped"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ImageFolderDataset> LoadImageFolder(const std::string& root,
                                                   const v1::InputSpec& spec,
                                                   const ImageFolderOptions& options) {
  HAPI_RETURN_IF_ERROR(ValidateInputSpec(spec));
  HAPI_RETURN_IF_ERROR(ValidateOptions(options));
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return absl::NotFoundError(
        absl::StrCat("image folder ", Printable(root), " is not a folder",
                     ec && ec != std::errc::no_such_file_or_directory ? ": " + ec.message() : ""));
  }
  ImageFolderDataset data;
  data.root = root;
  data.split_seed = options.split_seed;
  const fs::path root_path(root);
  FolderLister lister(root_path, &data);
  Shares shares;
  HAPI_ASSIGN_OR_RETURN(std::vector<Source> sources,
                        ListSources(root, root_path, options, lister, &data, &shares));
  std::vector<Listed> listed[kNumDataSplits];
  AssignSplits(sources, shares, options.split_seed, listed);
  HAPI_ASSIGN_OR_RETURN(int64_t to_decode,
                        SelectImages(root, spec, options, sources[0].pool, shares, &data, listed));
  HAPI_RETURN_IF_ERROR(DecodeImages(root, root_path, spec, options, listed, to_decode, &data));
  return data;
}

std::string DescribeImageFolder(const ImageFolderDataset& data) {
  std::string out = absl::StrCat(
      data.class_names.size(), " classes, ",
      data.layout == ImageFolderLayout::kSplitFolders ? "split folders" : "class folders", ":");
  for (DataSplit s : {DataSplit::kTrain, DataSplit::kValidation, DataSplit::kTest}) {
    const ImageSplit& split = data.split(s);
    absl::StrAppend(&out, s == DataSplit::kTrain ? " " : ", ", DataSplitName(s), " ", split.listed);
    if (split.size() > 0 && split.size() != split.listed) {
      absl::StrAppend(&out, " (", split.size(), " decoded)");
    }
  }
  absl::StrAppend(&out, " images");
  if (!data.skipped.empty()) {
    absl::StrAppend(&out, "; ", data.skipped.size(), " bad images skipped (", data.skipped[0].path,
                    ": ", data.skipped[0].reason, data.skipped.size() > 1 ? ", ..." : "", ")");
  }
  if (data.ignored > 0) {
    absl::StrAppend(
        &out, "; ", data.ignored, " entries not images ignored (",
        absl::StrJoin(data.ignored_examples, ", "),
        data.ignored > static_cast<int64_t>(data.ignored_examples.size()) ? ", ..." : "", ")");
  }
  return out;
}

}  // namespace hapi
