// ImportOnnx on the bytes of an ONNX file (model/onnx_import.h): protobuf
// parsing, ONNX's checker and shape inference (libonnx, not instrumented),
// then the project's lowering and cut points; for a graph it accepts, the
// cut-point selection and the split into stages that hapi-import runs next.
//
// Checks: a file is either refused with INVALID_ARGUMENT or DATA_LOSS and a
// non-empty UTF-8 message, or the imported graph is consistent: nodes in
// topological order (every input is the graph input or an earlier node's
// output), a static per-sample shape for every activation, at least two cut
// points, strictly increasing in node and non-decreasing in MACs, each
// carrying its node's output and the MACs up to it; SplitGraph's segments
// are contiguous, cover every node and add up to total_macs(); and
// SelectCutPoints with a minimum spacing either refuses (INVALID_ARGUMENT)
// or keeps a subset that ends with the final cut point and respects the
// spacing.
//
// Replaying an input with FUZZ_ONNX_VERBOSE=1 in the environment prints the
// importer's answer (the status, or the node and cut-point counts).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "model/onnx_import.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

using hapi::CutPoint;
using hapi::ImportedGraph;

void CheckShape(const ImportedGraph& g, const std::string& tensor) {
  auto it = g.shapes.find(tensor);
  HAPI_FUZZ_CHECK(it != g.shapes.end());
  HAPI_FUZZ_CHECK(!it->second.empty());
  for (int64_t d : it->second) HAPI_FUZZ_CHECK(d > 0);
}

void CheckSelection(const ImportedGraph& g, int64_t spacing) {
  hapi::CutPointOptions options;
  options.min_spacing_macs = spacing;
  absl::StatusOr<std::vector<CutPoint>> kept = hapi::SelectCutPoints(g, options);
  if (!kept.ok()) {
    hapi::fuzz::CheckRefusal(kept.status(), absl::StatusCode::kInvalidArgument);
    return;
  }
  HAPI_FUZZ_CHECK(kept->size() >= 2);
  HAPI_FUZZ_CHECK(kept->back().after_node == g.cut_points.back().after_node);
  size_t next = 0;  // kept is a subsequence of g.cut_points
  for (size_t k = 0; k < kept->size(); ++k) {
    while (next < g.cut_points.size() && g.cut_points[next].after_node != (*kept)[k].after_node) {
      ++next;
    }
    HAPI_FUZZ_CHECK(next < g.cut_points.size());
    HAPI_FUZZ_CHECK(g.cut_points[next].tensor == (*kept)[k].tensor);
    HAPI_FUZZ_CHECK(g.cut_points[next].macs == (*kept)[k].macs);
    ++next;
    if (k > 0) HAPI_FUZZ_CHECK((*kept)[k].macs - (*kept)[k - 1].macs >= spacing);
  }
}

void CheckGraph(const ImportedGraph& g) {
  const int n = static_cast<int>(g.nodes.size());
  HAPI_FUZZ_CHECK(n > 0);
  HAPI_FUZZ_CHECK(g.input_shape.size() == 3);
  CheckShape(g, g.input);
  HAPI_FUZZ_CHECK(g.shapes.at(g.input) == g.input_shape);
  HAPI_FUZZ_CHECK(g.num_classes >= 2);

  // Topological order, shapes and MACs.
  std::set<std::string> available = {g.input};
  int64_t total = 0;
  for (const hapi::GraphNode& node : g.nodes) {
    HAPI_FUZZ_CHECK(!node.inputs.empty());
    for (const std::string& in : node.inputs) HAPI_FUZZ_CHECK(available.count(in) > 0);
    CheckShape(g, node.output);
    HAPI_FUZZ_CHECK(node.macs >= 0);
    total += node.macs;
    HAPI_FUZZ_CHECK(total >= 0);
    available.insert(node.output);
  }
  HAPI_FUZZ_CHECK(total == g.total_macs());
  HAPI_FUZZ_CHECK(available.count(g.output) > 0);
  HAPI_FUZZ_CHECK(g.shapes.at(g.output) == std::vector<int64_t>{g.num_classes});

  // Cut points.
  HAPI_FUZZ_CHECK(g.cut_points.size() >= 2);
  int64_t macs = 0;
  int counted = -1;
  for (size_t k = 0; k < g.cut_points.size(); ++k) {
    const CutPoint& c = g.cut_points[k];
    HAPI_FUZZ_CHECK(c.after_node >= 0 && c.after_node < n);
    if (k > 0) {
      HAPI_FUZZ_CHECK(c.after_node > g.cut_points[k - 1].after_node);
      HAPI_FUZZ_CHECK(c.macs >= g.cut_points[k - 1].macs);
    }
    HAPI_FUZZ_CHECK(c.tensor == g.nodes[c.after_node].output);
    HAPI_FUZZ_CHECK(c.node == g.nodes[c.after_node].name);
    HAPI_FUZZ_CHECK(g.shapes.at(c.tensor).size() == 3);
    while (counted < c.after_node) macs += g.nodes[++counted].macs;
    HAPI_FUZZ_CHECK(c.macs == macs);
  }
  // The classifier tail follows the last cut point.
  HAPI_FUZZ_CHECK(g.cut_points.back().after_node < n - 1);

  // Stages.
  const std::vector<hapi::GraphSegment> segments = hapi::SplitGraph(g, g.cut_points);
  HAPI_FUZZ_CHECK(segments.size() == g.cut_points.size() + 1);
  int begin = 0;
  std::string input = g.input;
  int64_t segment_macs = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const hapi::GraphSegment& seg = segments[s];
    HAPI_FUZZ_CHECK(seg.begin == begin);
    HAPI_FUZZ_CHECK(seg.end > seg.begin);
    HAPI_FUZZ_CHECK(seg.input == input);
    HAPI_FUZZ_CHECK(seg.output == (s < g.cut_points.size() ? g.cut_points[s].tensor : g.output));
    HAPI_FUZZ_CHECK(seg.macs >= 0 && seg.params >= 0 && seg.layers >= 0);
    segment_macs += seg.macs;
    begin = seg.end;
    input = seg.output;
  }
  HAPI_FUZZ_CHECK(begin == n);
  HAPI_FUZZ_CHECK(segment_macs == g.total_macs());

  // Selections: every cut point, and two spacings.
  CheckSelection(g, 0);
  CheckSelection(g, g.total_macs() / 4);
  CheckSelection(g, g.total_macs() / 2 + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<ImportedGraph> graph = hapi::ImportOnnx(bytes, "model.onnx");
  static const bool verbose = std::getenv("FUZZ_ONNX_VERBOSE") != nullptr;
  if (verbose) {
    if (graph.ok()) {
      std::fprintf(stderr, "imported: %zu nodes, %zu cut points, %lld MACs\n", graph->nodes.size(),
                   graph->cut_points.size(), static_cast<long long>(graph->total_macs()));
    } else {
      std::fprintf(stderr, "refused: %s\n", graph.status().ToString().c_str());
    }
  }
  if (!graph.ok()) {
    const absl::StatusCode code = graph.status().code();
    HAPI_FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
                    code == absl::StatusCode::kDataLoss);
    hapi::fuzz::CheckRefusal(graph.status(), code);
    return 0;
  }
  CheckGraph(*graph);
  return 0;
}
