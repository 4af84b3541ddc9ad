#include "model/torch_model.h"

#include <stdexcept>

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "core/model_metadata.h"
#include "core/status_macros.h"
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
  TorchModel(v1::ModelManifest manifest, std::unique_ptr<InferenceNetwork> network)
      : manifest_(std::move(manifest)), network_(std::move(network)) {}

  // input_shape(): the manifest's input spec, which InferenceNetwork eats.
  const v1::ModelManifest& manifest() const override { return manifest_; }

  // LibTorch throws; the seam returns a Status naming the model and the step.
  // The message is built only on failure: these run on every request.
  absl::StatusOr<std::unique_ptr<Activations>> Input(const float* pixels, int n) const override {
    try {
      torch::InferenceMode guard;
      return std::make_unique<TorchActivations>(network_->Input(pixels, n));
    } catch (const c10::Error& e) {
      return Failed("preparing the input", e);
    }
  }

  absl::Status RunStage(int stage, Activations& x) const override {
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
  absl::Status Failed(absl::string_view what, const c10::Error& e) const {
    return absl::InternalError(
        absl::StrCat("model ", manifest_.name(), ": ", what, ": ", e.what_without_backtrace()));
  }

  const v1::ModelManifest manifest_;
  const std::unique_ptr<InferenceNetwork> network_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<const Model>> MakeTorchModel(EarlyExitModel& model,
                                                            const ModelOptions& options) {
  HAPI_ASSIGN_OR_RETURN(const v1::InputSpec input, EffectiveInputSpec(model.manifest()));
  try {
    InferenceOptions io;
    io.fuse_batch_norm = options.fuse_batch_norm;
    io.channels_last = options.channels_last;
    io.onednn = options.onednn;
    return std::make_shared<TorchModel>(model.manifest(),
                                        std::make_unique<InferenceNetwork>(model, input, io));
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
  return MakeTorchModel(*model, options);
}

void SetIntraOpThreads(int threads) {
  if (threads > 0) torch::set_num_threads(threads);
  SetDirectThreads(threads);
}
int IntraOpThreads() { return torch::get_num_threads(); }

}  // namespace hapi
