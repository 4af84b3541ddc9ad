// Image folders as a data set, beside the IDX loader (core/fashion_mnist.h,
// still the default). Two layouts under a root:
//
//   <root>/<class>/<image>                      one pool, split here by a fixed seed
//   <root>/{train,val,test}/<class>/<image>     splits as given (a missing val/ or
//                                               test/ is carved out of train/)
//
// Images are PNG or JPEG files (.png, .jpg, .jpeg, any case), decoded by the
// server's decoder (core/image_decoder.h) to the model's input spec: the same
// bytes give the model the same floats whether they come from a folder or a
// request. docs/datasets.md says why each rule below is what it is.
//
// - Class names are the class folders' names; label i is the i-th name in
//   byte order (std::string's), on every machine. A name must be valid UTF-8
//   with no control characters; anything else is INVALID_ARGUMENT naming the
//   folder. Every class folder must hold at least one image file. In the split
//   layout every split folder must have the same class folders (an error names
//   the split and the class). At the root, a folder named train, val or test
//   means the split layout; mixing them with class folders is an error.
// - Traversal is in byte order of names at every level, so the data set (and
//   its order) is the same on every machine and file system.
// - Split: an image of the pool goes to test when u < test_fraction, else to
//   validation when u < test_fraction + validation_fraction, else to train,
//   where u in [0,1) is a portable keyed hash (FNV-1a, then splitmix64 with
//   split_seed) of its path relative to the root. An image's split depends
//   only on its path and the seed: adding or removing other images never moves
//   it (so no image of an old test split can leak into a new train split).
//   The fractions are therefore expected, not exact, shares.
// - Not images, and ignored (counted, the first few named): files of other
//   extensions, names starting with '.', anything inside a class folder that
//   is not a file (subfolders are not walked), files at the root or in a split
//   folder.
// - Symbolic links are followed, to files and to folders alike (a link farm
//   is a cheap way to make a split layout). The walk has a fixed depth, so a
//   link cycle cannot make it loop; an image's path (and so its split) is the
//   link's, not its target's. A dangling link to an image name is an
//   unreadable image.
// - A bad image (unreadable, not PNG/JPEG, corrupt, beyond the decoder's
//   size limits) is by default an error naming the file and what is wrong:
//   a data set's images define its calibration table and its test accuracy,
//   and a corrupt file usually means a broken copy that should be fixed, not
//   hidden. BadImagePolicy::kSkip skips it instead; the data set then lists
//   every file skipped and why (for scraped sets with a few broken files).
//
// For the trainer (model/), a model's data from a folder:
//
//   ImageFolderOptions options;  // 10% validation, 10% test, kDefaultSplitSeed
//   HAPI_ASSIGN_OR_RETURN(ImageFolderDataset data, LoadImageFolder(dir, spec, options));
//   // data.class_names: the manifest's class names (label i is class_names[i]).
//   // data.train.image(i): spec.channels() x height x width floats in [0,1]
//   //   (CHW, before the model's normalisation); data.train.labels[i].
//   // Choose designs on data.validation only; data.test is for reporting.
//
// An ImageSplit fits a per-sample reader interface as it is (model/
// labelled_images.h's LabelledImages, say): size(), labels[i], and
// image(i)'s image_floats() values copied out; shape channels x height x
// width.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

enum class DataSplit { kTrain = 0, kValidation = 1, kTest = 2 };
inline constexpr int kNumDataSplits = 3;

// "train", "val", "test": the split's folder name.
const char* DataSplitName(DataSplit split);
// "train", "val" (or "validation"), "test"; INVALID_ARGUMENT otherwise.
absl::StatusOr<DataSplit> ParseDataSplit(absl::string_view name);

enum class ImageFolderLayout {
  kClassFolders,  // <root>/<class>/<image>
  kSplitFolders,  // <root>/{train,val,test}/<class>/<image>
};

enum class BadImagePolicy {
  kFail,  // INVALID_ARGUMENT naming the file (the default)
  kSkip,  // skipped, and listed in ImageFolderDataset::skipped
};

struct ImageFolderOptions {
  // Shares of the pool that go to validation and to test (only for a split
  // whose folder is not there). Each in [0, 1), together below 1.
  double validation_fraction = 0.1;
  double test_fraction = 0.1;
  uint64_t split_seed = 20200807;  // kDefaultSplitSeed of the IDX loader
  // Which splits to decode. The others are listed only: their size()
  // is 0 and their `listed` says how many images they have.
  bool decode[kNumDataSplits] = {true, true, true};
  // > 0: decode at most this many images of each split: those with the
  // smallest keyed hash of their path (a fixed sample across classes, not
  // the first classes), in traversal order.
  int64_t max_per_split = 0;
  BadImagePolicy bad_images = BadImagePolicy::kFail;
  // A progress bar on stderr while decoding, when stderr is a terminal.
  bool progress = true;
};

// One split, decoded: size() images of channels x height x width floats in
// [0,1] (CHW), with their labels and paths.
struct ImageSplit {
  DataSplit split = DataSplit::kTrain;
  int channels = 0, height = 0, width = 0;  // the spec's
  std::vector<float> images;                // [size()][channels][height][width]
  std::vector<int> labels;                  // in [0, number of classes)
  std::vector<std::string> paths;           // relative to the root, '/'-separated
  int64_t listed = 0;                       // image files in the split, decoded or not

  int size() const { return static_cast<int>(labels.size()); }
  int64_t image_floats() const { return int64_t{channels} * height * width; }
  const float* image(int i) const { return images.data() + i * image_floats(); }
};

struct SkippedImage {
  std::string path;    // relative to the root
  std::string reason;  // the decoder's or the file system's message
};

struct ImageFolderDataset {
  std::string root;
  ImageFolderLayout layout = ImageFolderLayout::kClassFolders;
  std::vector<std::string> class_names;  // byte order; label i is class_names[i]
  uint64_t split_seed = 0;
  ImageSplit train, validation, test;
  std::vector<SkippedImage> skipped;          // BadImagePolicy::kSkip, in traversal order
  int64_t ignored = 0;                        // entries that are not images (see above)
  std::vector<std::string> ignored_examples;  // the first few, relative to the root

  const ImageSplit& split(DataSplit s) const;
  ImageSplit& split(DataSplit s);
};

// Lists `root` (either layout), splits it and decodes the splits asked for
// to `spec` (which must be valid: ValidateInputSpec). NOT_FOUND when root is
// not a folder; INVALID_ARGUMENT naming the folder or file for everything
// else the rules above refuse, and for a split asked for that has no images.
absl::StatusOr<ImageFolderDataset> LoadImageFolder(const std::string& root,
                                                   const v1::InputSpec& spec,
                                                   const ImageFolderOptions& options = {});

// "4 classes, split folders: train 800, val 100, test 100 images; 2 bad
// images skipped (cat/x.png: ...); 3 entries not images ignored (README.md)".
std::string DescribeImageFolder(const ImageFolderDataset& data);

}  // namespace hapi
