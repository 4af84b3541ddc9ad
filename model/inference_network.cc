#include "model/inference_network.h"

#include <cmath>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"

namespace hapi {
namespace {

using TensorMap = std::map<std::string, torch::Tensor>;

TensorMap NamedTensors(torch::nn::Module& module) {
  TensorMap out;
  for (const auto& p : module.named_parameters()) out[p.key()] = p.value().detach().clone();
  for (const auto& b : module.named_buffers()) out[b.key()] = b.value().detach().clone();
  return out;
}

constexpr double kBatchNormEps = 1e-5;  // torch::nn::BatchNorm2d default

}  // namespace

torch::Tensor InferenceNetwork::Conv::operator()(const torch::Tensor& x) const {
  // oneDNN directly: LibTorch's own heuristic sends small batch-1
  // convolutions to im2col + BLAS, which is far slower here.
  torch::Tensor y = use_onednn ? at::mkldnn_convolution(x, weight, bias, {padding, padding},
                                                        {stride, stride}, {1, 1}, 1)
                               : torch::conv2d(x, weight, bias, stride, padding);
  if (bn_scale.defined()) y = y * bn_scale + bn_shift;
  return y;
}

InferenceNetwork::InferenceNetwork(EarlyExitModel& model, const v1::InputSpec& input,
                                   const InferenceOptions& options)
    : options_(options), input_(input), normalize_(input) {
  torch::NoGradGuard no_grad;
  EarlyExitNetwork& net = model.network();
  const TensorMap backbone = NamedTensors(*net.backbone());
  const TensorMap heads = NamedTensors(*net.exit_heads());
  BuildStages(model.manifest(), backbone);
  BuildHeads(model.manifest(), backbone, heads);
}

InferenceNetwork::Conv InferenceNetwork::MakeConv(const TensorMap& t, const std::string& conv,
                                                  const std::string& bn, int stride,
                                                  int padding) const {
  Conv c;
  c.use_onednn = options_.onednn;
  c.stride = stride;
  c.padding = padding;
  torch::Tensor w = t.at(conv + ".weight");
  torch::Tensor scale =
      t.at(bn + ".weight") / torch::sqrt(t.at(bn + ".running_var") + kBatchNormEps);
  torch::Tensor shift = t.at(bn + ".bias") - t.at(bn + ".running_mean") * scale;
  if (options_.fuse_batch_norm) {
    c.weight = (w * scale.view({-1, 1, 1, 1})).contiguous();
    c.bias = shift.contiguous();
  } else {
    c.weight = w;
    c.bn_scale = scale.view({1, -1, 1, 1});
    c.bn_shift = shift.view({1, -1, 1, 1});
  }
  if (options_.channels_last) c.weight = c.weight.contiguous(torch::MemoryFormat::ChannelsLast);
  return c;
}

void InferenceNetwork::BuildStages(const v1::ModelManifest& manifest, const TensorMap& backbone) {
  int in_size = input_.height();
  for (int s = 0; s < manifest.stages_size(); ++s) {
    const auto& info = manifest.stages(s);
    std::string p = absl::StrCat("stages.", s, ".0.");
    StageOps op;
    if (s == 0) {
      // The stem is Sequential(conv, bn, relu).
      op.conv1 = MakeConv(backbone, "stages.0.0", "stages.0.1", 1, 1);
    } else {
      int stride = in_size == info.output().height() ? 1 : 2;
      op.residual = true;
      op.conv1 = MakeConv(backbone, p + "conv1", p + "bn1", stride, 1);
      op.conv2 = MakeConv(backbone, p + "conv2", p + "bn2", 1, 1);
      op.has_shortcut = backbone.count(p + "shortcut_conv.weight") > 0;
      if (op.has_shortcut) {
        op.shortcut = MakeConv(backbone, p + "shortcut_conv", p + "shortcut_bn", stride, 0);
      }
    }
    in_size = info.output().height();
    stages_.push_back(std::move(op));
  }
}

void InferenceNetwork::BuildHeads(const v1::ModelManifest& manifest, const TensorMap& backbone,
                                  const TensorMap& heads) {
  for (int e = 0; e < manifest.exits_size(); ++e) {
    HeadOps h;
    if (manifest.exits(e).is_final()) {
      h.pool = 0;
      h.fc_weight = backbone.at("classifier.weight");
      h.fc_bias = backbone.at("classifier.bias");
    } else {
      std::string p = absl::StrCat(e, ".");
      h.has_conv = heads.count(p + "conv.weight") > 0;
      if (h.has_conv) h.conv = MakeConv(heads, p + "conv", p + "bn", 2, 1);
      h.fc_weight = heads.at(p + "fc.weight");
      h.fc_bias = heads.at(p + "fc.bias");
      int channels = h.has_conv ? static_cast<int>(h.conv.weight.size(0))
                                : manifest.stages(e).output().channels();
      // The head's pool size is not stored; its classifier's input width is
      // channels x pool x pool.
      h.pool = static_cast<int>(std::lround(std::sqrt(h.fc_weight.size(1) / channels)));
    }
    heads_.push_back(std::move(h));
  }
}

torch::Tensor InferenceNetwork::Input(const float* pixels, int n) const {
  torch::Tensor x =
      torch::from_blob(const_cast<float*>(pixels),
                       {n, input_.channels(), input_.height(), input_.width()}, torch::kFloat32);
  x = normalize_(x);
  if (options_.channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  return x;
}

torch::Tensor InferenceNetwork::Stage(int stage, const torch::Tensor& x) const {
  const StageOps& op = stages_[stage];
  if (!op.residual) return torch::relu(op.conv1(x));
  torch::Tensor out = op.conv2(torch::relu(op.conv1(x)));
  out += op.has_shortcut ? op.shortcut(x) : x;
  return out.relu_();
}

torch::Tensor InferenceNetwork::ExitLogits(int exit, const torch::Tensor& features) const {
  const HeadOps& h = heads_[exit];
  torch::Tensor x = features;
  if (h.pool == 0) {
    x = x.mean({2, 3});
  } else {
    if (h.has_conv) x = torch::relu(h.conv(x));
    x = torch::adaptive_avg_pool2d(x, {h.pool, h.pool}).flatten(1);
  }
  return torch::addmm(h.fc_bias, x, h.fc_weight.t());
}

}  // namespace hapi
