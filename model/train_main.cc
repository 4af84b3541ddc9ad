// hapi-train: trains the backbone and all candidate exits on Fashion-MNIST and
// writes the model to repository/models/<name>/. With an existing model and
// no --retrain, prints the stored report instead.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "core/model_report.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "model/early_exit_model.h"
#include "model/trainer.h"

ABSL_FLAG(std::string, data_dir, hapi::kDefaultFashionMnistDir, "Fashion-MNIST IDX .gz files");
ABSL_FLAG(std::string, repository, "repository", "Repository root (models/ lives inside)");
ABSL_FLAG(std::string, model, "fmnist-resnet", "Model name");
ABSL_FLAG(bool, retrain, false, "Train even when the model already exists");
ABSL_FLAG(int32_t, epochs, -1, "Backbone epochs (-1: default)");
ABSL_FLAG(int32_t, exit_epochs, -1, "Exit-head epochs (-1: default)");
ABSL_FLAG(double, exit_learning_rate, -1, "Exit-head peak learning rate, Adam (-1: default)");
ABSL_FLAG(int32_t, train_limit, 0, "Use only the first N training samples (0: all 55k)");
ABSL_FLAG(int32_t, threads, 0, "Intra-op threads (0: LibTorch default)");
ABSL_FLAG(uint64_t, seed, 7, "Seed for initialisation, data order and augmentation");
ABSL_FLAG(int32_t, stem, -1, "Stem channels (-1: default)");
ABSL_FLAG(std::vector<std::string>, widths, {}, "Channels per group, e.g. 16,32,64");
ABSL_FLAG(std::vector<std::string>, blocks, {}, "Residual blocks per group, e.g. 3,3,3");
ABSL_FLAG(std::string, report_out, "", "Also write the markdown report to this file");
ABSL_FLAG(bool, progress, true, "Show progress bars");
ABSL_FLAG(double, exit_distillation, -1,
          "Weight of distillation from the final classifier in the exit loss, in [0, 1] "
          "(-1: default)");
ABSL_FLAG(double, distillation_temperature, -1, "Distillation temperature (-1: default)");
ABSL_FLAG(bool, retrain_exits, false,
          "Keep the existing model's backbone and train fresh exit heads (exit settings from "
          "the flags), then recalibrate");
ABSL_FLAG(bool, recalibrate, false,
          "Recompute the calibration tables and report of an existing model (no training)");

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "hapi-train: %s\n", std::string(status.message()).c_str());
  return 1;
}

bool ParseIntList(const std::vector<std::string>& in,
                  google::protobuf::RepeatedField<int32_t>* out) {
  out->Clear();
  for (const std::string& s : in) {
    int v;
    if (!absl::SimpleAtoi(s, &v) || v <= 0) return false;
    out->Add(v);
  }
  return true;
}

hapi::v1::TrainingConfig TrainingConfigFromFlags() {
  hapi::v1::TrainingConfig config = hapi::DefaultTrainingConfig();
  if (absl::GetFlag(FLAGS_epochs) >= 0) config.set_backbone_epochs(absl::GetFlag(FLAGS_epochs));
  if (absl::GetFlag(FLAGS_exit_epochs) >= 0) {
    config.set_exit_epochs(absl::GetFlag(FLAGS_exit_epochs));
  }
  if (absl::GetFlag(FLAGS_exit_learning_rate) >= 0) {
    config.set_exit_learning_rate(absl::GetFlag(FLAGS_exit_learning_rate));
  }
  if (absl::GetFlag(FLAGS_exit_distillation) >= 0) {
    config.set_exit_distillation(absl::GetFlag(FLAGS_exit_distillation));
  }
  if (absl::GetFlag(FLAGS_distillation_temperature) >= 0) {
    config.set_distillation_temperature(absl::GetFlag(FLAGS_distillation_temperature));
  }
  config.set_train_limit(absl::GetFlag(FLAGS_train_limit));
  config.set_threads(absl::GetFlag(FLAGS_threads));
  config.set_seed(absl::GetFlag(FLAGS_seed));
  return config;
}

absl::StatusOr<hapi::v1::BackboneConfig> BackboneConfigFromFlags() {
  hapi::v1::BackboneConfig backbone = hapi::DefaultBackboneConfig();
  if (absl::GetFlag(FLAGS_stem) > 0) backbone.set_stem_channels(absl::GetFlag(FLAGS_stem));
  if (!absl::GetFlag(FLAGS_widths).empty() &&
      !ParseIntList(absl::GetFlag(FLAGS_widths), backbone.mutable_widths())) {
    return absl::InvalidArgumentError("--widths must be positive integers");
  }
  if (!absl::GetFlag(FLAGS_blocks).empty() &&
      !ParseIntList(absl::GetFlag(FLAGS_blocks), backbone.mutable_blocks_per_group())) {
    return absl::InvalidArgumentError("--blocks must be positive integers");
  }
  return backbone;
}

// Saves, reloads (so the report shows what is stored, weights size
// included), prints the report and optionally writes it out.
absl::Status SaveAndReport(hapi::EarlyExitModel& model, const std::string& model_dir,
                           const char* what) {
  HAPI_RETURN_IF_ERROR(model.Save(model_dir));
  HAPI_ASSIGN_OR_RETURN(auto stored, hapi::EarlyExitModel::Load(model_dir));
  std::string report = hapi::FormatTrainingReport(stored->manifest());
  std::cout << what << " " << model_dir << "\n\n" << report;
  if (absl::GetFlag(FLAGS_report_out).empty()) return absl::OkStatus();
  return hapi::WriteFileAtomically(absl::GetFlag(FLAGS_report_out), report);
}

// --recalibrate and --retrain_exits: the stored backbone stays as it is.
absl::Status UpdateStoredModel(const std::string& model_dir, const hapi::v1::TrainingConfig& config,
                               const hapi::TrainerOptions& options) {
  HAPI_ASSIGN_OR_RETURN(auto model, hapi::EarlyExitModel::Load(model_dir));
  // A manifest written before the input spec existed gains it.
  HAPI_ASSIGN_OR_RETURN(*model->mutable_manifest()->mutable_input(),
                        hapi::EffectiveInputSpec(model->manifest()));
  HAPI_ASSIGN_OR_RETURN(hapi::FashionMnist data,
                        hapi::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir)));
  const bool retrain_exits = absl::GetFlag(FLAGS_retrain_exits);
  HAPI_RETURN_IF_ERROR(retrain_exits ? hapi::RetrainExits(config, data, options, model.get())
                                     : hapi::CalibrateModel(data, model.get()));
  return SaveAndReport(*model, model_dir,
                       retrain_exits ? "Retrained the exits of" : "Recalibrated");
}

absl::Status ShowStoredModel(const std::string& model_dir) {
  HAPI_ASSIGN_OR_RETURN(auto model, hapi::EarlyExitModel::Load(model_dir));
  std::cout << "Using existing model " << model_dir << " (pass --retrain to train again)\n\n"
            << hapi::FormatTrainingReport(model->manifest());
  return absl::OkStatus();
}

absl::Status TrainNewModel(const std::string& name, const std::string& model_dir,
                           const hapi::v1::TrainingConfig& config,
                           const hapi::TrainerOptions& options) {
  HAPI_ASSIGN_OR_RETURN(hapi::v1::BackboneConfig backbone, BackboneConfigFromFlags());
  HAPI_ASSIGN_OR_RETURN(hapi::FashionMnist data,
                        hapi::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir)));
  HAPI_ASSIGN_OR_RETURN(auto model,
                        hapi::TrainEarlyExitModel(name, backbone, config, data, options));
  return SaveAndReport(*model, model_dir, "Saved");
}

absl::Status Run() {
  const std::string name = absl::GetFlag(FLAGS_model);
  HAPI_RETURN_IF_ERROR(hapi::ValidateName(name, "model name"));
  const std::string model_dir =
      hapi::RepositoryLayout(absl::GetFlag(FLAGS_repository)).ModelDir(name);
  const hapi::v1::TrainingConfig config = TrainingConfigFromFlags();
  hapi::TrainerOptions options;
  options.progress = absl::GetFlag(FLAGS_progress);
  if (absl::GetFlag(FLAGS_recalibrate) || absl::GetFlag(FLAGS_retrain_exits)) {
    return UpdateStoredModel(model_dir, config, options);
  }
  if (!absl::GetFlag(FLAGS_retrain) &&
      std::filesystem::exists(absl::StrCat(model_dir, "/", hapi::kManifestFile))) {
    return ShowStoredModel(model_dir);
  }
  return TrainNewModel(name, model_dir, config, options);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Trains a residual early-exit CNN on Fashion-MNIST (backbone, then all exits with the "
      "backbone frozen) and stores it in the repository.");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status st = Run(); !st.ok()) return Fail(st);
  return 0;
}
