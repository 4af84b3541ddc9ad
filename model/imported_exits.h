// Exit heads for an imported backbone (model/imported_model.h), trained with
// the backbone frozen, then calibration tables and the report: what makes an
// imported ONNX graph a full early-exit model the optimizer can plan for.
//
// The heads learn from the features the inference path computes: the
// imported model's own stages (oneDNN, batch norm folded) run each training
// image once, and the features each head reads are cached. The backbone's
// file and stages are never touched, so the final exit's answers stay
// bit-identical. Torch-free header.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/calibration_table.h"
#include "core/model.h"
#include "hapi/v1/model.pb.h"
#include "model/labelled_images.h"

namespace hapi {

struct ImportedExitOptions {
  int epochs = 8;               // passes over the cached training features
  double learning_rate = 2e-3;  // Adam, peak of warm-up then cosine decay
  int batch_size = 128;
  uint64_t seed = 7;          // head initialisation and data order
  int threads = 0;            // intra-op threads; 0: every core
  int train_limit = 0;        // first N training samples; 0: all
  int calibration_limit = 0;  // first N validation and test samples; 0: all
  // The head family of model/network.h: [3x3/2 conv -> BN -> ReLU] -> adaptive
  // average pool -> linear, at most this share of the backbone's MACs each.
  double max_head_macs_fraction = 0.05;
  int exit_conv_channels = 32;  // widest conv tried (the native default)
  int exit_conv_min_size = 14;  // a conv only on stage outputs larger than this
  // The cached features may take at most this much memory; beyond it the
  // trainer refuses and says how many samples would fit.
  int64_t feature_cache_bytes = int64_t{4} << 30;
  bool progress = true;  // progress bars on stderr
};

// One early exit's head: conv channels (0: none) and pool side, and its cost.
struct ExitHeadChoice {
  int exit = 0;
  int conv_channels = 0;
  int pool = 1;
  int64_t macs = 0, params = 0;
  int layers = 0;
};

// For every early exit of `manifest`, the largest head of the family within
// the MACs budget: as the native network chooses (conv of
// exit_conv_channels on a stage output larger than exit_conv_min_size, then
// pool 4 when the pooled side is at least 8, else 2), then, while over the
// budget, half the conv channels (down to 8), then no conv with pool 4, 2, 1.
// INVALID_ARGUMENT naming the exit when even a linear layer on the globally
// pooled stage output is over the budget.
absl::StatusOr<std::vector<ExitHeadChoice>> ChooseExitHeads(const v1::ModelManifest& manifest,
                                                            const ImportedExitOptions& options);

// What training did, for the caller and the tests.
struct ImportedExitsSummary {
  std::vector<ExitHeadChoice> heads;
  std::vector<double> epoch_loss;           // mean loss per head, per epoch
  std::vector<double> last_epoch_accuracy;  // per head, on the training samples
  int train_samples = 0;
  double feature_seconds = 0, train_seconds = 0, calibration_seconds = 0;
  int64_t feature_cache_bytes = 0;
  v1::ModelManifest manifest;  // as written
};

// Trains the exit heads of the imported model in `model_dir` (written by
// hapi-import) on `data` (already in the model's input format; its classes
// must be the model's), calibrates on its validation and test splits and
// rewrites `model_dir` atomically with the heads file, both calibration
// tables, report.md and the manifest (exit MACs, training settings, split,
// per-exit report). Heads trained before are replaced.
absl::StatusOr<ImportedExitsSummary> TrainImportedExits(const std::string& model_dir,
                                                        const LabelledSplits& data,
                                                        const ImportedExitOptions& options);

// Runs every exit of `model` on every sample of `images` as the executor
// does (stages in order, each exit's head on its stage's output) and records
// each exit's top-1 label and scores: a calibration table that predicts the
// served answers. `label` names the progress bar (none when empty).
absl::StatusOr<CalibrationTable> CalibrateOnImages(const Model& model, const LabelledImages& images,
                                                   const std::string& label);

// report.md of an imported model with trained exits: backbone, heads chosen
// and the rule, data, per-exit accuracy and MACs.
std::string FormatImportedExitsReport(const v1::ModelManifest& manifest,
                                      const std::vector<ExitHeadChoice>& heads,
                                      double max_head_macs_fraction);

}  // namespace hapi
