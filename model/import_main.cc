// hapi-import: turns a trained ONNX image classifier into a model directory
// (docs/onnx-import.md): manifest.pbtxt (stages cut at the graph's cut
// points, candidate exits, input spec, class names) and a copy of the file.
//
//   hapi-import --onnx=net.onnx --out=repository/models/my-net [--exits=auto]
//
// The input spec comes from the flags, else from the file's metadata_props
// (hapi.mean, hapi.std, hapi.resize, hapi.class_names, hapi.dataset,
// hapi.layout), else from the graph (shape) and defaults (mean 0, std 1).
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "core/model_metadata.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "model/imported_model.h"
#include "model/onnx_import.h"

ABSL_FLAG(std::string, onnx, "", "The ONNX file to import (required)");
ABSL_FLAG(std::string, out, "", "The model directory to write, <repository>/models/<name>");
ABSL_FLAG(int32_t, channels, 0, "Input channels (0: the graph's)");
ABSL_FLAG(int32_t, height, 0, "Input height (0: the graph's)");
ABSL_FLAG(int32_t, width, 0, "Input width (0: the graph's)");
ABSL_FLAG(std::string, mean, "",
          "Per-channel mean of pixel/255, e.g. 0.485,0.456,0.406 "
          "(default: metadata hapi.mean, else 0)");
ABSL_FLAG(std::string, std, "", "Per-channel std (default: metadata hapi.std, else 1)");
ABSL_FLAG(std::string, resize, "",
          "resize or center_crop (default: metadata hapi.resize, else "
          "resize)");
ABSL_FLAG(std::string, class_names, "",
          "Comma-separated class names (default: metadata "
          "hapi.class_names, else 0..K-1)");
ABSL_FLAG(std::string, dataset, "",
          "Data set the model was trained on (default: metadata "
          "hapi.dataset)");
ABSL_FLAG(std::string, exits, "auto", "auto, or comma-separated cut point tensor/node names");
ABSL_FLAG(int64_t, min_exit_spacing_macs, 0, "Least MACs between consecutive cut points");

namespace {

using hapi::ImportedGraph;

// The flag's value, else the graph's metadata property `key`.
std::string FlagOrMetadata(const absl::Flag<std::string>& flag, const ImportedGraph& graph,
                           const std::string& key) {
  std::string value = absl::GetFlag(flag);
  if (value.empty() && graph.metadata.count(key) > 0) value = graph.metadata.at(key);
  return value;
}

absl::StatusOr<std::vector<float>> ParseFloats(const std::string& text, const char* what) {
  std::vector<float> values;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    float v;
    if (!absl::SimpleAtof(part, &v)) {
      return absl::InvalidArgumentError(absl::StrCat("bad ", what, " '", text, "'"));
    }
    values.push_back(v);
  }
  return values;
}

absl::StatusOr<hapi::v1::InputSpec> InputSpecFor(const ImportedGraph& graph) {
  hapi::v1::InputSpec spec;
  auto pick = [](int32_t flag, int64_t graph_value) {
    return flag > 0 ? flag : static_cast<int32_t>(graph_value);
  };
  spec.set_channels(pick(absl::GetFlag(FLAGS_channels), graph.input_shape[0]));
  spec.set_height(pick(absl::GetFlag(FLAGS_height), graph.input_shape[1]));
  spec.set_width(pick(absl::GetFlag(FLAGS_width), graph.input_shape[2]));
  const std::string mean = FlagOrMetadata(FLAGS_mean, graph, "hapi.mean");
  const std::string std = FlagOrMetadata(FLAGS_std, graph, "hapi.std");
  HAPI_ASSIGN_OR_RETURN(std::vector<float> means, ParseFloats(mean.empty() ? "0" : mean, "mean"));
  HAPI_ASSIGN_OR_RETURN(std::vector<float> stds, ParseFloats(std.empty() ? "1" : std, "std"));
  *spec.mutable_mean() = {means.begin(), means.end()};
  *spec.mutable_std() = {stds.begin(), stds.end()};
  const std::string resize = FlagOrMetadata(FLAGS_resize, graph, "hapi.resize");
  if (resize == "center_crop") {
    spec.set_resize(hapi::v1::InputSpec::RESIZE_CENTER_CROP);
  } else if (!resize.empty() && resize != "resize") {
    return absl::InvalidArgumentError(
        absl::StrCat("--resize must be resize or center_crop, not '", resize, "'"));
  }
  const auto layout = graph.metadata.find("hapi.layout");
  spec.set_layout(layout == graph.metadata.end() ? hapi::kInputLayoutNchw : layout->second);
  HAPI_RETURN_IF_ERROR(hapi::ValidateInputSpec(spec));
  return spec;
}

absl::StatusOr<std::vector<hapi::CutPoint>> CutPointsFor(const ImportedGraph& graph) {
  hapi::CutPointOptions options;
  const std::string exits = absl::GetFlag(FLAGS_exits);
  if (exits != "auto") options.exits = absl::StrSplit(exits, ',', absl::SkipWhitespace());
  options.min_spacing_macs = absl::GetFlag(FLAGS_min_exit_spacing_macs);
  return hapi::SelectCutPoints(graph, options);
}

// Runs the imported model once on a zero batch: an op the graph uses in a way
// the inference path cannot run fails here, not in the server.
absl::Status TryRun(const ImportedGraph& graph, const hapi::v1::ModelManifest& manifest) {
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<hapi::ImportedModel> model,
                        hapi::ImportedModel::Create(graph, manifest));
  std::vector<float> pixels(2 * model->input_size(), 0.0f), probabilities;
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<hapi::Activations> x, model->Input(pixels.data(), 2));
  for (int s = 0; s < model->num_stages(); ++s) HAPI_RETURN_IF_ERROR(model->RunStage(s, *x));
  return model->RunHead(model->final_exit(), *x, &probabilities);
}

absl::Status Import() {
  const std::string path = absl::GetFlag(FLAGS_onnx);
  std::string out = absl::GetFlag(FLAGS_out);
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  if (path.empty() || out.empty()) return absl::InvalidArgumentError("--onnx and --out required");
  hapi::ImportedModelInfo info;
  info.name = std::filesystem::path(out).filename().string();
  HAPI_RETURN_IF_ERROR(hapi::ValidateName(info.name, "model name"));
  HAPI_ASSIGN_OR_RETURN(std::string bytes, hapi::ReadFile(path));
  HAPI_ASSIGN_OR_RETURN(ImportedGraph graph, hapi::ImportOnnx(bytes, path));
  LOG(INFO) << path << ": graph '" << graph.name << "', " << graph.nodes.size()
            << " nodes after lowering, " << graph.total_macs() << " MACs, "
            << graph.cut_points.size() << " cut points";
  HAPI_ASSIGN_OR_RETURN(std::vector<hapi::CutPoint> cuts, CutPointsFor(graph));
  HAPI_ASSIGN_OR_RETURN(info.input, InputSpecFor(graph));
  const std::string names = FlagOrMetadata(FLAGS_class_names, graph, "hapi.class_names");
  if (!names.empty()) info.class_names = absl::StrSplit(names, ',');
  info.dataset = FlagOrMetadata(FLAGS_dataset, graph, "hapi.dataset");
  HAPI_ASSIGN_OR_RETURN(hapi::v1::ModelManifest manifest,
                        hapi::MakeImportedManifest(graph, cuts, info));
  for (const auto& s : manifest.stages()) {
    LOG(INFO) << "stage " << s.index() << " -> " << s.name() << " "
              << hapi::ShapeString(s.output().channels(), s.output().height(), s.output().width())
              << ", " << s.macs() << " MACs";
  }
  HAPI_RETURN_IF_ERROR(TryRun(graph, manifest));
  HAPI_RETURN_IF_ERROR(hapi::SaveImportedModel(out, bytes, manifest));
  LOG(INFO) << "wrote " << out << " (" << manifest.stages_size() << " stages, "
            << manifest.exits_size() << " candidate exits)";
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Imports a trained ONNX image classifier into a model directory: stages cut at the "
      "graph's cut points, a candidate exit after each, input spec and class names.");
  absl::ParseCommandLine(argc, argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  if (absl::Status st = Import(); !st.ok()) {
    std::fprintf(stderr, "hapi-import: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
