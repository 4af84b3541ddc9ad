// Labelled images in a model's input format, for training exit heads and
// calibrating: the seam between data sets and the exit trainer
// (model/imported_exits.h). IDX (Fashion-MNIST) and image folders
// (core/image_folder.h) implement it here; another data set plugs in by
// implementing LabelledImages. Torch-free header.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/fashion_mnist.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

struct ImageFolderDataset;  // core/image_folder.h

class LabelledImages {
 public:
  virtual ~LabelledImages() = default;
  virtual int size() const = 0;
  virtual int label(int i) const = 0;
  // What Read writes per sample: channels x height x width.
  virtual v1::TensorShape shape() const = 0;
  // Sample `i` as the model eats it before normalisation: channels x height x
  // width floats in [0,1] (pixel/255), row-major, InputSize(spec) of them.
  virtual void Read(int i, float* out) const = 0;
};

// The three splits of a data set, each already in one model's input format.
// Designs are chosen on `validation`; `test` is for reporting only.
struct LabelledSplits {
  std::string dataset;  // e.g. "fashion-mnist"
  std::vector<std::string> class_names;
  std::shared_ptr<const LabelledImages> train, validation, test;
  uint64_t split_seed = 0;
};

// How images of another shape become the model's input.
struct ImageConversion {
  // Convert as the server converts a grey PNG of the image (model/
  // labelled_images.cc): grey replicated into each of the model's channels,
  // resized by the spec's policy with the server's resampler. Off: an image
  // whose shape is not the model's is an error.
  bool convert = true;
};

// IDX images (1 x 28 x 28 grey) in `spec`'s format. INVALID_ARGUMENT naming
// both shapes when they differ and conversion is off.
absl::StatusOr<std::shared_ptr<const LabelledImages>> IdxImagesFor(ImageSet images,
                                                                   const v1::InputSpec& spec,
                                                                   const ImageConversion& conv);

// Fashion-MNIST's splits in `spec`'s format, as IdxImagesFor converts them.
absl::StatusOr<LabelledSplits> FashionMnistSplitsFor(FashionMnist data, const v1::InputSpec& spec,
                                                     const ImageConversion& conv);

// An image folder's splits, decoded by LoadImageFolder for the model's input
// spec (so always of its shape), class names from its folders.
LabelledSplits ImageFolderSplits(std::shared_ptr<const ImageFolderDataset> data,
                                 const std::string& name);

// A tool's data: the image folder `image_folder` when it is not empty
// (LoadImageFolder for `spec`, with a progress bar when `progress`; its name
// the folder's), else Fashion-MNIST from `data_dir` split with `split_seed`
// and converted to `spec` as `conversion` says.
absl::StatusOr<LabelledSplits> LoadLabelledSplits(const std::string& image_folder,
                                                  const std::string& data_dir, uint64_t split_seed,
                                                  const v1::InputSpec& spec,
                                                  const ImageConversion& conversion, bool progress);

// The first `n` samples of `images` (all when n <= 0 or n >= its size).
std::shared_ptr<const LabelledImages> FirstImages(std::shared_ptr<const LabelledImages> images,
                                                  int n);

// Every sample of `images` in one buffer, size() x `sample_size` floats
// (sample_size: the model's InputSize).
std::vector<float> ReadAll(const LabelledImages& images, int64_t sample_size);

}  // namespace hapi
