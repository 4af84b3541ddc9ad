// A graph imported from ONNX (model/onnx_import.h) behind the model seam
// (core/model.h): its cut points split it into stages, a candidate exit sits
// after each, and the last exit is the graph's own classifier tail. Early-exit
// heads are trained separately with the backbone frozen (model/
// imported_exits.h) and stored beside the graph (manifest.exit_weights);
// until one is attached, its exit is listed in the manifest but cannot run.
// Torch-free header.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model.h"
#include "hapi/v1/model.pb.h"
#include "model/onnx_import.h"

namespace hapi {

class DirectProgram;

// The ONNX file inside an imported model's directory.
inline constexpr char kImportedGraphFile[] = "model.onnx";

// What the manifest of an imported graph says beyond the graph itself.
struct ImportedModelInfo {
  std::string name;
  v1::InputSpec input;
  std::vector<std::string> class_names;  // empty: "0" .. "<classes - 1>"
  std::string dataset;
};

// The manifest of `graph` cut at `cuts` (SelectCutPoints): stage s ends at
// cut point s and is named by the tensor crossing it; exit s reads stage s;
// the last exit is the graph's classifier tail. INVALID_ARGUMENT when the
// input spec's shape is not the graph's or the class names do not match its
// output.
absl::StatusOr<v1::ModelManifest> MakeImportedManifest(const ImportedGraph& graph,
                                                       const std::vector<CutPoint>& cuts,
                                                       const ImportedModelInfo& info);

// True for manifests written by hapi-import (their backbone is an ONNX file).
bool IsImportedManifest(const v1::ModelManifest& manifest);

// An exit head of model/network.h's family: [3x3 stride-2 conv (batch norm
// folded) -> ReLU] -> adaptive average pool to pool x pool -> linear.
struct ExitHeadWeights {
  Weight conv_weight;  // O x C x 3 x 3; empty: no conv
  Weight conv_bias;    // O
  int pool = 1;
  Weight fc_weight;  // classes x (channels * pool * pool)
  Weight fc_bias;    // classes
};

// What a head of that family costs on a stage output of `input`'s shape, for
// `classes` classes: MACs (conv and linear; pooling and ReLU are not
// multiply-accumulates), parameters (batch norm folded), conv/linear layers.
struct ExitHeadCost {
  int64_t macs = 0;
  int64_t params = 0;
  int layers = 0;
};
ExitHeadCost HeadCost(const v1::TensorShape& input, int conv_channels, int pool, int classes);

// The exit heads file of an imported model (manifest.exit_weights): for each
// early exit in order, conv weight, conv bias, fc weight, fc bias (an empty
// conv when the head has none), as LibTorch's serialised tensor list.
absl::StatusOr<std::string> SerializeExitHeads(const std::vector<ExitHeadWeights>& heads);
// DATA_LOSS naming `what` when the bytes are not such a file.
absl::StatusOr<std::vector<ExitHeadWeights>> ParseExitHeads(absl::string_view bytes,
                                                            absl::string_view what);

class ImportedModel : public Model {
 public:
  // `manifest` as MakeImportedManifest wrote it for `graph`; DATA_LOSS when
  // they disagree. Honours options.channels_last and options.onednn; batch
  // norm is always folded where the graph allows.
  static absl::StatusOr<std::unique_ptr<ImportedModel>> Create(ImportedGraph graph,
                                                               v1::ModelManifest manifest,
                                                               const ModelOptions& options = {});
  ~ImportedModel() override;

  const v1::ModelManifest& manifest() const override { return manifest_; }
  absl::StatusOr<std::unique_ptr<Activations>> Input(const float* pixels, int n) const override;
  absl::Status RunStage(int stage, Activations& x) const override;
  // FAILED_PRECONDITION for an early exit whose head is not attached.
  absl::Status RunHead(int exit, const Activations& x,
                       std::vector<float>* probabilities) const override;

  // The graph's logits (before any final Softmax) for every row of `x`, the
  // output of the last stage: batch_size x num_classes floats.
  absl::Status FinalLogits(const Activations& x, std::vector<float>* logits) const;

  // Makes early exit `exit` runnable. Not thread-safe: attach every head
  // before the model is shared. INVALID_ARGUMENT when the shapes do not fit
  // the exit's stage output or the number of classes.
  absl::Status AttachHead(int exit, const ExitHeadWeights& head);
  bool HasHead(int exit) const;

  // Replaces the direct path by its int8 copy (DirectProgram::Int8), with
  // options.int8_ranges, else ranges calibrated on options.int8_calibration,
  // else the ranges hapi-quantize wrote into `model_dir`
  // (FAILED_PRECONDITION naming hapi-quantize when there are none, or when
  // the direct path cannot run this graph). Attach the heads first.
  absl::Status UseInt8(const std::string& model_dir, const ModelOptions& options);

  const ImportedGraph& graph() const { return graph_; }
  // The direct oneDNN path, when it runs this model (ModelOptions::direct).
  const DirectProgram* direct_program() const;

 private:
  struct Program;  // the stages and heads as LibTorch tensors

  ImportedModel(v1::ModelManifest manifest, ImportedGraph graph);
  absl::Status Failed(absl::string_view what, const std::exception& e) const;
  absl::Status Named(absl::Status status) const;  // prefixes the model's name

  const v1::ModelManifest manifest_;
  const ImportedGraph graph_;
  std::unique_ptr<Program> program_;  // constant after Create and AttachHead
};

// Writes `model_dir` (manifest.pbtxt and the ONNX file) atomically: a
// staging directory beside it, published in one rename.
absl::Status SaveImportedModel(const std::string& model_dir, absl::string_view onnx_bytes,
                               const v1::ModelManifest& manifest);

// A directory written by hapi-import: re-imports its ONNX file and cuts it
// where the manifest's stages end. With `attach_heads`, attaches the trained
// exit heads the manifest names (exit_weights), each of the MACs its exit
// states (DATA_LOSS otherwise); without, or when it names none, only the
// final exit runs.
absl::StatusOr<std::unique_ptr<ImportedModel>> OpenImportedModel(const std::string& model_dir,
                                                                 const ModelOptions& options,
                                                                 bool attach_heads);

// Attaches the heads of an exit heads file (manifest.exit_weights) to
// `model`; DATA_LOSS naming `path` when they do not fit its stages or the
// MACs its manifest states.
absl::Status AttachHeadsFile(const std::string& path, ImportedModel* model);

// Whether `options` ask for int8 (ModelOptions::int8, int8_ranges or
// int8_calibration).
bool WantsInt8(const ModelOptions& options);

// The int8 ranges hapi-quantize wrote into `model_dir` (kInt8RangesFile);
// FAILED_PRECONDITION naming hapi-quantize when there are none.
absl::StatusOr<std::map<std::string, float>> ReadInt8Ranges(const std::string& model_dir,
                                                            const std::string& model_name);

// A ModelLoader for a directory written by hapi-import: OpenImportedModel
// with its heads (and in int8 when `options` ask for it: UseInt8).
absl::StatusOr<std::shared_ptr<const Model>> LoadImportedModel(const std::string& model_dir,
                                                               const ModelOptions& options = {});

}  // namespace hapi
