#include "model/onnx_import.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <numeric>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/files.h"
#include "core/status_macros.h"
#include "onnx/checker.h"
#include "onnx/onnx_pb.h"
#include "onnx/shape_inference/implementation.h"

namespace hapi {
namespace {

using Dims = std::vector<int64_t>;

constexpr char kSupportedOps[] =
    "Conv, BatchNormalization, Relu, Clip, Sigmoid, HardSigmoid, HardSwish, Mul, Add, Concat, "
    "MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape, Gemm, MatMul, Softmax (last), "
    "Identity, Dropout, Constant";

// Limits on what a file may declare, far above any image classifier the
// inference path runs, so that counts, sizes and MACs fit in int64_t.
constexpr int64_t kMaxElements = int64_t{1} << 40;  // one tensor (one sample for activations)
constexpr int64_t kMaxMacs = int64_t{1} << 50;      // one node and the whole graph, one sample
constexpr int64_t kMaxWindow = int64_t{1} << 16;    // kernel, stride, dilation, pad

// The product of `dims`, or -1 when a dimension is negative or the product
// exceeds `limit`.
int64_t CheckedProduct(const Dims& dims, int64_t limit) {
  int64_t product = 1;
  for (int64_t d : dims) {
    if (d < 0) return -1;
    if (d == 0) product = 0;
  }
  if (product == 0) return 0;
  for (int64_t d : dims) {
    if (product > limit / d) return -1;
    product *= d;
  }
  return product;
}

int64_t Product(const Dims& dims) { return CheckedProduct(dims, kMaxElements); }

// `message` with every byte that is not part of well-formed UTF-8 shown as
// \xNN: names in an ONNX file are bytes (proto2 strings), and messages end
// up in proto string fields and in clients that decode them.
std::string Utf8Safe(absl::string_view message) {
  std::string out;
  out.reserve(message.size());
  size_t i = 0;
  while (i < message.size()) {
    const unsigned char c = message[i];
    int extra = c < 0x80             ? 0
                : (c & 0xe0) == 0xc0 ? 1
                : (c & 0xf0) == 0xe0 ? 2
                : (c & 0xf8) == 0xf0 ? 3
                                     : -1;
    bool ok = extra >= 0 && message.size() - i > static_cast<size_t>(extra);
    if (ok && extra > 0) {
      static constexpr uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
      uint32_t cp = c & (0x3f >> extra);
      for (int k = 1; ok && k <= extra; ++k) {
        const unsigned char d = message[i + k];
        ok = (d & 0xc0) == 0x80;
        cp = (cp << 6) | (d & 0x3f);
      }
      ok = ok && cp >= kMin[extra] && cp <= 0x10ffff && (cp < 0xd800 || cp > 0xdfff);
    }
    if (ok) {
      out.append(message.data() + i, extra + 1);
      i += extra + 1;
    } else {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
      ++i;
    }
  }
  return out;
}

bool IsValidUtf8(absl::string_view text) { return Utf8Safe(text) == text; }

std::string DimsString(const Dims& dims) {
  return absl::StrCat("[", absl::StrJoin(dims, ","), "]");
}

std::string NodeName(const onnx::NodeProto& node, int index) {
  return node.name().empty() ? absl::StrCat("#", index) : node.name();
}

absl::Status NodeError(const std::string& name, const std::string& op, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("node '", name, "' (op ", op, "): ", what));
}

absl::Status CheckWindow(const GraphNode& n);

// --- Attributes and constant tensors ------------------------------------------

const onnx::AttributeProto* FindAttribute(const onnx::NodeProto& node, absl::string_view name) {
  for (const auto& a : node.attribute()) {
    if (a.name() == name) return &a;
  }
  return nullptr;
}

int64_t IntAttribute(const onnx::NodeProto& node, absl::string_view name, int64_t fallback) {
  const onnx::AttributeProto* a = FindAttribute(node, name);
  return a == nullptr ? fallback : a->i();
}

float FloatAttribute(const onnx::NodeProto& node, absl::string_view name, float fallback) {
  const onnx::AttributeProto* a = FindAttribute(node, name);
  return a == nullptr ? fallback : a->f();
}

Dims IntsAttribute(const onnx::NodeProto& node, absl::string_view name, Dims fallback) {
  const onnx::AttributeProto* a = FindAttribute(node, name);
  return a == nullptr ? fallback : Dims(a->ints().begin(), a->ints().end());
}

std::string StringAttribute(const onnx::NodeProto& node, absl::string_view name) {
  const onnx::AttributeProto* a = FindAttribute(node, name);
  return a == nullptr ? "" : a->s();
}

// Values of a FLOAT or INT64 tensor stored in the file (not external data).
template <typename T>
absl::StatusOr<std::vector<T>> TensorValues(const onnx::TensorProto& t, int expected_type) {
  if (t.data_type() != expected_type) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", t.name(), "' has data type ", t.data_type()));
  }
  if (t.data_location() == onnx::TensorProto::EXTERNAL) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", t.name(), "' is stored outside the file (external data)"));
  }
  const int64_t count = Product(Dims(t.dims().begin(), t.dims().end()));
  if (count < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor '", t.name(), "' has dims ", DimsString(Dims(t.dims().begin(), t.dims().end())),
        " (negative, or more than 2^40 values)"));
  }
  std::vector<T> values;
  if (t.has_raw_data()) {
    if (t.raw_data().size() % sizeof(T) != 0 ||
        t.raw_data().size() / sizeof(T) != static_cast<uint64_t>(count)) {
      return absl::DataLossError(absl::StrCat("tensor '", t.name(), "' has ", t.raw_data().size(),
                                              " bytes of data for ", count, " values"));
    }
    values.resize(count);
    std::memcpy(values.data(), t.raw_data().data(), t.raw_data().size());
  } else if constexpr (std::is_same_v<T, float>) {
    values.assign(t.float_data().begin(), t.float_data().end());
  } else {
    values.assign(t.int64_data().begin(), t.int64_data().end());
  }
  if (static_cast<int64_t>(values.size()) != count) {
    return absl::DataLossError(absl::StrCat("tensor '", t.name(), "' has ", values.size(),
                                            " values for dims ",
                                            DimsString(Dims(t.dims().begin(), t.dims().end()))));
  }
  return values;
}

Weight Transposed(const Weight& w) {
  Weight t{{w.dims[1], w.dims[0]}, std::vector<float>(w.values.size())};
  for (int64_t r = 0; r < w.dims[0]; ++r) {
    for (int64_t c = 0; c < w.dims[1]; ++c)
      t.values[c * w.dims[0] + r] = w.values[r * w.dims[1] + c];
  }
  return t;
}

// --- Lowering -----------------------------------------------------------------

// Lowers the nodes of a checked, shape-inferred model into an ImportedGraph.
class Lowering {
 public:
  Lowering(const onnx::ModelProto& model, ImportedGraph* graph)
      : model_(model), g_(model.graph()), graph_(graph) {}

  absl::Status Run();
  // What must hold before ONNX's shape inference runs (see the definition).
  absl::Status CheckBeforeShapeInference();

 private:
  absl::Status CheckNamesAreUtf8() const;
  absl::Status CheckWindowBeforeShapeInference(const onnx::NodeProto& node, int i, int input_rank,
                                               int kernel_rank) const;
  absl::Status ReadShapesAndInputs();
  absl::Status ReadConstants();
  void CountConsumers();
  absl::Status LowerNode(const onnx::NodeProto& node, const std::string& name);
  absl::Status LowerConv(const onnx::NodeProto& node, GraphNode n);
  absl::Status LowerBatchNorm(const onnx::NodeProto& node, GraphNode n);
  absl::Status LowerActivation(const onnx::NodeProto& node, GraphNode n);
  absl::Status LowerBinary(const onnx::NodeProto& node, GraphNode n);
  absl::Status LowerPool(const onnx::NodeProto& node, GraphNode n);
  absl::Status LowerLinear(const onnx::NodeProto& node, GraphNode n);
  absl::Status LowerShapeOp(const onnx::NodeProto& node, GraphNode n);
  absl::Status LowerSoftmax(const onnx::NodeProto& node, const GraphNode& n);
  absl::Status SetWindow(const onnx::NodeProto& node, GraphNode& n, const Dims& kernel);
  absl::Status Finish();
  absl::Status SetShapes();
  absl::Status CheckConvInput(const GraphNode& n) const;

  std::string Resolve(const std::string& tensor) const;
  bool IsWeight(const std::string& tensor) const { return weights_.count(Resolve(tensor)) > 0; }
  absl::StatusOr<Weight> WeightInput(const onnx::NodeProto& node, const GraphNode& n, int i) const;
  absl::StatusOr<float> ScalarInput(const onnx::NodeProto& node, const GraphNode& n, int i,
                                    float fallback) const;
  // The lowered node producing `tensor` when only one node consumes it and
  // it is not the graph's output (so its producer may absorb the consumer).
  GraphNode* SoleProducer(const std::string& tensor);
  void Add(GraphNode n);

  const onnx::ModelProto& model_;
  const onnx::GraphProto& g_;
  ImportedGraph* graph_;
  std::map<std::string, Dims> full_shapes_;  // with the batch dimension; -1 unknown
  std::map<std::string, Weight> weights_;
  std::map<std::string, Dims> int_constants_;
  std::map<std::string, std::string> alias_;  // Identity/Dropout outputs -> inputs
  std::map<std::string, int> consumers_;
  std::map<std::string, int> producer_;  // tensor -> index of the lowered node
  std::string graph_output_;
};

std::string Lowering::Resolve(const std::string& tensor) const {
  auto it = alias_.find(tensor);
  return it == alias_.end() ? tensor : it->second;
}

absl::Status Lowering::ReadShapesAndInputs() {
  auto record = [&](const onnx::ValueInfoProto& v) {
    if (!v.type().has_tensor_type() || !v.type().tensor_type().has_shape()) return;
    Dims dims;
    for (const auto& d : v.type().tensor_type().shape().dim()) {
      dims.push_back(d.has_dim_value() && d.dim_value() > 0 ? d.dim_value() : -1);
    }
    full_shapes_[v.name()] = dims;
  };
  for (const auto& v : g_.value_info()) record(v);
  for (const auto& v : g_.output()) record(v);
  std::set<std::string> initializers;
  for (const auto& t : g_.initializer()) initializers.insert(t.name());
  std::vector<std::string> inputs;
  for (const auto& v : g_.input()) {
    record(v);
    if (initializers.count(v.name()) == 0) inputs.push_back(v.name());
  }
  if (inputs.size() != 1 || g_.output_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("graph '", g_.name(), "' has ", inputs.size(),
                                                   " inputs and ", g_.output_size(),
                                                   " outputs; an image classifier has one each"));
  }
  graph_->input = inputs[0];
  graph_output_ = g_.output(0).name();
  const Dims& dims = full_shapes_[graph_->input];
  if (dims.size() != 4 || dims[1] <= 0 || dims[2] <= 0 || dims[3] <= 0) {
    std::vector<std::string> shown;
    for (int64_t d : dims) shown.push_back(d > 0 ? absl::StrCat(d) : "?");
    return absl::InvalidArgumentError(absl::StrCat(
        "graph input '", graph_->input, "' has shape [", absl::StrJoin(shown, ","),
        "]: a dynamic spatial shape (only the batch dimension may be dynamic; the input must be "
        "N x C x H x W)"));
  }
  graph_->input_shape = {dims[1], dims[2], dims[3]};
  graph_->static_batch = std::max<int64_t>(dims[0], 0);
  return absl::OkStatus();
}

bool IsSupportedOp(const onnx::NodeProto& node) {
  static const std::set<std::string> kOps = {"Conv",
                                             "BatchNormalization",
                                             "Relu",
                                             "Clip",
                                             "Sigmoid",
                                             "HardSigmoid",
                                             "HardSwish",
                                             "Mul",
                                             "Add",
                                             "Concat",
                                             "MaxPool",
                                             "AveragePool",
                                             "GlobalAveragePool",
                                             "Flatten",
                                             "Reshape",
                                             "Gemm",
                                             "MatMul",
                                             "Softmax",
                                             "Identity",
                                             "Dropout",
                                             "Constant"};
  return (node.domain().empty() || node.domain() == "ai.onnx") && kOps.count(node.op_type()) > 0;
}

// Names and metadata end up in the model's manifest (proto3 strings, which
// must be UTF-8) and in messages; in an ONNX file they are bytes.
absl::Status Lowering::CheckNamesAreUtf8() const {
  std::vector<std::pair<const char*, const std::string*>> names = {{"graph name", &g_.name()}};
  for (const auto& p : model_.metadata_props()) {
    names.push_back({"metadata key", &p.key()});
    names.push_back({"metadata value", &p.value()});
  }
  for (const auto& t : g_.initializer()) names.push_back({"tensor name", &t.name()});
  for (const auto* list : {&g_.input(), &g_.output(), &g_.value_info()}) {
    for (const auto& v : *list) names.push_back({"tensor name", &v.name()});
  }
  for (const auto& node : g_.node()) {
    names.push_back({"node name", &node.name()});
    for (const auto& t : node.input()) names.push_back({"tensor name", &t});
    for (const auto& t : node.output()) names.push_back({"tensor name", &t});
  }
  for (const auto& [what, name] : names) {
    if (!IsValidUtf8(*name)) {
      return absl::InvalidArgumentError(absl::StrCat(what, " '", Utf8Safe(name->substr(0, 64)),
                                                     name->size() > 64 ? "..." : "",
                                                     "' is not valid UTF-8"));
    }
  }
  return absl::OkStatus();
}

// A Conv or pool node before shape inference: libonnx's shape inference
// divides by the strides (by zero for a zero stride, found by
// fuzz_onnx_import), so the window is checked here as lowering checks it, and
// the input and kernel must both be 4-D.
absl::Status Lowering::CheckWindowBeforeShapeInference(const onnx::NodeProto& node, int i,
                                                       int input_rank, int kernel_rank) const {
  const std::string& op = node.op_type();
  GraphNode window;
  window.name = NodeName(node, i);
  window.op_type = op;
  window.kernel = IntsAttribute(node, "kernel_shape", op == "Conv" ? Dims{1, 1} : Dims{});
  window.strides = IntsAttribute(node, "strides", {1, 1});
  window.dilations = IntsAttribute(node, "dilations", {1, 1});
  window.pads = IntsAttribute(node, "pads", {0, 0, 0, 0});
  HAPI_RETURN_IF_ERROR(CheckWindow(window));
  if (op == "Conv" && IntAttribute(node, "group", 1) < 1) {
    return NodeError(window.name, op, "inconsistent group, kernel and bias sizes");
  }
  if (input_rank != 4 || kernel_rank != 4) {
    return NodeError(window.name, op,
                     absl::StrCat("only 2-D windows over a 4-D input are supported (input of rank ",
                                  input_rank < 0 ? "unknown" : absl::StrCat(input_rank), ")"));
  }
  return absl::OkStatus();
}

// libonnx 1.12's shape inference for Conv and the pools indexes its dilations
// (one per spatial axis of the input) by the kernel's axes: an input of rank
// below the kernel's is a read through a null pointer inside libonnx (found by
// fuzz_onnx_import). So before shape inference runs: the graph input is
// checked (as lowering checks it), every op must be one the importer lowers
// (the message lowering gives), and tensor ranks are followed through those
// ops so that a Conv or pool whose input is not 4-D, or whose kernel is not,
// is refused first. Ranks come from the nodes and constants only, never from
// the file's value_info.
absl::Status Lowering::CheckBeforeShapeInference() {
  HAPI_RETURN_IF_ERROR(CheckNamesAreUtf8());
  HAPI_RETURN_IF_ERROR(ReadShapesAndInputs());
  std::map<std::string, int> rank;        // known ranks
  std::map<std::string, int64_t> length;  // 1-D int64 constants: their length
  auto constant = [&](const onnx::TensorProto& t, const std::string& name) {
    rank[name] = t.dims_size();
    if (t.dims_size() == 1 && t.data_type() == onnx::TensorProto::INT64) length[name] = t.dims(0);
  };
  for (const auto& t : g_.initializer()) constant(t, t.name());
  rank[graph_->input] = 4;
  auto rank_of = [&](const std::string& tensor) {
    auto it = rank.find(tensor);
    return it == rank.end() ? -1 : it->second;
  };
  for (int i = 0; i < g_.node_size(); ++i) {
    const onnx::NodeProto& node = g_.node(i);
    const std::string& op = node.op_type();
    if (!IsSupportedOp(node)) {
      const std::string name = NodeName(node, i);
      if (!node.domain().empty() && node.domain() != "ai.onnx") {
        return NodeError(name, op, absl::StrCat("unsupported op (domain ", node.domain(), ")"));
      }
      return NodeError(name, op, absl::StrCat("unsupported op; supported: ", kSupportedOps));
    }
    if (node.output_size() == 0) continue;
    const int in0 = node.input_size() > 0 ? rank_of(node.input(0)) : -1;
    int out = in0;
    if (op == "Conv" || op == "MaxPool" || op == "AveragePool") {
      const int kernel = op == "Conv"
                             ? (node.input_size() > 1 ? rank_of(node.input(1)) : -1)
                             : static_cast<int>(IntsAttribute(node, "kernel_shape", {}).size()) + 2;
      HAPI_RETURN_IF_ERROR(CheckWindowBeforeShapeInference(node, i, in0, kernel));
    } else if (op == "Constant") {
      const onnx::AttributeProto* value = FindAttribute(node, "value");
      if (value != nullptr && value->has_t()) constant(value->t(), node.output(0));
      continue;
    } else if (op == "Flatten" || op == "Gemm") {
      out = 2;
    } else if (op == "Reshape") {
      auto it = node.input_size() > 1 ? length.find(node.input(1)) : length.end();
      out = it == length.end() || it->second > 64 ? -1 : static_cast<int>(it->second);
    } else if (op == "Add" || op == "Mul" || op == "MatMul" || op == "Concat") {
      for (const auto& in : node.input()) out = std::max(out, rank_of(in));
      for (const auto& in : node.input()) {
        if (rank_of(in) < 0) out = -1;
      }
    }
    if (out >= 0) rank[node.output(0)] = out;
  }
  return absl::OkStatus();
}

absl::Status Lowering::ReadConstants() {
  auto add = [&](const onnx::TensorProto& t, const std::string& name) -> absl::Status {
    Dims dims(t.dims().begin(), t.dims().end());
    if (t.data_type() == onnx::TensorProto::INT64) {
      HAPI_ASSIGN_OR_RETURN(int_constants_[name], TensorValues<int64_t>(t, t.data_type()));
    } else if (t.data_type() == onnx::TensorProto::FLOAT) {
      HAPI_ASSIGN_OR_RETURN(std::vector<float> values, TensorValues<float>(t, t.data_type()));
      weights_[name] = Weight{dims, std::move(values)};
    }  // Other types are refused where a node uses them.
    return absl::OkStatus();
  };
  for (const auto& t : g_.initializer()) HAPI_RETURN_IF_ERROR(add(t, t.name()));
  for (int i = 0; i < g_.node_size(); ++i) {
    const onnx::NodeProto& node = g_.node(i);
    if (node.op_type() != "Constant") continue;
    const onnx::AttributeProto* value = FindAttribute(node, "value");
    if (value == nullptr || !value->has_t()) {
      return NodeError(NodeName(node, i), node.op_type(), "only a tensor 'value' is supported");
    }
    absl::Status st = add(value->t(), node.output(0));
    if (!st.ok()) return NodeError(NodeName(node, i), node.op_type(), st.message());
  }
  return absl::OkStatus();
}

void Lowering::CountConsumers() {
  for (const auto& node : g_.node()) {
    if (node.op_type() == "Identity" || node.op_type() == "Dropout") {
      alias_[node.output(0)] = Resolve(node.input(0));
      continue;
    }
    for (const auto& in : node.input()) {
      if (!in.empty()) ++consumers_[Resolve(in)];
    }
  }
  ++consumers_[Resolve(graph_output_)];
}

GraphNode* Lowering::SoleProducer(const std::string& tensor) {
  auto it = producer_.find(tensor);
  if (it == producer_.end() || consumers_[tensor] != 1) return nullptr;
  return &graph_->nodes[it->second];
}

void Lowering::Add(GraphNode n) {
  producer_[n.output] = static_cast<int>(graph_->nodes.size());
  graph_->nodes.push_back(std::move(n));
}

absl::StatusOr<Weight> Lowering::WeightInput(const onnx::NodeProto& node, const GraphNode& n,
                                             int i) const {
  auto it = i < node.input_size() ? weights_.find(Resolve(node.input(i))) : weights_.end();
  if (it == weights_.end()) {
    return NodeError(n.name, n.op_type,
                     absl::StrCat("input ", i, " must be a float constant (an initializer)"));
  }
  // Every dimension at least 1, so that each is at most the number of values.
  if (it->second.values.empty()) {
    return NodeError(
        n.name, n.op_type,
        absl::StrCat("input ", i, " is an empty constant, dims ", DimsString(it->second.dims)));
  }
  return it->second;
}

absl::StatusOr<float> Lowering::ScalarInput(const onnx::NodeProto& node, const GraphNode& n, int i,
                                            float fallback) const {
  if (i >= node.input_size() || node.input(i).empty()) return fallback;
  HAPI_ASSIGN_OR_RETURN(Weight w, WeightInput(node, n, i));
  if (w.numel() != 1) return NodeError(n.name, n.op_type, "expected a scalar");
  return w.values[0];
}

absl::Status Lowering::LowerNode(const onnx::NodeProto& node, const std::string& name) {
  const std::string& op = node.op_type();
  GraphNode n;
  n.name = name;
  n.op_type = op;
  n.output = node.output_size() > 0 ? node.output(0) : "";
  if (!node.domain().empty() && node.domain() != "ai.onnx") {
    return NodeError(name, op, absl::StrCat("unsupported op (domain ", node.domain(), ")"));
  }
  for (int i = 1; i < node.output_size(); ++i) {
    if (!node.output(i).empty() && consumers_[node.output(i)] > 0) {
      return NodeError(name, op,
                       absl::StrCat("output ", i, " is used; only output 0 is supported"));
    }
  }
  if (op == "Constant" || op == "Identity" || op == "Dropout") return absl::OkStatus();
  for (const auto& in : node.input()) {
    if (!in.empty() && !IsWeight(in) && int_constants_.count(Resolve(in)) == 0) {
      n.inputs.push_back(Resolve(in));
    }
  }
  if (n.inputs.empty() && op != "Softmax") {
    return NodeError(name, op, "no input is an activation (constant subgraphs are not folded)");
  }
  for (const std::string& in : n.inputs) {
    if (in != graph_->input && producer_.count(in) == 0) {
      return NodeError(name, op,
                       absl::StrCat("input '", in,
                                    "' is neither the graph input nor computed by an earlier "
                                    "supported node (constants must be float or int64)"));
    }
  }
  if (op == "Conv") return LowerConv(node, std::move(n));
  if (op == "BatchNormalization") return LowerBatchNorm(node, std::move(n));
  if (op == "Relu" || op == "Clip" || op == "Sigmoid" || op == "HardSigmoid" || op == "HardSwish") {
    return LowerActivation(node, std::move(n));
  }
  if (op == "Add" || op == "Mul" || op == "Concat") return LowerBinary(node, std::move(n));
  if (op == "MaxPool" || op == "AveragePool" || op == "GlobalAveragePool") {
    return LowerPool(node, std::move(n));
  }
  if (op == "Gemm" || op == "MatMul") return LowerLinear(node, std::move(n));
  if (op == "Flatten" || op == "Reshape") return LowerShapeOp(node, std::move(n));
  if (op == "Softmax") return LowerSoftmax(node, n);
  return NodeError(name, op, absl::StrCat("unsupported op; supported: ", kSupportedOps));
}

// Kernel, strides, dilations and pads (explicit or from auto_pad) of a Conv or
// pooling node, 2-D only.
absl::Status CheckWindow(const GraphNode& n) {
  if (n.kernel.size() != 2 || n.strides.size() != 2 || n.dilations.size() != 2 ||
      n.pads.size() != 4) {
    return NodeError(n.name, n.op_type, "only 2-D windows are supported");
  }
  for (const Dims* v : {&n.kernel, &n.strides, &n.dilations}) {
    if (*std::min_element(v->begin(), v->end()) < 1) {
      return NodeError(n.name, n.op_type, "kernel, strides and dilations must be positive");
    }
  }
  if (*std::min_element(n.pads.begin(), n.pads.end()) < 0) {
    return NodeError(n.name, n.op_type, "negative pads are not supported");
  }
  for (const Dims* v : {&n.kernel, &n.strides, &n.dilations, &n.pads}) {
    if (*std::max_element(v->begin(), v->end()) > kMaxWindow) {
      return NodeError(
          n.name, n.op_type,
          absl::StrCat("kernel, strides, dilations and pads must be at most ", kMaxWindow));
    }
  }
  return absl::OkStatus();
}

absl::Status Lowering::SetWindow(const onnx::NodeProto& node, GraphNode& n, const Dims& kernel) {
  n.kernel = kernel;
  n.strides = IntsAttribute(node, "strides", {1, 1});
  n.dilations = IntsAttribute(node, "dilations", {1, 1});
  n.pads = IntsAttribute(node, "pads", {0, 0, 0, 0});
  HAPI_RETURN_IF_ERROR(CheckWindow(n));
  const std::string auto_pad = StringAttribute(node, "auto_pad");
  if (auto_pad == "VALID") n.pads = {0, 0, 0, 0};
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    const Dims& in = full_shapes_[n.inputs[0]];
    for (int d = 0; d < 2; ++d) {
      const int64_t size = in.size() == 4 && in[2 + d] <= kMaxElements ? in[2 + d] : -1;
      const int64_t out = (size + n.strides[d] - 1) / n.strides[d];
      const int64_t total = std::max<int64_t>(
          0, (out - 1) * n.strides[d] + (n.kernel[d] - 1) * n.dilations[d] + 1 - size);
      const int64_t small = total / 2;
      n.pads[d] = auto_pad == "SAME_UPPER" ? small : total - small;
      n.pads[d + 2] = total - n.pads[d];
    }
  }
  return absl::OkStatus();
}

absl::Status Lowering::LowerConv(const onnx::NodeProto& node, GraphNode n) {
  n.op = GraphOp::kConv;
  HAPI_ASSIGN_OR_RETURN(Weight w, WeightInput(node, n, 1));
  if (w.dims.size() != 4 || n.inputs.size() != 1) {
    return NodeError(n.name, n.op_type, "only 2-D convolutions of one input by a constant kernel");
  }
  HAPI_RETURN_IF_ERROR(
      SetWindow(node, n, IntsAttribute(node, "kernel_shape", {w.dims[2], w.dims[3]})));
  n.group = IntAttribute(node, "group", 1);
  Weight bias{{w.dims[0]}, std::vector<float>(w.dims[0], 0.0f)};
  if (node.input_size() > 2 && !node.input(2).empty()) {
    HAPI_ASSIGN_OR_RETURN(bias, WeightInput(node, n, 2));
  }
  if (n.group < 1 || w.dims[0] < 1 || w.dims[0] % n.group != 0 || bias.numel() != w.dims[0]) {
    return NodeError(n.name, n.op_type, "inconsistent group, kernel and bias sizes");
  }
  n.weights = {std::move(w), std::move(bias)};
  Add(std::move(n));
  return absl::OkStatus();
}

absl::Status Lowering::LowerBatchNorm(const onnx::NodeProto& node, GraphNode n) {
  if (IntAttribute(node, "training_mode", 0) != 0 || n.inputs.size() != 1) {
    return NodeError(n.name, n.op_type, "only inference-mode batch norm of one input");
  }
  std::vector<Weight> p(4);  // scale, B, mean, var
  for (int i = 0; i < 4; ++i) {
    HAPI_ASSIGN_OR_RETURN(p[i], WeightInput(node, n, i + 1));
  }
  const int64_t channels = p[0].numel();
  for (const Weight& w : p) {
    if (w.numel() != channels) {
      return NodeError(n.name, n.op_type, "scale, B, mean and var must have one value per channel");
    }
  }
  const float epsilon = FloatAttribute(node, "epsilon", 1e-5f);
  Weight scale{{channels, 1, 1}, std::vector<float>(channels)};
  Weight shift{{channels, 1, 1}, std::vector<float>(channels)};
  for (int64_t c = 0; c < channels; ++c) {
    scale.values[c] = p[0].values[c] / std::sqrt(p[3].values[c] + epsilon);
    shift.values[c] = p[1].values[c] - p[2].values[c] * scale.values[c];
  }
  GraphNode* conv = SoleProducer(n.inputs[0]);
  if (conv != nullptr && conv->op == GraphOp::kConv &&
      conv->activation.kind == ActivationKind::kNone && conv->weights[0].dims[0] == channels) {
    Weight& w = conv->weights[0];
    const int64_t per_channel = w.numel() / channels;
    for (int64_t i = 0; i < w.numel(); ++i) w.values[i] *= scale.values[i / per_channel];
    for (int64_t c = 0; c < channels; ++c) {
      conv->weights[1].values[c] = conv->weights[1].values[c] * scale.values[c] + shift.values[c];
    }
    producer_.erase(conv->output);
    conv->output = n.output;
    conv->fused.push_back(n.name);
    producer_[n.output] = static_cast<int>(conv - graph_->nodes.data());
    return absl::OkStatus();
  }
  n.op = GraphOp::kChannelAffine;
  n.weights = {std::move(scale), std::move(shift)};
  Add(std::move(n));
  return absl::OkStatus();
}

absl::Status Lowering::LowerActivation(const onnx::NodeProto& node, GraphNode n) {
  Activation a;
  const std::string& op = n.op_type;
  if (op == "Relu") a.kind = ActivationKind::kRelu;
  if (op == "Sigmoid") a.kind = ActivationKind::kSigmoid;
  if (op == "HardSwish") a.kind = ActivationKind::kHardSwish;
  if (op == "HardSigmoid") {
    a = {ActivationKind::kHardSigmoid, FloatAttribute(node, "alpha", 0.2f),
         FloatAttribute(node, "beta", 0.5f)};
  }
  if (op == "Clip") {  // bounds as attributes before opset 11, as inputs since
    a.kind = ActivationKind::kClip;
    HAPI_ASSIGN_OR_RETURN(
        a.alpha,
        ScalarInput(node, n, 1, FloatAttribute(node, "min", std::numeric_limits<float>::lowest())));
    HAPI_ASSIGN_OR_RETURN(
        a.beta,
        ScalarInput(node, n, 2, FloatAttribute(node, "max", std::numeric_limits<float>::max())));
  }
  if (n.inputs.size() != 1) return NodeError(n.name, op, "expected one activation input");
  GraphNode* producer = SoleProducer(n.inputs[0]);
  if (producer != nullptr && producer->activation.kind == ActivationKind::kNone &&
      producer->op != GraphOp::kActivation && producer->op != GraphOp::kFlatten &&
      producer->op != GraphOp::kReshape) {
    producer_.erase(producer->output);
    producer->output = n.output;
    producer->activation = a;
    producer->fused.push_back(n.name);
    producer_[n.output] = static_cast<int>(producer - graph_->nodes.data());
    return absl::OkStatus();
  }
  n.op = GraphOp::kActivation;
  n.activation = a;
  Add(std::move(n));
  return absl::OkStatus();
}

// Add and Mul (two tensors, or a tensor and a constant), and Concat.
absl::Status Lowering::LowerBinary(const onnx::NodeProto& node, GraphNode n) {
  if (n.op_type == "Concat") {
    n.op = GraphOp::kConcat;
    const int64_t rank = static_cast<int64_t>(full_shapes_[n.output].size());
    n.axis = IntAttribute(node, "axis", 1);
    if (n.axis < 0) n.axis += rank;
    if (n.axis <= 0 || static_cast<int>(n.inputs.size()) != node.input_size()) {
      return NodeError(n.name, n.op_type, "only activations concatenated along a non-batch axis");
    }
    Add(std::move(n));
    return absl::OkStatus();
  }
  n.op = n.op_type == "Add" ? GraphOp::kAdd : GraphOp::kMul;
  if (n.inputs.size() == 1) {
    const int weight_index = IsWeight(node.input(0)) ? 0 : 1;
    HAPI_ASSIGN_OR_RETURN(Weight w, WeightInput(node, n, weight_index));
    n.weights.push_back(std::move(w));
  } else if (n.inputs.size() != 2) {
    return NodeError(n.name, n.op_type, "expected a tensor and a tensor or float constant");
  }
  Add(std::move(n));
  return absl::OkStatus();
}

absl::Status Lowering::LowerPool(const onnx::NodeProto& node, GraphNode n) {
  if (n.op_type == "GlobalAveragePool") {
    n.op = GraphOp::kGlobalAveragePool;
    Add(std::move(n));
    return absl::OkStatus();
  }
  n.op = n.op_type == "MaxPool" ? GraphOp::kMaxPool : GraphOp::kAveragePool;
  HAPI_RETURN_IF_ERROR(SetWindow(node, n, IntsAttribute(node, "kernel_shape", {})));
  n.ceil_mode = IntAttribute(node, "ceil_mode", 0) != 0;
  n.count_include_pad = IntAttribute(node, "count_include_pad", 0) != 0;
  if (n.pads[0] != n.pads[2] || n.pads[1] != n.pads[3]) {
    return NodeError(n.name, n.op_type, "asymmetric padding is not supported for pooling");
  }
  if (n.op == GraphOp::kAveragePool && (n.dilations[0] != 1 || n.dilations[1] != 1)) {
    return NodeError(n.name, n.op_type, "dilated average pooling is not supported");
  }
  Add(std::move(n));
  return absl::OkStatus();
}

// Gemm and MatMul by a constant: stored as nn.Linear's out x in weight.
absl::Status Lowering::LowerLinear(const onnx::NodeProto& node, GraphNode n) {
  n.op = GraphOp::kLinear;
  HAPI_ASSIGN_OR_RETURN(Weight w, WeightInput(node, n, 1));
  const bool gemm = n.op_type == "Gemm";
  if (n.inputs.size() != 1 || w.dims.size() != 2 || IsWeight(node.input(0)) ||
      (gemm && IntAttribute(node, "transA", 0) != 0)) {
    return NodeError(n.name, n.op_type, "only an activation times a constant 2-D matrix");
  }
  if (!gemm || IntAttribute(node, "transB", 0) == 0) w = Transposed(w);
  const float alpha = gemm ? FloatAttribute(node, "alpha", 1.0f) : 1.0f;
  for (float& v : w.values) v *= alpha;
  n.weights.push_back(std::move(w));
  if (gemm && node.input_size() > 2 && !node.input(2).empty()) {
    HAPI_ASSIGN_OR_RETURN(Weight c, WeightInput(node, n, 2));
    const int64_t out = n.weights[0].dims[0];
    if (c.numel() != 1 && c.numel() != out) {
      return NodeError(n.name, n.op_type, "the bias must be a scalar or one value per output");
    }
    Weight bias{{out}, std::vector<float>(out)};
    const float beta = FloatAttribute(node, "beta", 1.0f);
    for (int64_t i = 0; i < out; ++i) bias.values[i] = beta * c.values[c.numel() == 1 ? 0 : i];
    n.weights.push_back(std::move(bias));
  }
  Add(std::move(n));
  return absl::OkStatus();
}

absl::Status Lowering::LowerShapeOp(const onnx::NodeProto& node, GraphNode n) {
  if (n.inputs.size() != 1) return NodeError(n.name, n.op_type, "expected one activation input");
  if (n.op_type == "Flatten") {
    n.op = GraphOp::kFlatten;
    if (IntAttribute(node, "axis", 1) != 1) {
      return NodeError(n.name, n.op_type, "only axis 1 is supported (the batch stays apart)");
    }
  } else {
    n.op = GraphOp::kReshape;
    auto shape =
        node.input_size() > 1 ? int_constants_.find(Resolve(node.input(1))) : int_constants_.end();
    if (shape == int_constants_.end() || shape->second.empty()) {
      return NodeError(n.name, n.op_type, "the target shape must be a constant");
    }
    const int64_t first = shape->second[0];
    if (first != -1 && first != 0 && first != 1 && first != graph_->static_batch) {
      return NodeError(n.name, n.op_type,
                       absl::StrCat("target shape ", DimsString(shape->second),
                                    " does not keep the batch as its first dimension"));
    }
  }
  Add(std::move(n));
  return absl::OkStatus();
}

absl::Status Lowering::LowerSoftmax(const onnx::NodeProto& node, const GraphNode& n) {
  const int64_t axis = IntAttribute(node, "axis", -1);
  if (n.output != graph_output_ || n.inputs.size() != 1 || (axis != -1 && axis != 1)) {
    return NodeError(n.name, n.op_type,
                     "Softmax is supported only as the graph's last op, over the classes");
  }
  graph_->output_was_softmax = true;
  alias_[n.output] = n.inputs[0];
  return absl::OkStatus();
}

absl::Status Lowering::CheckConvInput(const GraphNode& n) const {
  auto in = graph_->shapes.find(n.inputs[0]);
  const int64_t wanted = n.weights[0].dims[1] * n.group;
  if (in == graph_->shapes.end() || in->second.size() != 3 || in->second[0] != wanted) {
    return NodeError(n.name, n.op_type,
                     absl::StrCat("the kernel wants a ", wanted, "-channel 2-D input"));
  }
  return absl::OkStatus();
}

absl::Status Lowering::SetShapes() {
  auto per_sample = [&](const std::string& tensor, const GraphNode* node) -> absl::StatusOr<Dims> {
    auto it = full_shapes_.find(tensor);
    bool known = it != full_shapes_.end() && !it->second.empty();
    int64_t elements = 1;  // kMaxElements + 1 for more
    for (size_t d = 1; known && d < it->second.size(); ++d) {
      const int64_t size = it->second[d];
      known = size > 0;
      if (known) elements = elements > kMaxElements / size ? kMaxElements + 1 : elements * size;
    }
    std::string what;
    if (!known) {
      what = absl::StrCat("the shape of tensor '", tensor, "' is not static");
    } else if (elements > kMaxElements) {
      what = absl::StrCat("tensor '", tensor, "' has shape ", DimsString(it->second),
                          ": more than 2^40 values per sample");
    } else {
      return Dims(it->second.begin() + 1, it->second.end());
    }
    if (node == nullptr) return absl::InvalidArgumentError(what);
    return NodeError(node->name, node->op_type, what);
  };
  int64_t total_macs = 0;
  HAPI_ASSIGN_OR_RETURN(graph_->shapes[graph_->input], per_sample(graph_->input, nullptr));
  for (GraphNode& n : graph_->nodes) {
    HAPI_ASSIGN_OR_RETURN(Dims out, per_sample(n.output, &n));
    if (n.op == GraphOp::kConv) HAPI_RETURN_IF_ERROR(CheckConvInput(n));
    // Output elements times the MACs of one (kernels and matrices have no
    // empty dimension, so both factors are positive).
    if (n.op == GraphOp::kConv || n.op == GraphOp::kLinear) {
      const int64_t per_output = n.op == GraphOp::kConv
                                     ? n.weights[0].numel() / n.weights[0].dims[0]
                                     : n.weights[0].dims[1];
      n.macs = CheckedProduct({Product(out), per_output}, kMaxMacs);
      if (n.macs < 0 || n.macs > kMaxMacs - total_macs) {
        return NodeError(n.name, n.op_type,
                         absl::StrCat("more than 2^50 multiply-accumulates per sample (output ",
                                      DimsString(out), ")"));
      }
      total_macs += n.macs;
    }
    graph_->shapes[n.output] = std::move(out);
  }
  return absl::OkStatus();
}

absl::Status Lowering::Finish() {
  graph_->output = Resolve(graph_output_);
  if (producer_.count(graph_->output) == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("graph output '", graph_output_, "' is not computed by a supported node"));
  }
  HAPI_RETURN_IF_ERROR(SetShapes());
  const Dims& out = graph_->shapes[graph_->output];
  if (out.size() != 1 || out[0] < 2 || out[0] > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat("graph output '", graph_output_, "' has shape ",
                                                   DimsString(out),
                                                   " per sample; a classifier has [classes]"));
  }
  graph_->num_classes = static_cast<int>(out[0]);
  return absl::OkStatus();
}

absl::Status Lowering::Run() {
  graph_->name = g_.name();
  for (const auto& p : model_.metadata_props()) graph_->metadata[p.key()] = p.value();
  HAPI_RETURN_IF_ERROR(ReadShapesAndInputs());
  HAPI_RETURN_IF_ERROR(ReadConstants());
  CountConsumers();
  for (int i = 0; i < g_.node_size(); ++i) {
    HAPI_RETURN_IF_ERROR(LowerNode(g_.node(i), NodeName(g_.node(i), i)));
  }
  return Finish();
}

// --- Cut points ---------------------------------------------------------------

bool IsTailStart(GraphOp op) {
  return op == GraphOp::kGlobalAveragePool || op == GraphOp::kFlatten || op == GraphOp::kReshape ||
         op == GraphOp::kLinear;
}

// Positions after which exactly one tensor, of per-sample rank 3, is live.
std::vector<int> SingleTensorPositions(const ImportedGraph& g) {
  const int n = static_cast<int>(g.nodes.size());
  std::map<std::string, int> last_use;
  for (int i = 0; i < n; ++i) {
    for (const auto& in : g.nodes[i].inputs) last_use[in] = i;
  }
  last_use[g.output] = n;
  std::set<std::string> live = {g.input};
  std::vector<int> positions;
  for (int i = 0; i < n; ++i) {
    for (const auto& in : g.nodes[i].inputs) {
      if (last_use[in] == i) live.erase(in);
    }
    if (last_use.count(g.nodes[i].output) > 0 && last_use[g.nodes[i].output] > i) {
      live.insert(g.nodes[i].output);
    }
    if (live.size() == 1 && g.shapes.at(*live.begin()).size() == 3 &&
        *live.begin() == g.nodes[i].output) {
      positions.push_back(i);
    }
  }
  return positions;
}

// Cut points: before every Conv where a single tensor crosses, and the last
// single-tensor position before the classifier tail.
absl::StatusOr<std::vector<CutPoint>> FindCutPoints(const ImportedGraph& g) {
  const int n = static_cast<int>(g.nodes.size());
  int last_conv = -1;
  for (int i = 0; i < n; ++i) {
    if (g.nodes[i].op == GraphOp::kConv) last_conv = i;
  }
  int tail = last_conv + 1;
  while (tail < n && !IsTailStart(g.nodes[tail].op)) ++tail;
  if (last_conv < 0 || tail == n) {
    return absl::InvalidArgumentError(
        absl::StrCat("graph '", g.name,
                     "' has no classifier tail (global pooling, Flatten, Reshape, Gemm "
                     "or MatMul) after a Conv"));
  }
  std::vector<CutPoint> cuts;
  int64_t macs = 0, counted = -1;
  const std::vector<int> positions = SingleTensorPositions(g);
  for (size_t k = 0; k < positions.size() && positions[k] < tail; ++k) {
    const int i = positions[k];
    const bool last = k + 1 == positions.size() || positions[k + 1] >= tail;
    if (!last && g.nodes[i + 1].op != GraphOp::kConv) continue;
    while (counted < i) macs += g.nodes[++counted].macs;
    cuts.push_back({i, g.nodes[i].output, g.nodes[i].name, macs});
  }
  return cuts;
}

absl::StatusOr<ImportedGraph> ImportParsed(onnx::ModelProto& model, absl::string_view what) {
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    return absl::DataLossError(
        absl::StrCat(what, " is not a valid ONNX model (checker: ", e.what(), ")"));
  }
  {
    ImportedGraph scratch;
    absl::Status st = Lowering(model, &scratch).CheckBeforeShapeInference();
    if (!st.ok()) return absl::Status(st.code(), absl::StrCat(what, ": ", st.message()));
  }
  try {
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(false, 1, false));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ONNX shape inference failed: ", e.what()));
  }
  ImportedGraph graph;
  absl::Status st = Lowering(model, &graph).Run();
  if (!st.ok()) return absl::Status(st.code(), absl::StrCat(what, ": ", st.message()));
  HAPI_ASSIGN_OR_RETURN(graph.cut_points, FindCutPoints(graph));
  if (graph.cut_points.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": graph '", graph.name, "' has ", graph.cut_points.size(),
                     " cut point(s); an early-exit model needs at least 2 (docs/onnx-import.md)"));
  }
  return graph;
}

}  // namespace

int64_t ImportedGraph::total_macs() const {
  int64_t macs = 0;
  for (const GraphNode& n : nodes) macs += n.macs;
  return macs;
}

absl::StatusOr<ImportedGraph> ImportOnnx(absl::string_view bytes, absl::string_view what) {
  onnx::ModelProto model;
  if (bytes.size() > static_cast<size_t>(std::numeric_limits<int>::max()) ||
      !model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError(Utf8Safe(absl::StrCat(
        what, " is not a valid ONNX model (truncated or corrupt: it does not parse)")));
  }
  absl::StatusOr<ImportedGraph> graph = ImportParsed(model, what);
  if (!graph.ok()) return absl::Status(graph.status().code(), Utf8Safe(graph.status().message()));
  return graph;
}

absl::StatusOr<ImportedGraph> ImportOnnxFile(const std::string& path) {
  absl::StatusOr<std::string> bytes = ReadFile(path);
  if (!bytes.ok()) {
    return absl::Status(absl::IsNotFound(bytes.status()) ? absl::StatusCode::kNotFound
                                                         : absl::StatusCode::kDataLoss,
                        bytes.status().message());
  }
  return ImportOnnx(*bytes, path);
}

absl::StatusOr<std::vector<CutPoint>> SelectCutPoints(const ImportedGraph& graph,
                                                      const CutPointOptions& options) {
  std::vector<CutPoint> kept;
  const CutPoint& final_cut = graph.cut_points.back();
  std::set<int> wanted;
  for (const std::string& name : options.exits) {
    auto it =
        std::find_if(graph.cut_points.begin(), graph.cut_points.end(), [&](const CutPoint& c) {
          const GraphNode& n = graph.nodes[c.after_node];
          return c.tensor == name || n.name == name ||
                 std::count(n.fused.begin(), n.fused.end(), name) > 0;
        });
    if (it == graph.cut_points.end()) {
      return absl::InvalidArgumentError(
          Utf8Safe(absl::StrCat("'", name, "' is not a cut point of graph '", graph.name,
                                "' (name a cut point's tensor or the node that produces it)")));
    }
    wanted.insert(it->after_node);
  }
  int64_t last_macs = 0;
  for (const CutPoint& c : graph.cut_points) {
    const bool is_final = c.after_node == final_cut.after_node;
    if (!is_final && !options.exits.empty() && wanted.count(c.after_node) == 0) continue;
    if (!is_final && !kept.empty() && c.macs - last_macs < options.min_spacing_macs) continue;
    kept.push_back(c);
    last_macs = c.macs;
  }
  if (kept.size() >= 2 && final_cut.macs - kept[kept.size() - 2].macs < options.min_spacing_macs) {
    kept.erase(kept.end() - 2);
  }
  if (kept.size() < 2) {
    return absl::InvalidArgumentError(Utf8Safe(
        absl::StrCat("graph '", graph.name, "': ", kept.size(),
                     " cut point(s) left after the exits list and spacing; at least 2 needed")));
  }
  return kept;
}

std::vector<GraphSegment> SplitGraph(const ImportedGraph& graph,
                                     const std::vector<CutPoint>& cuts) {
  std::vector<GraphSegment> segments;
  GraphSegment s;
  s.input = graph.input;
  auto close = [&](int end, const std::string& output) {
    s.end = end;
    s.output = output;
    for (int i = s.begin; i < s.end; ++i) {
      const GraphNode& n = graph.nodes[i];
      s.macs += n.macs;
      for (const Weight& w : n.weights) s.params += w.numel();
      if (n.op == GraphOp::kConv || n.op == GraphOp::kLinear) ++s.layers;
    }
    segments.push_back(s);
    s = GraphSegment{end, end, output, "", 0, 0, 0};
  };
  for (const CutPoint& c : cuts) close(c.after_node + 1, c.tensor);
  close(static_cast<int>(graph.nodes.size()), graph.output);
  return segments;
}

}  // namespace hapi
