#include "model/inference_network.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <map>
#include <string>
#include <utility>

#include "absl/status/status.h"
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

// `t`'s floats in standard row-major (NCHW, not channels-last) order.
Weight ToWeight(const torch::Tensor& t) {
  const torch::Tensor c =
      t.detach().to(torch::kFloat32).contiguous(torch::MemoryFormat::Contiguous);
  Weight w;
  w.dims = c.sizes().vec();
  w.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return w;
}

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
    : options_(options), name_(model.manifest().name()), input_(input), normalize_(input) {
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
    exit_stage_.push_back(manifest.exits(e).after_stage());
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

namespace {

// Appends nodes to a graph, recording each output's per-sample shape.
class GraphBuilder {
 public:
  explicit GraphBuilder(ImportedGraph* g) : g_(g) {}

  // A 2-D convolution (square padding and stride, dilation 1, one group) of
  // `input` by the folded `weight` and `bias`; returns its output tensor.
  std::string Conv(const std::string& name, const std::string& input, const torch::Tensor& weight,
                   const torch::Tensor& bias, int stride, int padding, bool relu) {
    const std::vector<int64_t>& in = g_->shapes.at(input);
    GraphNode n;
    n.name = name;
    n.op_type = "Conv";
    n.op = GraphOp::kConv;
    n.inputs = {input};
    n.weights = {ToWeight(weight), ToWeight(bias)};
    const std::vector<int64_t>& w = n.weights[0].dims;
    n.kernel = {w[2], w[3]};
    n.strides = {stride, stride};
    n.pads = {padding, padding, padding, padding};
    n.dilations = {1, 1};
    n.group = 1;
    if (relu) n.activation.kind = ActivationKind::kRelu;
    const std::vector<int64_t> out = {w[0], (in[1] + 2 * padding - w[2]) / stride + 1,
                                      (in[2] + 2 * padding - w[3]) / stride + 1};
    // As the importer counts: output elements times the MACs of one.
    n.macs = out[0] * out[1] * out[2] * (n.weights[0].numel() / w[0]);
    return Add(std::move(n), out);
  }

  // A Gemm of `input` by `weight` (out x in) + `bias`.
  std::string Linear(const std::string& name, const std::string& input, const torch::Tensor& weight,
                     const torch::Tensor& bias) {
    GraphNode n;
    n.name = name;
    n.op_type = "Gemm";
    n.op = GraphOp::kLinear;
    n.inputs = {input};
    n.weights = {ToWeight(weight), ToWeight(bias)};
    const int64_t out = n.weights[0].dims[0];
    n.macs = out * n.weights[0].dims[1];
    return Add(std::move(n), {out});
  }

  // A node without weights (Add, pooling, Flatten) of output `shape`.
  std::string Op(const std::string& name, const char* op_type, GraphOp op,
                 std::vector<std::string> inputs, std::vector<int64_t> shape, bool relu = false) {
    GraphNode n;
    n.name = name;
    n.op_type = op_type;
    n.op = op;
    n.inputs = std::move(inputs);
    if (relu) n.activation.kind = ActivationKind::kRelu;
    return Add(std::move(n), std::move(shape));
  }

  std::string Add(GraphNode n, std::vector<int64_t> shape) {
    n.output = n.name;
    g_->shapes[n.output] = std::move(shape);
    macs_ += n.macs;
    g_->nodes.push_back(std::move(n));
    return g_->nodes.back().output;
  }

  // The cut point after the last node added.
  CutPoint Cut() const {
    const GraphNode& n = g_->nodes.back();
    return {static_cast<int>(g_->nodes.size()) - 1, n.output, n.name, macs_};
  }

 private:
  ImportedGraph* g_;
  int64_t macs_ = 0;  // of the nodes so far, one sample
};

}  // namespace

absl::StatusOr<LoweredNetwork> InferenceNetwork::Lower() const {
  if (!options_.fuse_batch_norm) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model ", name_, ": lowering to the graph IR needs batch norm folded (fuse_batch_norm)"));
  }
  try {
    torch::NoGradGuard no_grad;
    LoweredNetwork out;
    ImportedGraph& g = out.graph;
    g.name = name_;
    g.input = "input";
    g.input_shape = {input_.channels(), input_.height(), input_.width()};
    g.shapes[g.input] = g.input_shape;
    GraphBuilder b(&g);
    std::string x = g.input;
    for (int s = 0; s < num_stages(); ++s) {
      const StageOps& op = stages_[s];
      if (!op.residual) {
        const Conv& c = op.conv1;
        x = b.Conv(absl::StrCat("stages.", s, ".0"), x, c.weight, c.bias, c.stride, c.padding,
                   /*relu=*/true);
      } else {
        const std::string p = absl::StrCat("stages.", s, ".0.");
        const Conv &c1 = op.conv1, &c2 = op.conv2, &sc = op.shortcut;
        std::string y = b.Conv(p + "conv1", x, c1.weight, c1.bias, c1.stride, c1.padding, true);
        y = b.Conv(p + "conv2", y, c2.weight, c2.bias, c2.stride, c2.padding, false);
        const std::string shortcut = op.has_shortcut ? b.Conv(p + "shortcut_conv", x, sc.weight,
                                                              sc.bias, sc.stride, sc.padding, false)
                                                     : x;
        if (g.shapes.at(y) != g.shapes.at(shortcut)) {
          return absl::InternalError(absl::StrCat("model ", name_, ": stage ", s,
                                                  "'s residual and shortcut differ in shape"));
        }
        x = b.Op(p + "add", "Add", GraphOp::kAdd, {y, shortcut}, g.shapes.at(y), /*relu=*/true);
      }
      out.cuts.push_back(b.Cut());
    }
    const int64_t channels = g.shapes.at(x)[0];
    x = b.Op("global_pool", "GlobalAveragePool", GraphOp::kGlobalAveragePool, {x},
             {channels, 1, 1});
    x = b.Op("flatten", "Flatten", GraphOp::kFlatten, {x}, {channels});
    auto final_head_it =
        std::find_if(heads_.begin(), heads_.end(), [](const HeadOps& h) { return h.pool == 0; });
    if (final_head_it == heads_.end()) {
      return absl::InternalError(absl::StrCat("model ", name_, " has no final exit"));
    }
    const HeadOps& final_head = *final_head_it;
    g.output = b.Linear("classifier", x, final_head.fc_weight, final_head.fc_bias);
    g.num_classes = static_cast<int>(g.shapes.at(g.output)[0]);
    g.output_was_softmax = false;
    g.cut_points = out.cuts;
    LowerHeads(&out);
    return out;
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("model ", name_, ": lowering: ", e.what()));
  }
}

void InferenceNetwork::LowerHeads(LoweredNetwork* out) const {
  for (int e = 0; e < num_exits(); ++e) {
    const HeadOps& h = heads_[e];
    if (h.pool == 0) continue;  // the final exit: the graph's own tail
    ExitHeadWeights w;
    if (h.has_conv) {
      w.conv_weight = ToWeight(h.conv.weight);
      w.conv_bias = ToWeight(h.conv.bias);
    }
    w.pool = h.pool;
    w.fc_weight = ToWeight(h.fc_weight);
    w.fc_bias = ToWeight(h.fc_bias);
    out->heads.push_back(std::move(w));
    out->head_stage.push_back(exit_stage_[e]);
  }
}

}  // namespace hapi
