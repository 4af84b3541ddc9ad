#include "model/torch_model.h"

#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "core/model_metadata.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "model/direct_program.h"
#include "model/imported_model.h"
#include "model/inference_network.h"

namespace hapi {
namespace {

class TorchActivations : public Activations {
 public:
  explicit TorchActivations(torch::Tensor x) : x(std::move(x)) {}
  int batch_size() const override { return static_cast<int>(x.size(0)); }
  void KeepRows(const std::vector<int>& rows) override {
    x = x.index_select(0, torch::tensor(std::vector<int64_t>(rows.begin(), rows.end())));
  }
  torch::Tensor x;
};

class TorchModel : public Model {
 public:
  // With `direct`, every call runs the direct oneDNN path; `network` stays
  // for what only LibTorch computes (training features, tests).
  TorchModel(v1::ModelManifest manifest, std::unique_ptr<InferenceNetwork> network,
             std::unique_ptr<DirectProgram> direct)
      : manifest_(std::move(manifest)), network_(std::move(network)), direct_(std::move(direct)) {}

  // input_shape(): the manifest's input spec, which InferenceNetwork eats.
  const v1::ModelManifest& manifest() const override { return manifest_; }

  // LibTorch throws; the seam returns a Status naming the model and the step.
  // The message is built only on failure: these run on every request.
  absl::StatusOr<std::unique_ptr<Activations>> Input(const float* pixels, int n) const override {
    if (direct_) return direct_->Input(pixels, n);
    try {
      torch::InferenceMode guard;
      return std::make_unique<TorchActivations>(network_->Input(pixels, n));
    } catch (const c10::Error& e) {
      return Failed("preparing the input", e);
    }
  }

  absl::Status RunStage(int stage, Activations& x) const override {
    if (direct_) return Named(direct_->RunStage(stage, x));
    try {
      torch::InferenceMode guard;
      torch::Tensor& t = static_cast<TorchActivations&>(x).x;
      t = network_->Stage(stage, t);
      return absl::OkStatus();
    } catch (const c10::Error& e) {
      return Failed(absl::StrCat("running stage ", stage), e);
    }
  }

  absl::Status RunHead(int exit, const Activations& x,
                       std::vector<float>* probabilities) const override {
    if (direct_) {
      if (exit < 0 || exit >= num_exits()) {
        return absl::InvalidArgumentError(
            absl::StrCat("model ", manifest_.name(), " has no exit ", exit));
      }
      HAPI_RETURN_IF_ERROR(Named(exit == final_exit()
                                     ? direct_->FinalLogits(x, probabilities)
                                     : direct_->HeadLogits(exit, x, probabilities)));
      SoftmaxRows(probabilities, num_classes());
      return absl::OkStatus();
    }
    try {
      torch::InferenceMode guard;
      const torch::Tensor& t = static_cast<const TorchActivations&>(x).x;
      torch::Tensor p = torch::softmax(network_->ExitLogits(exit, t), 1).contiguous();
      probabilities->assign(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
      return absl::OkStatus();
    } catch (const c10::Error& e) {
      return Failed(absl::StrCat("running exit ", exit), e);
    }
  }

 private:
  absl::Status Named(absl::Status status) const {
    if (status.ok()) return status;
    return absl::Status(status.code(),
                        absl::StrCat("model ", manifest_.name(), ": ", status.message()));
  }

  absl::Status Failed(absl::string_view what, const c10::Error& e) const {
    return absl::InternalError(
        absl::StrCat("model ", manifest_.name(), ": ", what, ": ", e.what_without_backtrace()));
  }

  const v1::ModelManifest manifest_;
  const std::unique_ptr<InferenceNetwork> network_;
  const std::unique_ptr<DirectProgram> direct_;  // null: LibTorch runs every call
};

// The direct path for `network` (ModelOptions::direct), or null with a
// warning when it cannot be lowered.
absl::StatusOr<std::unique_ptr<DirectProgram>> MakeDirect(const v1::ModelManifest& manifest,
                                                          const v1::InputSpec& input,
                                                          const InferenceNetwork& network,
                                                          const ModelOptions& options) {
  absl::StatusOr<LoweredNetwork> lowered = network.Lower();
  absl::StatusOr<std::unique_ptr<DirectProgram>> direct =
      lowered.ok()
          ? DirectProgram::Create(lowered->graph, SplitGraph(lowered->graph, lowered->cuts),
                                  ChannelMeans(input), ChannelStds(input))
          : lowered.status();
  for (size_t e = 0; direct.ok() && e < lowered->heads.size(); ++e) {
    absl::Status st =
        (*direct)->AttachHead(static_cast<int>(e), lowered->head_stage[e], lowered->heads[e]);
    if (!st.ok()) direct = st;
  }
  const bool int8 = options.int8_calibration != nullptr || options.int8_ranges != nullptr;
  if (!direct.ok()) {
    if (int8) return direct.status();
    LOG(WARNING) << "model " << manifest.name()
                 << " runs on LibTorch: " << direct.status().message();
    return nullptr;
  }
  if (options.int8_ranges != nullptr) return (*direct)->Int8(*options.int8_ranges);
  if (options.int8_calibration != nullptr) {
    const int n = static_cast<int>(options.int8_calibration->size() / InputSize(input));
    return (*direct)->Int8(options.int8_calibration->data(), n);
  }
  return *std::move(direct);
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Model>> MakeTorchModel(EarlyExitModel& model,
                                                            const ModelOptions& options) {
  HAPI_ASSIGN_OR_RETURN(const v1::InputSpec input, EffectiveInputSpec(model.manifest()));
  try {
    InferenceOptions io;
    io.fuse_batch_norm = options.fuse_batch_norm;
    io.channels_last = options.channels_last;
    io.onednn = options.onednn;
    auto network = std::make_unique<InferenceNetwork>(model, input, io);
    std::unique_ptr<DirectProgram> direct;
    if (options.direct || options.int8_calibration != nullptr || options.int8_ranges != nullptr) {
      HAPI_ASSIGN_OR_RETURN(direct, MakeDirect(model.manifest(), input, *network, options));
    }
    return std::make_shared<TorchModel>(model.manifest(), std::move(network), std::move(direct));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("preparing model ", model.manifest().name(),
                                            " for inference: ", e.what_without_backtrace()));
  } catch (const std::out_of_range& e) {
    return absl::DataLossError(
        absl::StrCat("model ", model.manifest().name(), " lacks a tensor its manifest needs"));
  }
}

absl::StatusOr<std::shared_ptr<const Model>> LoadTorchModel(const std::string& model_dir,
                                                            const ModelOptions& options) {
  v1::ModelManifest manifest;
  if (ReadTextProto(absl::StrCat(model_dir, "/", kManifestFile), &manifest).ok() &&
      IsImportedManifest(manifest)) {
    return LoadImportedModel(model_dir, options);
  }
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<EarlyExitModel> model, EarlyExitModel::Load(model_dir));
  if (!options.int8 || options.int8_ranges != nullptr) return MakeTorchModel(*model, options);
  HAPI_ASSIGN_OR_RETURN(auto ranges, ReadInt8Ranges(model_dir, model->manifest().name()));
  ModelOptions int8 = options;
  int8.int8_ranges = std::make_shared<const std::map<std::string, float>>(std::move(ranges));
  return MakeTorchModel(*model, int8);
}

namespace {

v1::Int8Ranges MakeInt8Ranges(const std::string& model, int n,
                              const std::map<std::string, float>& max) {
  v1::Int8Ranges ranges;
  ranges.set_model(model);
  ranges.set_split("train");
  ranges.set_samples(n);
  ranges.mutable_max_abs()->insert(max.begin(), max.end());
  return ranges;
}

// An imported graph's ranges: its direct path, without heads (their inputs
// are stage outputs, whose ranges are the graph's).
absl::StatusOr<v1::Int8Ranges> CalibrateImportedInt8Ranges(const std::string& model_dir,
                                                           const float* pixels, int n) {
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<ImportedModel> model,
                        OpenImportedModel(model_dir, ModelOptions{}, /*attach_heads=*/false));
  if (model->direct_program() == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", model->manifest().name(),
                     ": int8 runs on the direct oneDNN path, which cannot run this graph"));
  }
  HAPI_ASSIGN_OR_RETURN(auto max, model->direct_program()->Ranges(pixels, n));
  return MakeInt8Ranges(model->manifest().name(), n, max);
}

}  // namespace

absl::StatusOr<v1::Int8Ranges> CalibrateInt8Ranges(const std::string& model_dir,
                                                   const float* pixels, int n) {
  v1::ModelManifest manifest;
  if (ReadTextProto(absl::StrCat(model_dir, "/", kManifestFile), &manifest).ok() &&
      IsImportedManifest(manifest)) {
    return CalibrateImportedInt8Ranges(model_dir, pixels, n);
  }
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<EarlyExitModel> model, EarlyExitModel::Load(model_dir));
  HAPI_ASSIGN_OR_RETURN(const v1::InputSpec input, EffectiveInputSpec(model->manifest()));
  try {
    const InferenceNetwork network(*model, input, InferenceOptions{});
    HAPI_ASSIGN_OR_RETURN(const LoweredNetwork lowered, network.Lower());
    HAPI_ASSIGN_OR_RETURN(
        std::unique_ptr<DirectProgram> program,
        DirectProgram::Create(lowered.graph, SplitGraph(lowered.graph, lowered.cuts),
                              ChannelMeans(input), ChannelStds(input)));
    HAPI_ASSIGN_OR_RETURN(auto max, program->Ranges(pixels, n));
    return MakeInt8Ranges(model->manifest().name(), n, max);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("calibrating model ", model->manifest().name(), ": ",
                                            e.what_without_backtrace()));
  }
}

void SetIntraOpThreads(int threads) {
  if (threads > 0) torch::set_num_threads(threads);
  SetDirectThreads(threads);
}
int IntraOpThreads() { return torch::get_num_threads(); }

}  // namespace hapi
