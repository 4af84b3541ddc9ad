#include "model/labelled_images.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/image_decoder.h"
#include "core/image_folder.h"
#include "core/input_spec.h"
#include "core/status_macros.h"
#include "glog/logging.h"

namespace hapi {
namespace {

// Fashion-MNIST-style grey 28x28 images. A grey image sent to the server as
// PNG is replicated into every channel the model has and each plane resized
// (stb_image_resize, default filters, edges clamped, uint8): the same here,
// so heads train on what served requests look like.
class IdxImages : public LabelledImages {
 public:
  IdxImages(ImageSet images, const v1::InputSpec& spec) : images_(std::move(images)), spec_(spec) {}

  int size() const override { return images_.size(); }
  int label(int i) const override { return images_.labels[i]; }
  v1::TensorShape shape() const override { return InputShape(spec_); }

  void Read(int i, float* out) const override {
    // The grey plane resized as the decoder resizes it, then replicated.
    absl::StatusOr<std::vector<float>> plane =
        PlanesToInput(images_.image(i), 1, kImageSide, kImageSide, spec_);
    if (!plane.ok()) {  // only when resizing cannot allocate
      std::fprintf(stderr, "image %d: %s\n", i, plane.status().ToString().c_str());
      std::abort();
    }
    for (int c = 0; c < spec_.channels(); ++c) {
      std::copy(plane->begin(), plane->end(), out + c * plane->size());
    }
  }

 private:
  const ImageSet images_;
  const v1::InputSpec spec_;
};

// One split of a decoded image folder: already the model's floats in [0,1].
class FolderImages : public LabelledImages {
 public:
  FolderImages(std::shared_ptr<const ImageFolderDataset> data, const ImageSplit* split)
      : data_(std::move(data)), split_(split) {}
  int size() const override { return split_->size(); }
  int label(int i) const override { return split_->labels[i]; }
  v1::TensorShape shape() const override {
    v1::TensorShape s;
    s.set_channels(split_->channels);
    s.set_height(split_->height);
    s.set_width(split_->width);
    return s;
  }
  void Read(int i, float* out) const override {
    std::copy_n(split_->image(i), split_->image_floats(), out);
  }

 private:
  const std::shared_ptr<const ImageFolderDataset> data_;  // owns *split_
  const ImageSplit* const split_;
};

class FirstOf : public LabelledImages {
 public:
  FirstOf(std::shared_ptr<const LabelledImages> images, int n)
      : images_(std::move(images)), n_(n) {}
  int size() const override { return n_; }
  int label(int i) const override { return images_->label(i); }
  v1::TensorShape shape() const override { return images_->shape(); }
  void Read(int i, float* out) const override { images_->Read(i, out); }

 private:
  const std::shared_ptr<const LabelledImages> images_;
  const int n_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const LabelledImages>> IdxImagesFor(ImageSet images,
                                                                   const v1::InputSpec& spec,
                                                                   const ImageConversion& conv) {
  if (absl::Status st = ValidateInputSpec(spec); !st.ok()) return st;
  const bool same =
      spec.channels() == 1 && spec.height() == kImageSide && spec.width() == kImageSide;
  if (!same && !conv.convert) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the data set's images are ", ShapeString(1, kImageSide, kImageSide),
        " (grey) but the model eats ", ShapeString(spec),
        "; allow converting them (grey replicated into each channel, resized by the model's "
        "resize policy) or use a data set of the model's shape"));
  }
  return std::make_shared<IdxImages>(std::move(images), spec);
}

absl::StatusOr<LabelledSplits> FashionMnistSplitsFor(FashionMnist data, const v1::InputSpec& spec,
                                                     const ImageConversion& conv) {
  LabelledSplits splits;
  splits.dataset = "fashion-mnist";
  for (const char* name : kFashionMnistClassNames) splits.class_names.push_back(name);
  splits.split_seed = data.split_seed;
  for (auto [set, out] :
       {std::pair{&data.train, &splits.train}, std::pair{&data.validation, &splits.validation},
        std::pair{&data.test, &splits.test}}) {
    absl::StatusOr<std::shared_ptr<const LabelledImages>> images =
        IdxImagesFor(std::move(*set), spec, conv);
    if (!images.ok()) return images.status();
    *out = *std::move(images);
  }
  return splits;
}

absl::StatusOr<LabelledSplits> LoadLabelledSplits(const std::string& image_folder,
                                                  const std::string& data_dir, uint64_t split_seed,
                                                  const v1::InputSpec& spec,
                                                  const ImageConversion& conversion,
                                                  bool progress) {
  if (image_folder.empty()) {
    HAPI_ASSIGN_OR_RETURN(FashionMnist data, LoadFashionMnist(data_dir, split_seed));
    return FashionMnistSplitsFor(std::move(data), spec, conversion);
  }
  ImageFolderOptions options;
  options.progress = progress;
  HAPI_ASSIGN_OR_RETURN(ImageFolderDataset data, LoadImageFolder(image_folder, spec, options));
  LOG(INFO) << image_folder << ": " << DescribeImageFolder(data);
  const std::filesystem::path folder = std::filesystem::path(image_folder).lexically_normal();
  std::string name = folder.filename().string();
  if (name.empty()) name = folder.parent_path().filename().string();
  return ImageFolderSplits(std::make_shared<const ImageFolderDataset>(std::move(data)), name);
}

LabelledSplits ImageFolderSplits(std::shared_ptr<const ImageFolderDataset> data,
                                 const std::string& name) {
  LabelledSplits splits;
  splits.dataset = name;
  splits.class_names = data->class_names;
  splits.split_seed = data->split_seed;
  splits.train = std::make_shared<FolderImages>(data, &data->train);
  splits.validation = std::make_shared<FolderImages>(data, &data->validation);
  splits.test = std::make_shared<FolderImages>(data, &data->test);
  return splits;
}

std::shared_ptr<const LabelledImages> FirstImages(std::shared_ptr<const LabelledImages> images,
                                                  int n) {
  if (n <= 0 || n >= images->size()) return images;
  return std::make_shared<FirstOf>(std::move(images), n);
}

std::vector<float> ReadAll(const LabelledImages& images, int64_t sample_size) {
  std::vector<float> out(static_cast<size_t>(images.size()) * sample_size);
  for (int i = 0; i < images.size(); ++i) images.Read(i, out.data() + i * sample_size);
  return out;
}

}  // namespace hapi
