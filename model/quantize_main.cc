// hapi-quantize: the int8 ranges of a model's direct inference path
// (model/direct_program.h), computed on images of the training split and
// written to the model directory (int8-ranges.pbtxt), where hapi-server
// --precision=int8 reads them.
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "model/torch_model.h"

ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, model, "fmnist-resnet", "Model (the residual network)");
ABSL_FLAG(std::string, data_dir, hapi::kDefaultFashionMnistDir,
          "Fashion-MNIST directory (its training split calibrates)");
ABSL_FLAG(int32_t, samples, 1000, "Training images to calibrate on");

namespace {

int Fail(const absl::Status& st) {
  std::cerr << "hapi-quantize: " << st << "\n";
  return 1;
}

absl::StatusOr<std::string> Quantize() {
  const std::string name = absl::GetFlag(FLAGS_model);
  HAPI_RETURN_IF_ERROR(hapi::ValidateName(name, "model name"));
  const int samples = absl::GetFlag(FLAGS_samples);
  if (samples < 1) return absl::InvalidArgumentError("--samples must be at least 1");
  const std::string dir = hapi::RepositoryLayout(absl::GetFlag(FLAGS_repository)).ModelDir(name);
  HAPI_ASSIGN_OR_RETURN(hapi::FashionMnist data,
                        hapi::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir)));
  data.train.Truncate(samples);
  std::vector<float> pixels(data.train.pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = data.train.pixels[i] / 255.0f;
  HAPI_ASSIGN_OR_RETURN(hapi::v1::Int8Ranges ranges,
                        hapi::CalibrateInt8Ranges(dir, pixels.data(), data.train.size()));
  const std::string path = absl::StrCat(dir, "/", hapi::kInt8RangesFile);
  HAPI_RETURN_IF_ERROR(hapi::WriteTextProtoAtomically(path, ranges));
  return absl::StrCat("wrote ", path, ": ", ranges.max_abs_size(), " tensor ranges from ",
                      ranges.samples(), " training images");
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Computes the int8 ranges of a model's direct inference path on training images and "
      "writes them to its directory (int8-ranges.pbtxt), for hapi-server --precision=int8.");
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<std::string> done = Quantize();
  if (!done.ok()) return Fail(done.status());
  std::cout << *done << "\n";
  return 0;
}
