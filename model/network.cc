#include "model/network.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "model/trainer.h"

namespace hapi {
namespace nn = torch::nn;

namespace {

nn::Conv2d Conv(int in, int out, int kernel, int stride) {
  return nn::Conv2d(
      nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
}

int ConvOut(int size, int kernel, int stride) {
  return (size + 2 * (kernel / 2) - kernel) / stride + 1;
}

int64_t ConvMacs(int in, int out, int kernel, int out_height, int out_width) {
  return int64_t{out} * out_height * out_width * in * kernel * kernel;
}

// Head geometry shared by construction and MAC accounting, for a stage
// output of channels x height x width; its smaller side decides.
struct HeadShape {
  bool conv = false;
  int conv_out_height = 0, conv_out_width = 0;
  int pooled_channels = 0;
  int pool = 1;
};
HeadShape ExitHeadShape(const v1::BackboneConfig& c, const v1::TensorShape& stage) {
  HeadShape h;
  int size = std::min(stage.height(), stage.width());
  h.conv = c.exit_conv_channels() > 0 && size > c.exit_conv_min_size();
  h.pooled_channels = stage.channels();
  if (h.conv) {
    size = ConvOut(size, 3, 2);
    h.conv_out_height = ConvOut(stage.height(), 3, 2);
    h.conv_out_width = ConvOut(stage.width(), 3, 2);
    h.pooled_channels = c.exit_conv_channels();
  }
  h.pool = size >= 8 ? 4 : 2;
  return h;
}

int64_t ParameterCount(nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

v1::BackboneConfig DefaultBackboneConfig() {
  v1::BackboneConfig c;
  c.set_stem_channels(16);
  for (int w : {16, 32, 64}) c.add_widths(w);
  for (int b : {3, 3, 3}) c.add_blocks_per_group(b);
  c.set_num_classes(10);
  c.set_exit_conv_channels(32);
  c.set_exit_conv_min_size(14);
  return c;
}

ResidualBlockImpl::ResidualBlockImpl(int in_channels, int out_channels, int stride) {
  conv1_ = register_module("conv1", Conv(in_channels, out_channels, 3, stride));
  bn1_ = register_module("bn1", nn::BatchNorm2d(out_channels));
  conv2_ = register_module("conv2", Conv(out_channels, out_channels, 3, 1));
  bn2_ = register_module("bn2", nn::BatchNorm2d(out_channels));
  if (stride != 1 || in_channels != out_channels) {
    shortcut_conv_ = register_module("shortcut_conv", Conv(in_channels, out_channels, 1, stride));
    shortcut_bn_ = register_module("shortcut_bn", nn::BatchNorm2d(out_channels));
  }
}

torch::Tensor ResidualBlockImpl::forward(torch::Tensor x) {
  torch::Tensor out = torch::relu(bn1_(conv1_(x)));
  out = bn2_(conv2_(out));
  torch::Tensor shortcut = shortcut_conv_ ? shortcut_bn_(shortcut_conv_(x)) : x;
  return torch::relu(out + shortcut);
}

ExitHeadImpl::ExitHeadImpl(int channels, int spatial, int conv_channels, int pool,
                           int num_classes) {
  int pooled_channels = channels;
  if (conv_channels > 0) {
    conv_ = register_module("conv", Conv(channels, conv_channels, 3, 2));
    bn_ = register_module("bn", nn::BatchNorm2d(conv_channels));
    pooled_channels = conv_channels;
  }
  pool_ = register_module("pool", nn::AdaptiveAvgPool2d(nn::AdaptiveAvgPool2dOptions(pool)));
  fc_ = register_module("fc", nn::Linear(pooled_channels * pool * pool, num_classes));
}

torch::Tensor ExitHeadImpl::forward(torch::Tensor x) {
  if (conv_) x = torch::relu(bn_(conv_(x)));
  return fc_(pool_(x).flatten(1));
}

BackboneImpl::BackboneImpl(const v1::BackboneConfig& c, int input_channels) {
  stages = register_module("stages", nn::ModuleList());
  stage_list.push_back(nn::Sequential(Conv(input_channels, c.stem_channels(), 3, 1),
                                      nn::BatchNorm2d(c.stem_channels()), nn::ReLU()));
  int channels = c.stem_channels();
  for (int g = 0; g < c.widths_size(); ++g) {
    for (int b = 0; b < c.blocks_per_group(g); ++b) {
      int stride = (g > 0 && b == 0) ? 2 : 1;
      stage_list.push_back(nn::Sequential(ResidualBlock(channels, c.widths(g), stride)));
      channels = c.widths(g);
    }
  }
  for (const auto& s : stage_list) stages->push_back(s);
  classifier = register_module("classifier", nn::Linear(channels, c.num_classes()));
}

EarlyExitNetwork::EarlyExitNetwork(const v1::BackboneConfig& c, const v1::InputSpec& input)
    : backbone_(c, input.channels()), exit_heads_(nn::ModuleList()) {
  DescribeStages(c, input);
  AddExits(c);
}

// Walks the stages once, recording shapes and MACs (BN folds into the conv at
// inference, ReLU/add/pool are not multiply-accumulates).
void EarlyExitNetwork::DescribeStages(const v1::BackboneConfig& c, const v1::InputSpec& input) {
  int channels = c.stem_channels(), height = input.height(), width = input.width();
  auto add_stage = [&](const std::string& name, int64_t macs, int64_t params, int layers) {
    v1::StageInfo s;
    s.set_index(static_cast<int>(stage_infos_.size()));
    s.set_name(name);
    s.mutable_output()->set_channels(channels);
    s.mutable_output()->set_height(height);
    s.mutable_output()->set_width(width);
    s.set_macs(macs);
    s.set_params(params);
    s.set_layers(layers);
    stage_infos_.push_back(s);
  };
  add_stage("stem", ConvMacs(input.channels(), channels, 3, height, width),
            ParameterCount(*backbone_->stage_list[0]), 1);
  int stage = 1;
  for (int g = 0; g < c.widths_size(); ++g) {
    for (int b = 0; b < c.blocks_per_group(g); ++b, ++stage) {
      int stride = (g > 0 && b == 0) ? 2 : 1;
      int out = c.widths(g);
      int out_height = ConvOut(height, 3, stride), out_width = ConvOut(width, 3, stride);
      int64_t macs = ConvMacs(channels, out, 3, out_height, out_width) +
                     ConvMacs(out, out, 3, out_height, out_width);
      bool projection = stride != 1 || channels != out;
      if (projection) macs += ConvMacs(channels, out, 1, out_height, out_width);
      channels = out;
      height = out_height;
      width = out_width;
      add_stage(absl::StrCat("group", g, ".block", b), macs,
                ParameterCount(*backbone_->stage_list[stage]), projection ? 3 : 2);
    }
  }
  for (const auto& s : stage_infos_) backbone_macs_ += s.macs();
}

// An exit after every stage: a new head after each but the last, whose exit
// is the backbone's own classifier.
void EarlyExitNetwork::AddExits(const v1::BackboneConfig& c) {
  // The final classifier reads the last stage's channels after global pooling.
  const int64_t final_macs = int64_t{stage_infos_.back().output().channels()} * c.num_classes();
  full_network_macs_ = backbone_macs_ + final_macs;
  int64_t cumulative = 0;
  for (int e = 0; e < num_exits(); ++e) {
    const v1::StageInfo& s = stage_infos_[e];
    cumulative += s.macs();
    v1::ExitInfo info;
    info.set_index(e);
    info.set_after_stage(e);
    info.set_is_final(e == num_exits() - 1);
    if (info.is_final()) {
      info.set_name("final");
      info.set_macs(final_macs);
      info.set_layers(1);
      info.set_params(ParameterCount(*backbone_->classifier));
    } else {
      info.set_name(absl::StrCat("exit", e, ".", s.name()));
      AddExitHead(c, s, &info);
    }
    info.set_cumulative_macs_fraction(static_cast<double>(cumulative + info.macs()) /
                                      static_cast<double>(full_network_macs_));
    exit_infos_.push_back(info);
  }
}

// A freshly initialised head reading `stage`'s output; fills its MACs, params
// and layers into `info`.
void EarlyExitNetwork::AddExitHead(const v1::BackboneConfig& c, const v1::StageInfo& stage,
                                   v1::ExitInfo* info) {
  const int channels = stage.output().channels();
  HeadShape h = ExitHeadShape(c, stage.output());
  ExitHead head(channels, std::min(stage.output().height(), stage.output().width()),
                h.conv ? c.exit_conv_channels() : 0, h.pool, c.num_classes());
  int64_t head_macs = int64_t{h.pooled_channels} * h.pool * h.pool * c.num_classes();
  if (h.conv) {
    head_macs += ConvMacs(channels, c.exit_conv_channels(), 3, h.conv_out_height, h.conv_out_width);
  }
  info->set_macs(head_macs);
  info->set_params(ParameterCount(*head));
  info->set_layers(h.conv ? 2 : 1);
  exit_heads_->push_back(head);
  head_list_.push_back(head);
}

torch::Tensor EarlyExitNetwork::ForwardStage(int stage, const torch::Tensor& x) {
  return backbone_->stage_list[stage]->forward(x);
}

torch::Tensor EarlyExitNetwork::ExitLogits(int exit, const torch::Tensor& features) {
  if (exit == final_exit()) {
    return backbone_->classifier(features.mean({2, 3}));
  }
  return head_list_[exit]->forward(features);
}

torch::Tensor EarlyExitNetwork::ForwardFinal(torch::Tensor x) {
  for (int s = 0; s < num_stages(); ++s) x = ForwardStage(s, x);
  return ExitLogits(final_exit(), x);
}

std::vector<torch::Tensor> EarlyExitNetwork::ForwardAllExits(torch::Tensor x) {
  std::vector<torch::Tensor> logits;
  logits.reserve(num_exits());
  for (int s = 0; s < num_stages(); ++s) {
    x = ForwardStage(s, x);
    logits.push_back(ExitLogits(s, x));
  }
  return logits;
}

void EarlyExitNetwork::SetTraining(bool backbone_training, bool exits_training) {
  backbone_->train(backbone_training);
  exit_heads_->train(exits_training);
}

void EarlyExitNetwork::ResetExitHeads() {
  for (auto& module : exit_heads_->modules(/*include_self=*/false)) {
    if (auto* conv = module->as<nn::Conv2d>()) conv->reset_parameters();
    if (auto* linear = module->as<nn::Linear>()) linear->reset_parameters();
    if (auto* bn = module->as<nn::BatchNorm2d>()) bn->reset_parameters();
  }
}

void EarlyExitNetwork::FreezeBackbone() {
  for (auto& p : backbone_->parameters()) p.set_requires_grad(false);
}

int64_t EarlyExitNetwork::NumParameters() {
  return ParameterCount(*backbone_) + ParameterCount(*exit_heads_);
}

InputNormalization::InputNormalization(const v1::InputSpec& input)
    : mean_(torch::tensor(ChannelMeans(input)).view({1, -1, 1, 1})),
      std_(torch::tensor(ChannelStds(input)).view({1, -1, 1, 1})) {}

torch::Tensor ImagesToTensor(const uint8_t* pixels, int n, const v1::InputSpec& input) {
  torch::Tensor t =
      torch::from_blob(const_cast<uint8_t*>(pixels),
                       {n, input.channels(), input.height(), input.width()}, torch::kUInt8)
          .to(torch::kFloat32);
  return InputNormalization(input)(t.div_(255.0f));
}

}  // namespace hapi
