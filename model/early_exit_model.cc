#include "model/early_exit_model.h"

#include <filesystem>
#include <map>
#include <sstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "core/model_report.h"
#include "core/status_macros.h"
#include "model/network.h"

namespace hapi {
namespace {

constexpr float kFashionMnistMean = 0.2860f;
constexpr float kFashionMnistStd = 0.3530f;

absl::Status CheckConfig(const v1::BackboneConfig& c) {
  if (c.stem_channels() <= 0 || c.widths_size() == 0 ||
      c.widths_size() != c.blocks_per_group_size() || c.num_classes() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid backbone config: ", c.ShortDebugString()));
  }
  for (int g = 0; g < c.widths_size(); ++g) {
    if (c.widths(g) <= 0 || c.blocks_per_group(g) <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid backbone config (group ", g, "): ", c.ShortDebugString()));
    }
  }
  return absl::OkStatus();
}

template <typename Module>
absl::StatusOr<std::string> SerializeModule(Module& module, const std::string& what) {
  try {
    std::ostringstream out;
    torch::save(module, out);
    return out.str();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("saving ", what, ": ", e.what_without_backtrace()));
  }
}

std::map<std::string, std::vector<int64_t>> Shapes(torch::nn::Module& module) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& p : module.named_parameters()) shapes[p.key()] = p.value().sizes().vec();
  for (const auto& b : module.named_buffers()) shapes[b.key()] = b.value().sizes().vec();
  return shapes;
}

template <typename Module>
absl::Status LoadModule(Module& module, const std::string& path) {
  HAPI_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  // torch::load replaces tensors wholesale, shapes included: check that the
  // file holds weights of this architecture.
  const auto expected = Shapes(*module);
  try {
    std::istringstream in(bytes);
    torch::load(module, in);
  } catch (const c10::Error& e) {
    return absl::DataLossError(
        absl::StrCat("cannot load weights ", path, ": ", e.what_without_backtrace()));
  }
  const auto loaded = Shapes(*module);
  for (const auto& [name, shape] : expected) {
    auto it = loaded.find(name);
    if (it == loaded.end() || it->second != shape) {
      return absl::DataLossError(absl::StrCat("cannot load weights ", path, ": tensor ", name,
                                              " has the wrong shape for this architecture"));
    }
  }
  return absl::OkStatus();
}

// Files named by a manifest must stay inside the model directory.
absl::Status CheckRelativeFile(const std::string& file, const std::string& what) {
  if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..") {
    return absl::DataLossError(
        absl::StrCat("manifest names an invalid ", what, " file '", file, "'"));
  }
  return absl::OkStatus();
}

}  // namespace

EarlyExitModel::~EarlyExitModel() = default;

absl::StatusOr<std::unique_ptr<EarlyExitModel>> EarlyExitModel::Create(
    const std::string& name, const v1::BackboneConfig& config) {
  HAPI_RETURN_IF_ERROR(ValidateName(name, "model name"));
  HAPI_RETURN_IF_ERROR(CheckConfig(config));
  std::unique_ptr<EarlyExitModel> model(new EarlyExitModel());
  model->network_ = std::make_unique<EarlyExitNetwork>(config);
  v1::ModelManifest& m = model->manifest_;
  m.set_name(name);
  m.set_dataset("fashion-mnist");
  for (const char* c : kFashionMnistClassNames) m.add_class_names(c);
  *m.mutable_backbone() = config;
  for (const auto& s : model->network_->stage_infos()) *m.add_stages() = s;
  for (const auto& e : model->network_->exit_infos()) *m.add_exits() = e;
  m.set_backbone_macs(model->network_->backbone_macs());
  m.set_full_network_macs(model->network_->full_network_macs());
  m.set_backbone_weights(kBackboneFile);
  m.set_exit_weights(kExitsFile);
  m.set_validation_calibration(kValidationCalibrationFile);
  m.set_test_calibration(kTestCalibrationFile);
  m.set_input_mean(kFashionMnistMean);
  m.set_input_std(kFashionMnistStd);
  return model;
}

absl::StatusOr<std::unique_ptr<EarlyExitModel>> EarlyExitModel::Load(const std::string& model_dir) {
  HAPI_ASSIGN_OR_RETURN(ModelMetadata metadata, LoadModelMetadata(model_dir));
  const v1::ModelManifest& manifest = metadata.manifest;
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<EarlyExitModel> model,
                        Create(manifest.name(), manifest.backbone()));
  if (model->network_->full_network_macs() != manifest.full_network_macs() ||
      model->network_->num_exits() != manifest.exits_size()) {
    return absl::DataLossError(absl::StrCat(model_dir, "/", kManifestFile,
                                            ": stages/exits do not match its backbone config"));
  }
  // Stage and exit geometry is derived from the config; take the freshly
  // computed one so manifests written by older versions gain new fields.
  v1::ModelManifest derived = model->manifest_;
  model->manifest_ = manifest;
  *model->manifest_.mutable_stages() = derived.stages();
  *model->manifest_.mutable_exits() = derived.exits();
  HAPI_RETURN_IF_ERROR(CheckRelativeFile(manifest.backbone_weights(), "backbone weights"));
  HAPI_RETURN_IF_ERROR(CheckRelativeFile(manifest.exit_weights(), "exit weights"));
  HAPI_RETURN_IF_ERROR(LoadModule(model->network_->backbone(),
                                  absl::StrCat(model_dir, "/", manifest.backbone_weights())));
  HAPI_RETURN_IF_ERROR(LoadModule(model->network_->exit_heads(),
                                  absl::StrCat(model_dir, "/", manifest.exit_weights())));
  model->network_->SetTraining(false, false);
  model->validation_table_ = std::move(metadata.validation);
  model->test_table_ = std::move(metadata.test);
  return model;
}

void EarlyExitModel::set_calibration(CalibrationTable validation, CalibrationTable test) {
  validation_table_ = std::move(validation);
  test_table_ = std::move(test);
}

absl::Status EarlyExitModel::Save(const std::string& model_dir) const {
  HAPI_ASSIGN_OR_RETURN(std::string staging, MakeStagingDirectory(model_dir));
  auto write = [&](const std::string& file, absl::string_view bytes) {
    return WriteFileAtomically(absl::StrCat(staging, "/", file), bytes);
  };
  absl::Status st = [&]() -> absl::Status {
    HAPI_ASSIGN_OR_RETURN(std::string backbone, SerializeModule(network_->backbone(), "backbone"));
    HAPI_ASSIGN_OR_RETURN(std::string exits, SerializeModule(network_->exit_heads(), "exit heads"));
    HAPI_RETURN_IF_ERROR(write(kBackboneFile, backbone));
    HAPI_RETURN_IF_ERROR(write(kExitsFile, exits));
    HAPI_RETURN_IF_ERROR(write(kValidationCalibrationFile, validation_table_.Serialize()));
    HAPI_RETURN_IF_ERROR(write(kTestCalibrationFile, test_table_.Serialize()));
    v1::ModelManifest manifest = manifest_;
    manifest.mutable_report()->set_weights_bytes(
        static_cast<int64_t>(backbone.size() + exits.size()));
    if (manifest.created_at().empty()) {
      manifest.set_created_at(
          absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
    }
    HAPI_RETURN_IF_ERROR(write(kReportFile, FormatTrainingReport(manifest)));
    HAPI_RETURN_IF_ERROR(
        WriteTextProtoAtomically(absl::StrCat(staging, "/", kManifestFile), manifest));
    return PublishDirectory(staging, model_dir);
  }();
  if (!st.ok()) {
    std::error_code ec;
    std::filesystem::remove_all(staging, ec);
  }
  return st;
}

}  // namespace hapi
