#include "model/imported_model.h"

#include <filesystem>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "core/model_metadata.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "model/direct_program.h"
#include "model/imported_activations.h"
#include "model/onednn_conv.h"

namespace hapi {
namespace {

class ImportedActivations : public Activations {
 public:
  explicit ImportedActivations(torch::Tensor x) : x(std::move(x)) {}
  int batch_size() const override { return static_cast<int>(x.size(0)); }
  void KeepRows(const std::vector<int>& rows) override {
    x = x.index_select(0, torch::tensor(std::vector<int64_t>(rows.begin(), rows.end())));
  }
  torch::Tensor x;
};

torch::Tensor ToTensor(const Weight& w) {
  return torch::from_blob(const_cast<float*>(w.values.data()), w.dims, torch::kFloat32).clone();
}

void ActivateInPlace(torch::Tensor& y, const Activation& a) {
  switch (a.kind) {
    case ActivationKind::kNone:
      break;
    case ActivationKind::kRelu:
      y.relu_();
      break;
    case ActivationKind::kClip:
      y.clamp_(a.alpha, a.beta);
      break;
    case ActivationKind::kSigmoid:
      y.sigmoid_();
      break;
    case ActivationKind::kHardSigmoid:
      y.mul_(a.alpha).add_(a.beta).clamp_(0.0, 1.0);
      break;
    case ActivationKind::kHardSwish:
      at::hardswish_(y);
      break;
  }
}

// One lowered node with its operands as tensor slots of its segment.
struct CompiledNode {
  const GraphNode* node = nullptr;
  std::vector<int> inputs;
  int output = 0;
  torch::Tensor weight, bias;  // Conv, Linear; ChannelAffine: scale, shift; Add/Mul: constant
  Conv2dParams conv;
  std::vector<int64_t> shape;  // Flatten/Reshape: per-sample output shape
  bool in_place = false;       // may overwrite inputs[0] (owned, last used here)
};

// Nodes [begin, end) of the graph; slot 0 is the segment's input.
struct Segment {
  std::vector<CompiledNode> nodes;
  int num_slots = 1;
  int output = 0;
};

// Owned tensors were allocated inside the segment and are not views, so that
// an op may overwrite one once nothing later reads it.
bool MakesFreshTensor(GraphOp op) { return op != GraphOp::kFlatten && op != GraphOp::kReshape; }

bool CanRunInPlace(const GraphNode& n) {
  return n.op == GraphOp::kAdd || n.op == GraphOp::kMul || n.op == GraphOp::kChannelAffine ||
         n.op == GraphOp::kActivation;
}

CompiledNode CompileNode(const ImportedGraph& g, const GraphNode& n, const ModelOptions& options) {
  CompiledNode c;
  c.node = &n;
  if (!n.weights.empty()) c.weight = ToTensor(n.weights[0]);
  if (n.weights.size() > 1) c.bias = ToTensor(n.weights[1]);
  if (n.op == GraphOp::kConv) {
    c.conv.stride = {n.strides[0], n.strides[1]};
    c.conv.pads = {n.pads[0], n.pads[1], n.pads[2], n.pads[3]};
    c.conv.dilation = {n.dilations[0], n.dilations[1]};
    c.conv.groups = n.group;
    c.conv.onednn = options.onednn;
    if (options.channels_last) c.weight = c.weight.contiguous(torch::MemoryFormat::ChannelsLast);
  }
  c.shape = g.shapes.at(n.output);
  return c;
}

Segment CompileSegment(const ImportedGraph& g, const GraphSegment& s, const ModelOptions& options) {
  Segment seg;
  std::map<std::string, int> slot = {{s.input, 0}};
  std::map<std::string, int> last_use;
  for (int i = s.begin; i < s.end; ++i) {
    for (const auto& in : g.nodes[i].inputs) last_use[in] = i;
  }
  std::set<int> owned;
  for (int i = s.begin; i < s.end; ++i) {
    const GraphNode& n = g.nodes[i];
    CompiledNode c = CompileNode(g, n, options);
    std::vector<std::string> inputs = n.inputs;
    auto reusable = [&](const std::string& t) {
      return owned.count(slot.at(t)) > 0 && last_use[t] == i && g.shapes.at(t) == c.shape;
    };
    // Add and Mul commute: overwrite whichever operand may be overwritten.
    if (inputs.size() == 2 && !reusable(inputs[0]) && reusable(inputs[1])) {
      std::swap(inputs[0], inputs[1]);
    }
    c.in_place = CanRunInPlace(n) && reusable(inputs[0]);
    for (const auto& in : inputs) c.inputs.push_back(slot.at(in));
    c.output = c.in_place ? c.inputs[0] : seg.num_slots++;
    slot[n.output] = c.output;
    if (MakesFreshTensor(n.op)) owned.insert(c.output);
    seg.nodes.push_back(std::move(c));
  }
  seg.output = slot.at(s.output);
  return seg;
}

// Per-sample `shape` with the batch in front.
std::vector<int64_t> Batched(int64_t batch, const std::vector<int64_t>& shape) {
  std::vector<int64_t> dims = {batch};
  dims.insert(dims.end(), shape.begin(), shape.end());
  return dims;
}

torch::Tensor RunPool(const CompiledNode& c, const torch::Tensor& x) {
  const GraphNode& n = *c.node;
  const std::vector<int64_t> padding = {n.pads[0], n.pads[1]};
  if (n.op == GraphOp::kMaxPool) {
    return torch::max_pool2d(x, n.kernel, n.strides, padding, n.dilations, n.ceil_mode);
  }
  return torch::avg_pool2d(x, n.kernel, n.strides, padding, n.ceil_mode, n.count_include_pad);
}

torch::Tensor RunNode(const CompiledNode& c, std::vector<torch::Tensor>& env) {
  const GraphNode& n = *c.node;
  torch::Tensor& x = env[c.inputs[0]];
  switch (n.op) {
    case GraphOp::kConv:
      return Conv2d(x, c.weight, c.bias, c.conv);
    case GraphOp::kChannelAffine:
      return c.in_place ? x.mul_(c.weight).add_(c.bias) : torch::addcmul(c.bias, x, c.weight);
    case GraphOp::kActivation:
      return c.in_place ? x : x.clone();
    case GraphOp::kAdd:
    case GraphOp::kMul: {
      const torch::Tensor& y = c.inputs.size() > 1 ? env[c.inputs[1]] : c.weight;
      if (n.op == GraphOp::kAdd) return c.in_place ? x.add_(y) : x + y;
      return c.in_place ? x.mul_(y) : x * y;
    }
    case GraphOp::kConcat: {
      std::vector<torch::Tensor> parts;
      for (int in : c.inputs) parts.push_back(env[in]);
      return torch::cat(parts, n.axis);
    }
    case GraphOp::kMaxPool:
    case GraphOp::kAveragePool:
      return RunPool(c, x);
    case GraphOp::kGlobalAveragePool:
      return x.mean({2, 3}, /*keepdim=*/true);
    case GraphOp::kFlatten:
    case GraphOp::kReshape:
      return x.reshape(Batched(x.size(0), c.shape));
    case GraphOp::kLinear:
      return torch::linear(x, c.weight, c.bias);
  }
  return x;
}

torch::Tensor RunSegment(const Segment& seg, const torch::Tensor& input) {
  std::vector<torch::Tensor> env(seg.num_slots);
  env[0] = input;
  for (const CompiledNode& c : seg.nodes) {
    torch::Tensor y = RunNode(c, env);
    ActivateInPlace(y, c.node->activation);
    env[c.output] = std::move(y);
  }
  return env[seg.output];
}

struct Head {
  torch::Tensor conv_weight, conv_bias, fc_weight, fc_bias;
  Conv2dParams conv;
  int pool = 1;
};

torch::Tensor RunHeadLogits(const Head& h, const torch::Tensor& features) {
  torch::Tensor x = features;
  if (h.conv_weight.defined()) x = Conv2d(x, h.conv_weight, h.conv_bias, h.conv).relu_();
  x = torch::adaptive_avg_pool2d(x, {h.pool, h.pool}).flatten(1);
  return torch::linear(x, h.fc_weight, h.fc_bias);
}

void CopyOut(const torch::Tensor& t, std::vector<float>* out) {
  const torch::Tensor c = t.contiguous();
  out->assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

v1::TensorShape ShapeOf(const std::vector<int64_t>& chw) {
  v1::TensorShape shape;
  shape.set_channels(static_cast<int32_t>(chw[0]));
  shape.set_height(static_cast<int32_t>(chw[1]));
  shape.set_width(static_cast<int32_t>(chw[2]));
  return shape;
}

// The cut points where `manifest`'s stages end; DATA_LOSS unless they are cut
// points of `graph` with the stated MACs.
absl::StatusOr<std::vector<CutPoint>> ManifestCutPoints(const ImportedGraph& graph,
                                                        const v1::ModelManifest& manifest) {
  std::vector<std::string> stage_names;
  for (const auto& s : manifest.stages()) stage_names.push_back(s.name());
  absl::StatusOr<std::vector<CutPoint>> cuts = SelectCutPoints(graph, {stage_names, 0});
  std::string problem;
  if (!cuts.ok()) {
    problem = std::string(cuts.status().message());
  } else if (cuts->size() != stage_names.size() || cuts->back().tensor != stage_names.back()) {
    problem = "the last stage does not end where the classifier begins";
  } else {
    const std::vector<GraphSegment> segments = SplitGraph(graph, *cuts);
    for (int s = 0; s < manifest.stages_size() && problem.empty(); ++s) {
      if (segments[s].macs != manifest.stages(s).macs()) {
        problem = absl::StrCat("stage ", s, " has ", segments[s].macs, " MACs, not ",
                               manifest.stages(s).macs());
      }
    }
  }
  if (!problem.empty()) {
    return absl::DataLossError(absl::StrCat("model ", manifest.name(),
                                            ": the manifest's stages do not match its graph (",
                                            problem, ")"));
  }
  return *std::move(cuts);
}

}  // namespace

torch::Tensor ImportedTensor(const ImportedModel& model, const Activations& x) {
  if (model.direct_program() == nullptr) return static_cast<const ImportedActivations&>(x).x;
  std::vector<float> values;
  std::vector<int64_t> dims;
  const absl::Status st = model.direct_program()->CopyOut(x, &values, &dims);
  if (!st.ok()) throw std::runtime_error(std::string(st.message()));
  return torch::from_blob(values.data(), dims, torch::kFloat32).clone();
}

struct ImportedModel::Program {
  std::vector<Segment> stages;
  Segment tail;
  std::vector<std::optional<Head>> heads;  // per exit; the final one stays empty
  torch::Tensor mean, std;                 // 1 x C x 1 x 1
  bool channels_last = true;
  bool onednn = true;
  // The direct oneDNN path, when options.direct and the graph lowers to it;
  // otherwise the LibTorch program above runs.
  std::unique_ptr<DirectProgram> direct;
};

// --- Manifest -----------------------------------------------------------------

absl::StatusOr<v1::ModelManifest> MakeImportedManifest(const ImportedGraph& graph,
                                                       const std::vector<CutPoint>& cuts,
                                                       const ImportedModelInfo& info) {
  HAPI_RETURN_IF_ERROR(ValidateInputSpec(info.input));
  const std::vector<int64_t> spec_shape = {info.input.channels(), info.input.height(),
                                           info.input.width()};
  if (spec_shape != graph.input_shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the input spec says ", ShapeString(info.input), " but graph '", graph.name, "' eats ",
        ShapeString(graph.input_shape[0], graph.input_shape[1], graph.input_shape[2])));
  }
  if (!info.class_names.empty() && static_cast<int>(info.class_names.size()) != graph.num_classes) {
    return absl::InvalidArgumentError(absl::StrCat(
        info.class_names.size(), " class names for a graph of ", graph.num_classes, " classes"));
  }
  v1::ModelManifest m;
  m.set_name(info.name);
  m.set_dataset(info.dataset);
  for (int c = 0; c < graph.num_classes; ++c) {
    m.add_class_names(info.class_names.empty() ? absl::StrCat(c) : info.class_names[c]);
  }
  const std::vector<GraphSegment> segments = SplitGraph(graph, cuts);
  const GraphSegment& tail = segments.back();
  int64_t backbone_macs = 0;
  for (size_t s = 0; s + 1 < segments.size(); ++s) backbone_macs += segments[s].macs;
  const int64_t full = backbone_macs + tail.macs;
  int64_t cumulative = 0;
  for (size_t s = 0; s + 1 < segments.size(); ++s) {
    const GraphSegment& seg = segments[s];
    v1::StageInfo* stage = m.add_stages();
    stage->set_index(static_cast<int32_t>(s));
    stage->set_name(seg.output);
    *stage->mutable_output() = ShapeOf(graph.shapes.at(seg.output));
    stage->set_macs(seg.macs);
    stage->set_params(seg.params);
    stage->set_layers(seg.layers);
    cumulative += seg.macs;
    const bool is_final = s + 2 == segments.size();
    v1::ExitInfo* exit = m.add_exits();
    exit->set_index(static_cast<int32_t>(s));
    exit->set_after_stage(static_cast<int32_t>(s));
    exit->set_name(is_final ? "final" : absl::StrCat("exit-", s));
    exit->set_is_final(is_final);
    if (is_final) {
      exit->set_macs(tail.macs);
      exit->set_params(tail.params);
      exit->set_layers(tail.layers);
    }
    exit->set_cumulative_macs_fraction(static_cast<double>(cumulative + exit->macs()) /
                                       static_cast<double>(std::max<int64_t>(full, 1)));
  }
  m.set_backbone_macs(backbone_macs);
  m.set_full_network_macs(full);
  m.set_backbone_weights(kImportedGraphFile);
  m.set_created_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
  *m.mutable_input() = info.input;
  return m;
}

bool IsImportedManifest(const v1::ModelManifest& manifest) {
  return absl::EndsWith(manifest.backbone_weights(), ".onnx");
}

// --- The model ----------------------------------------------------------------

ImportedModel::ImportedModel(v1::ModelManifest manifest, ImportedGraph graph)
    : manifest_(std::move(manifest)), graph_(std::move(graph)) {}

ImportedModel::~ImportedModel() = default;

absl::StatusOr<std::unique_ptr<ImportedModel>> ImportedModel::Create(ImportedGraph graph,
                                                                     v1::ModelManifest manifest,
                                                                     const ModelOptions& options) {
  HAPI_ASSIGN_OR_RETURN(const std::vector<CutPoint> cuts, ManifestCutPoints(graph, manifest));
  HAPI_ASSIGN_OR_RETURN(v1::InputSpec spec, EffectiveInputSpec(manifest));
  std::unique_ptr<ImportedModel> model(new ImportedModel(std::move(manifest), std::move(graph)));
  const ImportedGraph& g = model->graph_;
  try {
    torch::NoGradGuard no_grad;
    auto program = std::make_unique<Program>();
    program->channels_last = options.channels_last;
    program->onednn = options.onednn;
    const std::vector<GraphSegment> segments = SplitGraph(g, cuts);
    for (size_t s = 0; s + 1 < segments.size(); ++s) {
      program->stages.push_back(CompileSegment(g, segments[s], options));
    }
    program->tail = CompileSegment(g, segments.back(), options);
    program->heads.resize(cuts.size());
    const std::vector<float> mean = ChannelMeans(spec), std = ChannelStds(spec);
    const int64_t channels = spec.channels();
    program->mean = torch::tensor(mean).view({1, channels, 1, 1});
    program->std = torch::tensor(std).view({1, channels, 1, 1});
    if (options.direct || WantsInt8(options)) {
      absl::StatusOr<std::unique_ptr<DirectProgram>> direct =
          DirectProgram::Create(g, segments, mean, std);
      if (direct.ok()) {
        program->direct = *std::move(direct);
      } else {
        LOG(WARNING) << "model " << model->manifest_.name()
                     << " runs on LibTorch: " << direct.status().message();
      }
    }
    model->program_ = std::move(program);
  } catch (const std::exception& e) {
    return model->Failed("preparing the graph", e);
  }
  return model;
}

absl::Status ImportedModel::Named(absl::Status status) const {
  if (status.ok()) return status;
  return absl::Status(status.code(),
                      absl::StrCat("model ", manifest_.name(), ": ", status.message()));
}

const DirectProgram* ImportedModel::direct_program() const { return program_->direct.get(); }

absl::Status ImportedModel::Failed(absl::string_view what, const std::exception& e) const {
  const auto* torch_error = dynamic_cast<const c10::Error*>(&e);
  return absl::InternalError(
      absl::StrCat("model ", manifest_.name(), ": ", what, ": ",
                   torch_error != nullptr ? torch_error->what_without_backtrace() : e.what()));
}

absl::StatusOr<std::unique_ptr<Activations>> ImportedModel::Input(const float* pixels,
                                                                  int n) const {
  if (program_->direct) return program_->direct->Input(pixels, n);
  try {
    torch::InferenceMode guard;
    const auto& shape = graph_.input_shape;
    torch::Tensor x = torch::from_blob(const_cast<float*>(pixels),
                                       {n, shape[0], shape[1], shape[2]}, torch::kFloat32);
    x = (x - program_->mean).div_(program_->std);
    if (program_->channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
    return std::make_unique<ImportedActivations>(std::move(x));
  } catch (const std::exception& e) {
    return Failed("preparing the input", e);
  }
}

absl::Status ImportedModel::RunStage(int stage, Activations& x) const {
  if (stage < 0 || stage >= num_stages()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", manifest_.name(), " has no stage ", stage));
  }
  if (program_->direct) return Named(program_->direct->RunStage(stage, x));
  try {
    torch::InferenceMode guard;
    torch::Tensor& t = static_cast<ImportedActivations&>(x).x;
    t = RunSegment(program_->stages[stage], t);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return Failed(absl::StrCat("running stage ", stage), e);
  }
}

absl::Status ImportedModel::FinalLogits(const Activations& x, std::vector<float>* logits) const {
  if (program_->direct) return Named(program_->direct->FinalLogits(x, logits));
  try {
    torch::InferenceMode guard;
    CopyOut(RunSegment(program_->tail, static_cast<const ImportedActivations&>(x).x), logits);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return Failed("running the classifier", e);
  }
}

absl::Status ImportedModel::RunHead(int exit, const Activations& x,
                                    std::vector<float>* probabilities) const {
  if (exit < 0 || exit >= num_exits()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", manifest_.name(), " has no exit ", exit));
  }
  if (exit != final_exit() && !HasHead(exit)) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", manifest_.name(), ": exit ", exit,
                     " has no trained head (imported models' exit heads are trained separately)"));
  }
  if (program_->direct) {
    const DirectProgram& d = *program_->direct;
    HAPI_RETURN_IF_ERROR(Named(exit == final_exit() ? d.FinalLogits(x, probabilities)
                                                    : d.HeadLogits(exit, x, probabilities)));
    SoftmaxRows(probabilities, num_classes());
    return absl::OkStatus();
  }
  try {
    torch::InferenceMode guard;
    const torch::Tensor& features = static_cast<const ImportedActivations&>(x).x;
    const torch::Tensor logits = exit == final_exit()
                                     ? RunSegment(program_->tail, features)
                                     : RunHeadLogits(*program_->heads[exit], features);
    CopyOut(torch::softmax(logits, 1), probabilities);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return Failed(absl::StrCat("running exit ", exit), e);
  }
}

bool ImportedModel::HasHead(int exit) const {
  return exit >= 0 && exit < static_cast<int>(program_->heads.size()) &&
         program_->heads[exit].has_value();
}

absl::Status ImportedModel::AttachHead(int exit, const ExitHeadWeights& w) {
  if (exit < 0 || exit >= final_exit()) {
    return absl::InvalidArgumentError(absl::StrCat("no early exit ", exit));
  }
  const int64_t channels = manifest_.stages(ExitStage(exit)).output().channels();
  const bool conv = !w.conv_weight.values.empty();
  const bool conv_ok =
      !conv || (w.conv_weight.dims.size() == 4 && w.conv_weight.dims[1] == channels &&
                w.conv_weight.dims[2] == 3 && w.conv_weight.dims[3] == 3 &&
                w.conv_bias.numel() == w.conv_weight.dims[0]);
  const int64_t features = (conv && conv_ok ? w.conv_weight.dims[0] : channels) * w.pool * w.pool;
  if (!conv_ok || w.pool < 1 || w.fc_weight.dims != std::vector<int64_t>{num_classes(), features} ||
      w.fc_bias.numel() != num_classes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", manifest_.name(), ": exit ", exit, "'s head does not fit its ",
                     channels, "-channel stage and ", num_classes(), " classes"));
  }
  Head h;
  if (conv) {
    h.conv_weight = ToTensor(w.conv_weight);
    if (program_->channels_last) {
      h.conv_weight = h.conv_weight.contiguous(torch::MemoryFormat::ChannelsLast);
    }
    h.conv_bias = ToTensor(w.conv_bias);
    h.conv.stride = {2, 2};
    h.conv.pads = {1, 1, 1, 1};
    h.conv.onednn = program_->onednn;
  }
  h.pool = w.pool;
  h.fc_weight = ToTensor(w.fc_weight);
  h.fc_bias = ToTensor(w.fc_bias);
  if (program_->direct) {
    HAPI_RETURN_IF_ERROR(program_->direct->AttachHead(exit, ExitStage(exit), w));
  }
  program_->heads[exit] = std::move(h);
  return absl::OkStatus();
}

absl::Status SaveImportedModel(const std::string& model_dir, absl::string_view onnx_bytes,
                               const v1::ModelManifest& manifest) {
  const std::string parent = std::filesystem::path(model_dir).parent_path().string();
  if (!parent.empty()) HAPI_RETURN_IF_ERROR(MakeDirectories(parent));
  HAPI_ASSIGN_OR_RETURN(std::string staging, MakeStagingDirectory(model_dir));
  absl::Status st = [&]() -> absl::Status {
    HAPI_RETURN_IF_ERROR(
        WriteFileAtomically(absl::StrCat(staging, "/", kImportedGraphFile), onnx_bytes));
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

// --- Exit heads -----------------------------------------------------------------

ExitHeadCost HeadCost(const v1::TensorShape& input, int conv_channels, int pool, int classes) {
  ExitHeadCost cost;
  int64_t pooled_channels = input.channels();
  if (conv_channels > 0) {
    // 3x3, stride 2, pad 1.
    const int64_t height = (input.height() - 1) / 2 + 1, width = (input.width() - 1) / 2 + 1;
    const int64_t weights = int64_t{conv_channels} * input.channels() * 9;
    cost.macs += weights * height * width;
    cost.params += weights + conv_channels;
    cost.layers += 1;
    pooled_channels = conv_channels;
  }
  const int64_t features = pooled_channels * pool * pool;
  cost.macs += features * classes;
  cost.params += features * classes + classes;
  cost.layers += 1;
  return cost;
}

namespace {

torch::Tensor WeightTensor(const Weight& w) {
  return w.values.empty() ? torch::zeros({0}) : ToTensor(w);
}

Weight TensorWeight(const torch::Tensor& t) {
  Weight w;
  if (t.numel() == 0) return w;
  const torch::Tensor c = t.contiguous().to(torch::kFloat32);
  w.dims = c.sizes().vec();
  w.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return w;
}

constexpr int kTensorsPerHead = 5;

}  // namespace

absl::StatusOr<std::string> SerializeExitHeads(const std::vector<ExitHeadWeights>& heads) {
  try {
    std::vector<torch::Tensor> tensors;
    for (const ExitHeadWeights& h : heads) {
      for (const Weight* w : {&h.conv_weight, &h.conv_bias, &h.fc_weight, &h.fc_bias}) {
        tensors.push_back(WeightTensor(*w));
      }
      tensors.push_back(torch::tensor({static_cast<int64_t>(h.pool)}));
    }
    std::ostringstream out;
    torch::save(tensors, out);
    return out.str();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("serialising exit heads: ", e.what()));
  }
}

absl::StatusOr<std::vector<ExitHeadWeights>> ParseExitHeads(absl::string_view bytes,
                                                            absl::string_view what) {
  std::vector<torch::Tensor> tensors;
  try {
    std::istringstream in{std::string(bytes)};
    torch::load(tensors, in);
  } catch (const c10::Error& e) {
    return absl::DataLossError(
        absl::StrCat(what, ": not an exit heads file (", e.what_without_backtrace(), ")"));
  }
  if (tensors.size() % kTensorsPerHead != 0) {
    return absl::DataLossError(
        absl::StrCat(what, ": ", tensors.size(), " tensors, not ", kTensorsPerHead, " per head"));
  }
  std::vector<ExitHeadWeights> heads(tensors.size() / kTensorsPerHead);
  for (size_t i = 0; i < heads.size(); ++i) {
    ExitHeadWeights& h = heads[i];
    const torch::Tensor* t = &tensors[i * kTensorsPerHead];
    const bool floats =
        t[0].scalar_type() == torch::kFloat32 && t[1].scalar_type() == torch::kFloat32 &&
        t[2].scalar_type() == torch::kFloat32 && t[3].scalar_type() == torch::kFloat32;
    if (!floats || t[2].dim() != 2 || t[2].numel() == 0 || t[4].numel() != 1 ||
        t[4].scalar_type() != torch::kInt64) {
      return absl::DataLossError(absl::StrCat(what, ": head ", i, " is malformed"));
    }
    h.conv_weight = TensorWeight(t[0]);
    h.conv_bias = TensorWeight(t[1]);
    h.fc_weight = TensorWeight(t[2]);
    h.fc_bias = TensorWeight(t[3]);
    const int64_t pool = t[4].item<int64_t>();
    if (pool < 1 || pool > 64) {
      return absl::DataLossError(absl::StrCat(what, ": head ", i, " pools to ", pool));
    }
    h.pool = static_cast<int>(pool);
  }
  return heads;
}

absl::StatusOr<std::unique_ptr<ImportedModel>> OpenImportedModel(const std::string& model_dir,
                                                                 const ModelOptions& options,
                                                                 bool attach_heads) {
  v1::ModelManifest manifest;
  HAPI_RETURN_IF_ERROR(ReadTextProto(absl::StrCat(model_dir, "/", kManifestFile), &manifest));
  auto bad_name = [](const std::string& file) {
    return file.find('/') != std::string::npos || file == "." || file == "..";
  };
  const std::string& file = manifest.backbone_weights();
  if (bad_name(file)) {
    return absl::DataLossError(
        absl::StrCat(model_dir, "/", kManifestFile, ": invalid graph file name '", file, "'"));
  }
  const std::string heads_file = manifest.exit_weights();
  if (bad_name(heads_file)) {
    return absl::DataLossError(absl::StrCat(model_dir, "/", kManifestFile,
                                            ": invalid exit heads file name '", heads_file, "'"));
  }
  HAPI_ASSIGN_OR_RETURN(ImportedGraph graph, ImportOnnxFile(absl::StrCat(model_dir, "/", file)));
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<ImportedModel> model,
                        ImportedModel::Create(std::move(graph), std::move(manifest), options));
  if (attach_heads && !heads_file.empty()) {
    HAPI_RETURN_IF_ERROR(AttachHeadsFile(absl::StrCat(model_dir, "/", heads_file), model.get()));
  }
  // int8 after the heads, so that their convolutions are quantised too.
  if (WantsInt8(options)) HAPI_RETURN_IF_ERROR(model->UseInt8(model_dir, options));
  return model;
}

absl::Status AttachHeadsFile(const std::string& path, ImportedModel* model) {
  HAPI_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  HAPI_ASSIGN_OR_RETURN(std::vector<ExitHeadWeights> heads, ParseExitHeads(bytes, path));
  const v1::ModelManifest& m = model->manifest();
  if (static_cast<int>(heads.size()) != model->final_exit()) {
    return absl::DataLossError(absl::StrCat(path, ": ", heads.size(), " heads, the manifest has ",
                                            model->final_exit(), " early exits"));
  }
  for (int e = 0; e < model->final_exit(); ++e) {
    const ExitHeadWeights& h = heads[e];
    if (absl::Status st = model->AttachHead(e, h); !st.ok()) {
      return absl::DataLossError(absl::StrCat(path, ": ", st.message()));
    }
    // Attached, so its shapes fit the stage.
    const bool conv = !h.conv_weight.values.empty();
    const ExitHeadCost cost =
        HeadCost(m.stages(model->ExitStage(e)).output(),
                 conv ? static_cast<int>(h.conv_weight.dims[0]) : 0, h.pool, model->num_classes());
    if (cost.macs != m.exits(e).macs()) {
      return absl::DataLossError(absl::StrCat(path, ": exit ", e, "'s head has ", cost.macs,
                                              " MACs, the manifest says ", m.exits(e).macs()));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Model>> LoadImportedModel(const std::string& model_dir,
                                                               const ModelOptions& options) {
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<ImportedModel> model,
                        OpenImportedModel(model_dir, options, /*attach_heads=*/true));
  return std::shared_ptr<const Model>(std::move(model));
}

bool WantsInt8(const ModelOptions& options) {
  return options.int8 || options.int8_ranges != nullptr || options.int8_calibration != nullptr;
}

absl::StatusOr<std::map<std::string, float>> ReadInt8Ranges(const std::string& model_dir,
                                                            const std::string& model_name) {
  const std::string path = absl::StrCat(model_dir, "/", kInt8RangesFile);
  v1::Int8Ranges ranges;
  if (absl::Status st = ReadTextProto(path, &ranges); !st.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "model ", model_name, " has no int8 ranges (run hapi-quantize): ", st.message()));
  }
  return std::map<std::string, float>(ranges.max_abs().begin(), ranges.max_abs().end());
}

absl::Status ImportedModel::UseInt8(const std::string& model_dir, const ModelOptions& options) {
  if (!program_->direct) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", manifest_.name(),
                     ": int8 runs on the direct oneDNN path, which cannot run this graph"));
  }
  std::map<std::string, float> ranges;
  if (options.int8_ranges != nullptr) {
    ranges = *options.int8_ranges;
  } else if (options.int8_calibration != nullptr) {
    const int n = static_cast<int>(options.int8_calibration->size() / input_size());
    HAPI_ASSIGN_OR_RETURN(ranges, program_->direct->Ranges(options.int8_calibration->data(), n));
  } else {
    HAPI_ASSIGN_OR_RETURN(ranges, ReadInt8Ranges(model_dir, manifest_.name()));
  }
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<DirectProgram> int8,
                        program_->direct->Int8(std::move(ranges)));
  program_->direct = std::move(int8);
  return absl::OkStatus();
}

}  // namespace hapi
