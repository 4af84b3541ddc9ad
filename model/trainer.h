// Two-stage training of the early-exit network: backbone first, then every
// candidate exit at once with the backbone frozen. Torch-free header.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/calibration_table.h"
#include "core/fashion_mnist.h"
#include "hapi/v1/model.pb.h"
#include "model/early_exit_model.h"

namespace hapi {

struct TrainerOptions {
  bool progress = true;  // progress bars on stderr
};

// The default architecture: 16-channel stem, groups of 16/32/64 channels with
// 3 residual blocks each (10 stages, 10 exits).
v1::BackboneConfig DefaultBackboneConfig();

// Defaults used by hapi-train (and so by the shipped default model).
v1::TrainingConfig DefaultTrainingConfig();

// Stage 1: trains stages + final classifier with SGD (momentum, Nesterov),
// warm-up + cosine learning rate, random shifts and flips. Records per-epoch
// time, loss and validation accuracy in the manifest's report.
absl::Status TrainBackbone(const v1::TrainingConfig& config, const ImageSet& train,
                           const ImageSet& validation, const TrainerOptions& options,
                           EarlyExitModel* model);

// Stage 2: trains all exit heads jointly (sum of their losses) with Adam while
// the backbone runs in eval mode without gradients: its weights, its
// batch-norm statistics and so its final predictions do not change.
absl::Status TrainExits(const v1::TrainingConfig& config, const ImageSet& train,
                        const TrainerOptions& options, EarlyExitModel* model);

// Runs every exit on every sample of `set` (eval mode) and records top-1
// label and the scores of every exit policy.
absl::StatusOr<CalibrationTable> Calibrate(EarlyExitModel& model, const ImageSet& set);

// Calibrates on validation and test and fills the per-exit report.
absl::Status CalibrateModel(const FashionMnist& data, EarlyExitModel* model);

// Replaces every exit head of a trained model with freshly initialised heads
// trained by TrainExits (exit settings of `config`: epochs, learning rate,
// distillation), then recalibrates. The backbone, and so the final exit's
// answers, do not change.
absl::Status RetrainExits(const v1::TrainingConfig& config, const FashionMnist& data,
                          const TrainerOptions& options, EarlyExitModel* model);

// The whole pipeline: create, train both stages, calibrate on validation and
// test, fill the report. `data.train` may be truncated by config.train_limit.
// The manifest's input spec is Fashion-MNIST's: 1x28x28, its mean and std.
// (Training and calibration here refuse, INVALID_ARGUMENT, a model that eats
// anything else.)
absl::StatusOr<std::unique_ptr<EarlyExitModel>> TrainEarlyExitModel(
    const std::string& name, const v1::BackboneConfig& backbone, const v1::TrainingConfig& config,
    const FashionMnist& data, const TrainerOptions& options);

}  // namespace hapi
