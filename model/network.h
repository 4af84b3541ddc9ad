// The residual early-exit network. Includes LibTorch: only model/ sources
// include this header.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "core/input_spec.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

// conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus identity or 1x1-conv shortcut, ReLU.
class ResidualBlockImpl : public torch::nn::Module {
 public:
  ResidualBlockImpl(int in_channels, int out_channels, int stride);
  torch::Tensor forward(torch::Tensor x);

 private:
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, shortcut_conv_{nullptr};
  torch::nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, shortcut_bn_{nullptr};
};
TORCH_MODULE(ResidualBlock);

// [conv3x3/2 -> BN -> ReLU] -> adaptive average pool -> linear.
class ExitHeadImpl : public torch::nn::Module {
 public:
  ExitHeadImpl(int channels, int spatial, int conv_channels, int pool, int num_classes);
  torch::Tensor forward(torch::Tensor features);

 private:
  torch::nn::Conv2d conv_{nullptr};
  torch::nn::BatchNorm2d bn_{nullptr};
  torch::nn::AdaptiveAvgPool2d pool_{nullptr};
  torch::nn::Linear fc_{nullptr};
};
TORCH_MODULE(ExitHead);

// Stages and final classifier, for inputs of `input_channels`. Saved as
// backbone.pt.
class BackboneImpl : public torch::nn::Module {
 public:
  BackboneImpl(const v1::BackboneConfig& config, int input_channels);
  torch::nn::ModuleList stages{nullptr};          // each a Sequential
  torch::nn::Linear classifier{nullptr};          // after global average pooling
  std::vector<torch::nn::Sequential> stage_list;  // the same modules, typed
};
TORCH_MODULE(Backbone);

// The full over-provisioned network: a candidate exit after every stage; the
// exit after the last stage is the backbone's own final classifier.
class EarlyExitNetwork {
 public:
  // For inputs of `input`'s shape; by default a manifest's without an input
  // spec (1x28x28).
  explicit EarlyExitNetwork(const v1::BackboneConfig& config,
                            const v1::InputSpec& input = LegacyInputSpec());

  int num_stages() const { return static_cast<int>(stage_infos_.size()); }
  int num_exits() const { return num_stages(); }
  int final_exit() const { return num_exits() - 1; }
  const std::vector<v1::StageInfo>& stage_infos() const { return stage_infos_; }
  const std::vector<v1::ExitInfo>& exit_infos() const { return exit_infos_; }
  int64_t backbone_macs() const { return backbone_macs_; }
  int64_t full_network_macs() const { return full_network_macs_; }

  torch::Tensor ForwardStage(int stage, const torch::Tensor& x);
  // Logits of exit `exit` from the output of stage `exit` (exit == stage).
  torch::Tensor ExitLogits(int exit, const torch::Tensor& features);
  // Final-classifier logits only (no early exit evaluated).
  torch::Tensor ForwardFinal(torch::Tensor x);
  // Logits of every exit, shallowest first.
  std::vector<torch::Tensor> ForwardAllExits(torch::Tensor x);

  Backbone& backbone() { return backbone_; }
  torch::nn::ModuleList& exit_heads() { return exit_heads_; }
  void SetTraining(bool backbone_training, bool exits_training);
  // Backbone parameters stop requiring gradients: it cannot change while the
  // exits train.
  void FreezeBackbone();
  // Fresh random weights for every exit head (the backbone is untouched).
  void ResetExitHeads();
  int64_t NumParameters();

 private:
  // Construction steps, in this order: stage infos and backbone MACs first,
  // since the exits' MAC fractions need the full network's MACs.
  void DescribeStages(const v1::BackboneConfig& config, const v1::InputSpec& input);
  void AddExits(const v1::BackboneConfig& config);
  void AddExitHead(const v1::BackboneConfig& config, const v1::StageInfo& stage,
                   v1::ExitInfo* info);

  Backbone backbone_;
  torch::nn::ModuleList exit_heads_;  // exits 0..num_exits-2
  std::vector<ExitHead> head_list_;   // the same modules, typed
  std::vector<v1::StageInfo> stage_infos_;
  std::vector<v1::ExitInfo> exit_infos_;
  int64_t backbone_macs_ = 0;
  int64_t full_network_macs_ = 0;
};

// An input spec's per-channel normalisation, (x - mean[c]) / std[c], of
// n x channels x height x width floats in [0,1].
class InputNormalization {
 public:
  explicit InputNormalization(const v1::InputSpec& input);
  torch::Tensor operator()(const torch::Tensor& x) const { return (x - mean_) / std_; }

 private:
  torch::Tensor mean_, std_;  // 1 x channels x 1 x 1
};

// Pixels (uint8, n samples of `input`'s channels x height x width) ->
// normalised float tensor n x channels x height x width.
torch::Tensor ImagesToTensor(const uint8_t* pixels, int n, const v1::InputSpec& input);

}  // namespace hapi
