// hapi-import: turns a trained ONNX image classifier into a model directory
// (docs/onnx-import.md): manifest.pbtxt (stages cut at the graph's cut
// points, candidate exits, input spec, class names) and a copy of the file.
// With --train_exits it also trains the exit heads with the backbone frozen
// and writes the calibration tables and report (model/imported_exits.h), so
// that the optimizer can plan variants for the model.
//
//   hapi-import --onnx=net.onnx --out=repository/models/my-net [--exits=auto]
//   hapi-import --onnx=net.onnx --out=repository/models/my-net --train_exits
//   hapi-import --out=repository/models/my-net --train_exits   # retrain heads
//
// Exit training lives here rather than in hapi-train: its flags describe the
// residual network it builds (stem, widths, backbone epochs), none of which
// applies to a graph someone else trained, while an imported model's
// lifecycle (import, then heads) is this tool's.
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
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "core/image_folder.h"
#include "core/input_spec.h"
#include "core/model_metadata.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "model/imported_exits.h"
#include "model/imported_model.h"
#include "model/labelled_images.h"
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
ABSL_FLAG(bool, train_exits, false,
          "Train the exit heads (backbone frozen), calibrate and write the report: after "
          "importing --onnx, or for the model already at --out when --onnx is not given");
ABSL_FLAG(std::string, data_dir, hapi::kDefaultFashionMnistDir,
          "Exit training data: Fashion-MNIST IDX .gz files (the default)");
ABSL_FLAG(std::string, image_folder, "",
          "Exit training data: an image folder instead (<dir>/<class>/*.png|jpg or "
          "<dir>/{train,val,test}/<class>/..., docs/datasets.md), decoded for the model");
ABSL_FLAG(bool, convert_images, true,
          "Convert data set images to the model's input (grey replicated into each channel, "
          "resized by its resize policy, as the server does); false: a shape mismatch is an "
          "error");
ABSL_FLAG(int32_t, exit_epochs, 8, "Exit-head epochs");
ABSL_FLAG(double, exit_learning_rate, 2e-3, "Exit-head peak learning rate (Adam)");
ABSL_FLAG(int32_t, exit_batch_size, 128, "Exit-head batch size");
ABSL_FLAG(int32_t, train_limit, 0, "Train the heads on the first N training samples (0: all)");
ABSL_FLAG(int32_t, calibration_limit, 0,
          "Calibrate on the first N validation and test samples (0: all)");
ABSL_FLAG(int32_t, threads, 0, "Intra-op threads while training (0: every core)");
ABSL_FLAG(uint64_t, seed, 7, "Seed for head initialisation and data order");
ABSL_FLAG(int64_t, feature_cache_mb, 4096, "Memory the cached training features may take");
ABSL_FLAG(bool, progress, true, "Show progress bars");

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

absl::Status Import(const std::string& path, const std::string& out) {
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

// The image folder when one is given, else Fashion-MNIST, in `spec`'s format.
absl::StatusOr<hapi::LabelledSplits> TrainingData(const hapi::v1::InputSpec& spec) {
  hapi::ImageConversion conversion;
  conversion.convert = absl::GetFlag(FLAGS_convert_images);
  return hapi::LoadLabelledSplits(absl::GetFlag(FLAGS_image_folder), absl::GetFlag(FLAGS_data_dir),
                                  hapi::kDefaultSplitSeed, spec, conversion,
                                  absl::GetFlag(FLAGS_progress));
}

absl::Status TrainExits(const std::string& model_dir) {
  hapi::v1::ModelManifest manifest;
  HAPI_RETURN_IF_ERROR(
      hapi::ReadTextProto(absl::StrCat(model_dir, "/", hapi::kManifestFile), &manifest));
  if (!hapi::IsImportedManifest(manifest)) {
    return absl::InvalidArgumentError(absl::StrCat(
        model_dir, " is not an imported model (its backbone is '", manifest.backbone_weights(),
        "'); the residual network's exits retrain with hapi-train --retrain_exits"));
  }
  HAPI_ASSIGN_OR_RETURN(const hapi::v1::InputSpec spec, hapi::EffectiveInputSpec(manifest));
  HAPI_ASSIGN_OR_RETURN(hapi::LabelledSplits data, TrainingData(spec));
  hapi::ImportedExitOptions options;
  options.epochs = absl::GetFlag(FLAGS_exit_epochs);
  options.learning_rate = absl::GetFlag(FLAGS_exit_learning_rate);
  options.batch_size = absl::GetFlag(FLAGS_exit_batch_size);
  options.train_limit = absl::GetFlag(FLAGS_train_limit);
  options.calibration_limit = absl::GetFlag(FLAGS_calibration_limit);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.seed = absl::GetFlag(FLAGS_seed);
  options.feature_cache_bytes = absl::GetFlag(FLAGS_feature_cache_mb) << 20;
  options.progress = absl::GetFlag(FLAGS_progress);
  HAPI_ASSIGN_OR_RETURN(hapi::ImportedExitsSummary summary,
                        hapi::TrainImportedExits(model_dir, data, options));
  LOG(INFO) << "exit heads of " << model_dir << ": features " << summary.feature_seconds << " s ("
            << summary.feature_cache_bytes / 1000000 << " MB cached), training "
            << summary.train_seconds << " s, calibration " << summary.calibration_seconds << " s";
  HAPI_ASSIGN_OR_RETURN(std::string report,
                        hapi::ReadFile(absl::StrCat(model_dir, "/", hapi::kReportFile)));
  std::printf("%s", report.c_str());
  return absl::OkStatus();
}

absl::Status Run() {
  const std::string path = absl::GetFlag(FLAGS_onnx);
  std::string out = absl::GetFlag(FLAGS_out);
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  const bool train_exits = absl::GetFlag(FLAGS_train_exits);
  if (out.empty() || (path.empty() && !train_exits)) {
    return absl::InvalidArgumentError("--out and --onnx (or --train_exits) required");
  }
  if (!path.empty()) HAPI_RETURN_IF_ERROR(Import(path, out));
  return train_exits ? TrainExits(out) : absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Imports a trained ONNX image classifier into a model directory: stages cut at the "
      "graph's cut points, a candidate exit after each, input spec and class names; with "
      "--train_exits, trains its exit heads (backbone frozen) and calibrates them.");
  absl::ParseCommandLine(argc, argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  if (absl::Status st = Run(); !st.ok()) {
    std::fprintf(stderr, "hapi-import: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
