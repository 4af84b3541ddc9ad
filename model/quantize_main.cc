// hapi-quantize: the int8 ranges of a model's direct inference path
// (model/direct_program.h), computed on images of the training split and
// written to the model directory (int8-ranges.pbtxt), and the int8 path's
// calibration tables on the validation and test splits, which the optimizer
// scores int8 designs on; the server serves a variant in the precision it
// was planned for.
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "model/imported_exits.h"
#include "model/labelled_images.h"
#include "model/torch_model.h"

ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, model, "fmnist-resnet",
          "Model (the residual network, or an imported graph with its exit heads)");
ABSL_FLAG(std::string, data_dir, hapi::kDefaultFashionMnistDir,
          "Fashion-MNIST directory (its training split calibrates), split as the model was");
ABSL_FLAG(std::string, image_folder, "",
          "Or the image folder the model's exits were trained and calibrated on "
          "(hapi-import --image_folder): its training split calibrates, its validation and test "
          "splits are the tables'");
ABSL_FLAG(bool, progress, true, "Show progress bars");
ABSL_FLAG(int32_t, samples, 1000, "Training images to calibrate on");
ABSL_FLAG(bool, tables, true,
          "Also run the int8 path over the validation and test splits and write its calibration "
          "tables (what the optimizer scores int8 designs on)");

namespace {

int Fail(const absl::Status& st) {
  std::cerr << "hapi-quantize: " << st << "\n";
  return 1;
}

// The int8 path's calibration tables on the fp32 tables' samples, written
// beside them and named in the manifest; a per-exit accuracy comparison.
absl::StatusOr<std::string> CalibrateInt8(const std::string& dir,
                                          const hapi::v1::Int8Ranges& ranges,
                                          const hapi::LabelledSplits& splits) {
  HAPI_ASSIGN_OR_RETURN(hapi::ModelMetadata fp32, hapi::LoadModelMetadata(dir));
  hapi::ModelOptions options;
  options.int8 = true;
  options.int8_ranges = std::make_shared<const std::map<std::string, float>>(
      ranges.max_abs().begin(), ranges.max_abs().end());
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const hapi::Model> model,
                        hapi::LoadTorchModel(dir, options));
  hapi::v1::ModelManifest manifest = fp32.manifest;
  std::string report = absl::StrFormat("%-20s %12s %12s %12s %12s\n", "exit", "val fp32",
                                       "val int8", "test fp32", "test int8");
  std::vector<hapi::CalibrationTable> tables;
  for (auto [images, reference, file, label] :
       {std::tuple{splits.validation.get(), &fp32.validation, hapi::kInt8ValidationCalibrationFile,
                   "int8 validation"},
        std::tuple{splits.test.get(), &fp32.test, hapi::kInt8TestCalibrationFile, "int8 test"}}) {
    HAPI_ASSIGN_OR_RETURN(hapi::CalibrationTable table,
                          hapi::CalibrateOnImages(*model, *images, label));
    if (absl::Status same = table.SetReference(*reference); !same.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the ", label, " split is not the one the model's fp32 tables were computed on (",
          same.message(),
          "): are --data_dir or --image_folder the data its exits were "
          "calibrated on?"));
    }
    HAPI_RETURN_IF_ERROR(
        hapi::WriteFileAtomically(absl::StrCat(dir, "/", file), table.Serialize()));
    tables.push_back(std::move(table));
  }
  for (int e = 0; e < manifest.exits_size(); ++e) {
    absl::StrAppendFormat(&report, "%-20s %11.2f%% %11.2f%% %11.2f%% %11.2f%%\n",
                          manifest.exits(e).name(), 100 * fp32.validation.Accuracy(e),
                          100 * tables[0].Accuracy(e), 100 * fp32.test.Accuracy(e),
                          100 * tables[1].Accuracy(e));
  }
  manifest.set_int8_validation_calibration(hapi::kInt8ValidationCalibrationFile);
  manifest.set_int8_test_calibration(hapi::kInt8TestCalibrationFile);
  HAPI_RETURN_IF_ERROR(
      hapi::WriteTextProtoAtomically(absl::StrCat(dir, "/", hapi::kManifestFile), manifest));
  return report;
}

absl::StatusOr<std::string> Quantize() {
  const std::string name = absl::GetFlag(FLAGS_model);
  HAPI_RETURN_IF_ERROR(hapi::ValidateName(name, "model name"));
  const int samples = absl::GetFlag(FLAGS_samples);
  if (samples < 1) return absl::InvalidArgumentError("--samples must be at least 1");
  const std::string dir = hapi::RepositoryLayout(absl::GetFlag(FLAGS_repository)).ModelDir(name);
  HAPI_ASSIGN_OR_RETURN(hapi::ModelMetadata metadata, hapi::LoadModelMetadata(dir));
  HAPI_ASSIGN_OR_RETURN(const hapi::v1::InputSpec spec,
                        hapi::EffectiveInputSpec(metadata.manifest));
  const uint64_t seed = metadata.manifest.split().split_seed();
  HAPI_ASSIGN_OR_RETURN(
      const hapi::LabelledSplits splits,
      hapi::LoadLabelledSplits(absl::GetFlag(FLAGS_image_folder), absl::GetFlag(FLAGS_data_dir),
                               seed != 0 ? seed : hapi::kDefaultSplitSeed, spec, {},
                               absl::GetFlag(FLAGS_progress)));
  const auto train = hapi::FirstImages(splits.train, samples);
  const std::vector<float> pixels = hapi::ReadAll(*train, hapi::InputSize(spec));
  HAPI_ASSIGN_OR_RETURN(hapi::v1::Int8Ranges ranges,
                        hapi::CalibrateInt8Ranges(dir, pixels.data(), train->size()));
  const std::string path = absl::StrCat(dir, "/", hapi::kInt8RangesFile);
  HAPI_RETURN_IF_ERROR(hapi::WriteTextProtoAtomically(path, ranges));
  std::string out = absl::StrCat("wrote ", path, ": ", ranges.max_abs_size(),
                                 " tensor ranges from ", ranges.samples(), " training images\n");
  if (!absl::GetFlag(FLAGS_tables)) return out;
  HAPI_ASSIGN_OR_RETURN(std::string report, CalibrateInt8(dir, ranges, splits));
  return absl::StrCat(
      out, "wrote ", hapi::kInt8ValidationCalibrationFile, " and ", hapi::kInt8TestCalibrationFile,
      " (the int8 path on the validation and test splits); top-1 accuracy:\n", report);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Computes the int8 ranges of a model's direct inference path on training images and "
      "writes them to its directory (int8-ranges.pbtxt), then the int8 path's calibration tables "
      "on the validation and test splits, so the optimizer can choose int8 designs.");
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<std::string> done = Quantize();
  if (!done.ok()) return Fail(done.status());
  std::cout << *done << "\n";
  return 0;
}
