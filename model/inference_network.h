// The network prepared for CPU inference: batch norm folded into the
// preceding convolutions and the forward pass written with functional ops on
// plain tensors (no module dispatch). Internal to model/ (includes LibTorch).
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "model/early_exit_model.h"
#include "model/imported_model.h"
#include "model/network.h"
#include "model/onnx_import.h"

namespace hapi {

struct InferenceOptions {
  bool fuse_batch_norm = true;
  bool channels_last = true;
  bool onednn = true;  // call oneDNN's convolution directly
};

// The network as the lowered graph IR (model/onnx_import.h), for the direct
// oneDNN path: BN folded (requires options().fuse_batch_norm), one cut point
// per stage (its output; the last one is where the classifier tail begins),
// and the early exits' heads.
struct LoweredNetwork {
  ImportedGraph graph;
  std::vector<CutPoint> cuts;          // == graph.cut_points, one per stage, in order
  std::vector<ExitHeadWeights> heads;  // heads[e] for every early exit e (not the final one)
  std::vector<int> head_stage;  // the stage each early exit reads (manifest exits(e).after_stage())
};

class InferenceNetwork {
 public:
  // Copies (and folds) the weights of `model`, which eats `input` (its
  // manifest's effective input spec); later changes to the model's modules do
  // not affect this network.
  InferenceNetwork(EarlyExitModel& model, const v1::InputSpec& input,
                   const InferenceOptions& options);

  int num_stages() const { return static_cast<int>(stages_.size()); }
  int num_exits() const { return num_stages(); }
  const InferenceOptions& options() const { return options_; }

  // Float pixels in [0,1], n samples of channels x height x width ->
  // normalised n x channels x height x width input.
  torch::Tensor Input(const float* pixels, int n) const;
  torch::Tensor Stage(int stage, const torch::Tensor& x) const;
  torch::Tensor ExitLogits(int exit, const torch::Tensor& features) const;

  // Nodes per stage: the stem is a Conv (+ ReLU); a residual stage is conv1
  // (+ ReLU), conv2, the shortcut Conv when there is one, and the Add (+ ReLU)
  // of conv2 and the shortcut (or the stage input). The tail is
  // GlobalAveragePool, Flatten and the classifier (Gemm). Weights are copied
  // in standard (not channels-last) order. FAILED_PRECONDITION when batch norm
  // is not folded.
  absl::StatusOr<LoweredNetwork> Lower() const;

 private:
  // The early exits' heads and stages into `out` (Lower).
  void LowerHeads(LoweredNetwork* out) const;

  using TensorMap = std::map<std::string, torch::Tensor>;  // parameters and buffers by name
  struct Conv {
    torch::Tensor weight, bias;        // bias undefined when unfused
    torch::Tensor bn_scale, bn_shift;  // defined only when BN is not folded
    int stride = 1, padding = 0;
    bool use_onednn = false;
    torch::Tensor operator()(const torch::Tensor& x) const;
  };
  struct StageOps {
    Conv conv1, conv2, shortcut;
    bool residual = false, has_shortcut = false;
  };
  struct HeadOps {
    Conv conv;
    bool has_conv = false;
    int pool = 1;
    torch::Tensor fc_weight, fc_bias;
  };

  // From the model's tensors, batch norm folded into `conv` as options_ say.
  Conv MakeConv(const TensorMap& tensors, const std::string& conv, const std::string& bn,
                int stride, int padding) const;
  void BuildStages(const v1::ModelManifest& manifest, const TensorMap& backbone);
  void BuildHeads(const v1::ModelManifest& manifest, const TensorMap& backbone,
                  const TensorMap& heads);

  InferenceOptions options_;
  std::vector<StageOps> stages_;
  std::vector<HeadOps> heads_;   // per exit; the final one has pool 0 (global mean)
  std::vector<int> exit_stage_;  // per exit: the stage it reads
  std::string name_;             // the model's
  v1::InputSpec input_;
  InputNormalization normalize_;
};

}  // namespace hapi
