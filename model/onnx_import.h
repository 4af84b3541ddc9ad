// Importing a trained ONNX image classifier (docs/onnx-import.md): parse the
// file, run ONNX's checker and shape inference, lower the graph to the ops the
// inference path runs (BatchNormalization folded into the preceding Conv,
// activations fused into their producer, Identity/Dropout removed, Constant
// nodes turned into weights), with a static per-sample shape for every
// tensor, and find the graph's cut points. Torch-free.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hapi {

// What a lowered node computes. ONNX's op_type is kept beside it for messages.
enum class GraphOp {
  kConv,           // Conv (+ folded BatchNormalization)
  kChannelAffine,  // BatchNormalization that could not be folded: x * scale + shift
  kActivation,     // an activation that could not be fused into its producer
  kAdd,
  kMul,
  kConcat,
  kMaxPool,
  kAveragePool,
  kGlobalAveragePool,
  kFlatten,  // axis 1 only (the batch stays the first dimension)
  kReshape,  // to a constant per-sample shape
  kLinear,   // Gemm or MatMul by a weight: x W^T (+ b)
};

enum class ActivationKind { kNone, kRelu, kClip, kSigmoid, kHardSigmoid, kHardSwish };

// An element-wise activation. Clip: clamp to [alpha, beta]; HardSigmoid:
// clamp(alpha x + beta, 0, 1); the others take no parameters.
struct Activation {
  ActivationKind kind = ActivationKind::kNone;
  float alpha = 0, beta = 0;
};

// A constant tensor (an initializer or a Constant node), float32 row-major.
struct Weight {
  std::vector<int64_t> dims;
  std::vector<float> values;
  int64_t numel() const { return static_cast<int64_t>(values.size()); }
};

struct GraphNode {
  std::string name;     // the ONNX node's name, or "#<index>" when it has none
  std::string op_type;  // the ONNX op_type
  GraphOp op = GraphOp::kActivation;
  std::vector<std::string> inputs;  // activation tensors (never weights)
  std::string output;               // after fusion: the last fused node's output
  std::vector<std::string> fused;   // names of the nodes folded or fused into this one
  // Op-specific constants. Conv: weight (O x I/group x kH x kW), bias (O).
  // Linear: weight (out x in), bias (out, or absent). ChannelAffine: scale and
  // shift (C x 1 x 1). Add/Mul: the constant operand, when there is one.
  std::vector<Weight> weights;
  // Conv and pools: 2-D kernel, strides, dilations; pads as top, left,
  // bottom, right.
  std::vector<int64_t> kernel, strides, pads, dilations;
  int64_t group = 1;
  int64_t axis = 1;  // Concat
  bool ceil_mode = false;
  bool count_include_pad = false;
  Activation activation;  // applied to the output (the op itself for kActivation)
  int64_t macs = 0;       // multiply-accumulates for one sample
};

// A position after which a single 4-D tensor carries everything later nodes
// need: only that tensor (and weights) crosses the cut.
struct CutPoint {
  int after_node = 0;  // index into ImportedGraph::nodes
  std::string tensor;  // the tensor crossing the cut
  std::string node;    // the lowered node producing it
  int64_t macs = 0;    // MACs of nodes 0..after_node, one sample
};

struct ImportedGraph {
  std::string name;                  // the ONNX graph's name
  std::string input;                 // the graph input
  std::vector<int64_t> input_shape;  // channels, height, width
  int64_t static_batch = 0;          // the input's batch size when fixed, else 0
  std::vector<GraphNode> nodes;      // topological order
  // Per-sample shape (without the batch dimension) of every activation.
  std::map<std::string, std::vector<int64_t>> shapes;
  std::string output;  // logits: the classifier's last tensor before any Softmax
  bool output_was_softmax = false;
  int num_classes = 0;
  std::map<std::string, std::string> metadata;  // the file's metadata_props
  // Every cut point in order; the last one is where the classifier tail
  // (global pooling / Flatten / Reshape / Gemm / MatMul onwards) begins.
  std::vector<CutPoint> cut_points;

  int64_t total_macs() const;
};

// Parses and lowers an ONNX file. DATA_LOSS (naming `path`) for a file that is
// not a valid ONNX model (unreadable, truncated, corrupt, rejected by the
// checker); INVALID_ARGUMENT naming the node and its op for an unsupported op
// or attribute, naming the tensor for a dynamic spatial shape; INVALID_ARGUMENT
// for a graph with fewer than two cut points.
absl::StatusOr<ImportedGraph> ImportOnnxFile(const std::string& path);
// The same for the bytes of a file; `what` names it in messages.
absl::StatusOr<ImportedGraph> ImportOnnx(absl::string_view bytes, absl::string_view what);

struct CutPointOptions {
  // Empty: every cut point. Otherwise the cut points to keep, each named by
  // its tensor or by any node folded into its producer; the last cut point
  // (the classifier's input) is always kept.
  std::vector<std::string> exits;
  // Consecutive kept cut points are at least this many MACs apart (one
  // sample); when the last two are closer, the earlier one goes.
  int64_t min_spacing_macs = 0;
};

// The cut points that split `graph` into stages, in order. INVALID_ARGUMENT
// for a name that is not a cut point, or when fewer than two remain.
absl::StatusOr<std::vector<CutPoint>> SelectCutPoints(const ImportedGraph& graph,
                                                      const CutPointOptions& options);

// Nodes [begin, end) of `graph`: stage s of cut points `cuts` runs nodes
// cuts[s-1].after_node+1 .. cuts[s].after_node; the segment after the last
// cut is the classifier tail.
struct GraphSegment {
  int begin = 0, end = 0;
  std::string input, output;  // the tensors entering and leaving
  int64_t macs = 0, params = 0;
  int layers = 0;  // Conv and Linear nodes
};
std::vector<GraphSegment> SplitGraph(const ImportedGraph& graph, const std::vector<CutPoint>& cuts);

}  // namespace hapi
