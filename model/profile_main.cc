// hapi-profile: writes a DeviceProfile (protobuf text) for a model.
//   measured (default): times every stage and exit head on this machine;
//   --analytic_gmacs=G: from MACs at G GMAC/s plus a per-layer overhead;
//   --scale=FILE --factor=F: another profile with latencies times F.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/device_profile.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "model/profiler.h"
#include "model/torch_model.h"

ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, model, "fmnist-resnet", "Model to profile");
ABSL_FLAG(std::string, device, "", "Device name for the profile (required)");
ABSL_FLAG(std::string, out, "", "Output file (default: <device>.profile.pbtxt)");
ABSL_FLAG(std::string, data_dir, hapi::kDefaultFashionMnistDir,
          "Fashion-MNIST directory; validation images are the profiling inputs");
ABSL_FLAG(int32_t, threads, 1, "Intra-op threads while measuring (serve with the same)");
ABSL_FLAG(std::vector<std::string>, batch_sizes, {"1"}, "Batch sizes to measure, e.g. 1,8,32");
ABSL_FLAG(int32_t, iterations, 400, "Timed passes per batch size");
ABSL_FLAG(int32_t, warmup, 50, "Untimed warm-up passes per batch size");
ABSL_FLAG(double, analytic_gmacs, 0, "Analytic profile: sustained GMAC/s (0: measure instead)");
ABSL_FLAG(double, analytic_layer_overhead_us, 10, "Analytic profile: microseconds per layer");
ABSL_FLAG(std::string, scale, "", "Scaled profile: the base profile file");
ABSL_FLAG(double, factor, 1.0, "Scaled profile: latency multiplier (2 = twice as slow)");
ABSL_FLAG(std::string, description, "", "Free text stored in the profile");
ABSL_FLAG(bool, progress, true, "Show a progress bar while measuring");
ABSL_FLAG(std::vector<std::string>, precisions, {},
          "Precisions to measure, e.g. fp32,int8 (default: fp32, and int8 when the model has "
          "int8 ranges from hapi-quantize)");

namespace {
int Fail(const absl::Status& status) {
  std::fprintf(stderr, "hapi-profile: %s\n", std::string(status.message()).c_str());
  return 1;
}
absl::StatusOr<std::vector<int>> BatchSizes() {
  std::vector<int> batches;
  for (const std::string& s : absl::GetFlag(FLAGS_batch_sizes)) {
    int b;
    if (!absl::SimpleAtoi(s, &b) || b <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("bad batch size '", s, "'"));
    }
    batches.push_back(b);
  }
  return batches;
}

absl::StatusOr<hapi::v1::DeviceProfile> ScaledProfile(const std::string& device) {
  hapi::v1::DeviceProfile base;
  HAPI_RETURN_IF_ERROR(hapi::ReadTextProto(absl::GetFlag(FLAGS_scale), &base));
  return hapi::MakeScaledProfile(device, base, absl::GetFlag(FLAGS_factor));
}

// --precisions, or fp32 and (when hapi-quantize has written the model's
// ranges) int8.
absl::StatusOr<std::vector<hapi::v1::Precision>> Precisions(const std::string& model_dir) {
  std::vector<hapi::v1::Precision> out;
  for (const std::string& name : absl::GetFlag(FLAGS_precisions)) {
    HAPI_ASSIGN_OR_RETURN(hapi::v1::Precision p, hapi::ParsePrecision(name));
    if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  }
  if (!out.empty()) return out;
  out.push_back(hapi::v1::FP32);
  if (std::filesystem::exists(absl::StrCat(model_dir, "/", hapi::kInt8RangesFile))) {
    out.push_back(hapi::v1::INT8);
  }
  return out;
}

// Analytic from the model's MACs, or measured by running it here.
absl::StatusOr<hapi::v1::DeviceProfile> ModelProfile(const std::string& device) {
  const std::string model_name = absl::GetFlag(FLAGS_model);
  HAPI_RETURN_IF_ERROR(hapi::ValidateName(model_name, "model name"));
  HAPI_ASSIGN_OR_RETURN(std::vector<int> batches, BatchSizes());
  const std::string model_dir =
      hapi::RepositoryLayout(absl::GetFlag(FLAGS_repository)).ModelDir(model_name);
  if (absl::GetFlag(FLAGS_analytic_gmacs) > 0) {
    HAPI_ASSIGN_OR_RETURN(hapi::ModelMetadata model, hapi::LoadModelMetadata(model_dir));
    return hapi::MakeAnalyticProfile(
        device, model.manifest, absl::GetFlag(FLAGS_analytic_gmacs) * 1e9,
        absl::GetFlag(FLAGS_analytic_layer_overhead_us) * 1e-6, batches);
  }
  HAPI_ASSIGN_OR_RETURN(std::vector<hapi::v1::Precision> precisions, Precisions(model_dir));
  HAPI_ASSIGN_OR_RETURN(hapi::FashionMnist data,
                        hapi::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir)));
  hapi::ProfilerOptions options;
  options.batch_sizes = batches;
  options.threads = absl::GetFlag(FLAGS_threads);
  options.iterations = absl::GetFlag(FLAGS_iterations);
  options.warmup_iterations = absl::GetFlag(FLAGS_warmup);
  options.progress = absl::GetFlag(FLAGS_progress);
  hapi::v1::DeviceProfile profile;
  for (hapi::v1::Precision precision : precisions) {
    hapi::ModelOptions model_options;
    model_options.int8 = precision == hapi::v1::INT8;
    HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const hapi::Model> model,
                          hapi::LoadTorchModel(model_dir, model_options));
    options.precision = precision;
    if (options.progress) std::cerr << hapi::PrecisionName(precision) << ":\n";
    HAPI_ASSIGN_OR_RETURN(hapi::v1::DeviceProfile measured,
                          hapi::ProfileDevice(model, device, data.validation, options));
    if (profile.batches_size() == 0) {
      profile = std::move(measured);
    } else {
      for (auto& b : *measured.mutable_batches()) *profile.add_batches() = std::move(b);
    }
  }
  return profile;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Writes a device profile (per-stage and per-exit latencies) for a model: measured on "
      "this machine, analytic from MACs, or scaled from another profile.");
  absl::ParseCommandLine(argc, argv);
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device.empty()) return Fail(absl::InvalidArgumentError("--device is required"));
  if (absl::Status st = hapi::ValidateName(device, "device name"); !st.ok()) return Fail(st);
  const std::string out = absl::GetFlag(FLAGS_out).empty() ? absl::StrCat(device, ".profile.pbtxt")
                                                           : absl::GetFlag(FLAGS_out);
  absl::StatusOr<hapi::v1::DeviceProfile> profile =
      absl::GetFlag(FLAGS_scale).empty() ? ModelProfile(device) : ScaledProfile(device);
  if (!profile.ok()) return Fail(profile.status());
  profile->set_description(absl::GetFlag(FLAGS_description));
  if (absl::Status st = hapi::WriteTextProtoAtomically(out, *profile); !st.ok()) return Fail(st);
  std::cout << "wrote " << out << "\n";
  return 0;
}
