#include "server/servable.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/device_profile.h"
#include "core/files.h"
#include "core/status_macros.h"
#include "server/metrics.h"

namespace hapi {

Servable::~Servable() = default;

absl::StatusOr<std::shared_ptr<const Servable>> Servable::Load(const std::string& repository,
                                                               const std::string& variant_id,
                                                               const ExecutorOptions& options,
                                                               ServerMetrics* metrics,
                                                               bool full_network) {
  HAPI_RETURN_IF_ERROR(ValidateName(variant_id, "variant id"));
  std::shared_ptr<Servable> s(new Servable());
  const std::string path = absl::StrCat(repository, "/variants/", variant_id, "/variant.pbtxt");
  absl::Status st = ReadTextProto(path, &s->variant_);
  if (absl::IsNotFound(st)) return absl::NotFoundError(absl::StrCat("unknown variant '", variant_id, "'"));
  HAPI_RETURN_IF_ERROR(st);
  const v1::VariantManifest& v = s->variant_;
  if (v.id() != variant_id) {
    return absl::InvalidArgumentError(absl::StrCat(path, " names variant '", v.id(),
                                                   "'; it must match its directory"));
  }
  HAPI_RETURN_IF_ERROR(ValidateName(v.model(), "model name"));
  HAPI_RETURN_IF_ERROR(ValidateName(v.device(), "device name"));
  if (full_network) {
    s->variant_.set_id(absl::StrCat(v.id(), ".full"));
    s->variant_.clear_enabled_exits();
    s->variant_.clear_thresholds();
    s->variant_.clear_predicted_exit_ratios();
    *s->variant_.mutable_predicted_latency() = v.full_network_latency();
    s->variant_.set_predicted_accuracy(v.final_exit_accuracy());
  }
  absl::StatusOr<std::unique_ptr<EarlyExitModel>> loaded_model =
      EarlyExitModel::Load(absl::StrCat(repository, "/models/", v.model()));
  if (!loaded_model.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("variant '", variant_id, "' needs model '",
                                                      v.model(), "': ",
                                                      loaded_model.status().message()));
  }
  std::unique_ptr<EarlyExitModel> model = *std::move(loaded_model);
  std::shared_ptr<EarlyExitModel> shared_model = std::move(model);
  Design design;
  design.exits.assign(v.enabled_exits().begin(), v.enabled_exits().end());
  design.thresholds.assign(v.thresholds().begin(), v.thresholds().end());
  HAPI_ASSIGN_OR_RETURN(design.policy, ParseExitPolicy(v.exit_policy().empty() ? "max_softmax" : v.exit_policy()));
  absl::StatusOr<std::unique_ptr<EarlyExitExecutor>> executor =
      EarlyExitExecutor::Create(shared_model, design, options);
  if (!executor.ok()) {
    return absl::Status(executor.status().code(),
                        absl::StrCat(path, ": ", executor.status().message()));
  }
  s->executor_ = *std::move(executor);
  v1::DeviceProfile profile;
  HAPI_RETURN_IF_ERROR(
      ReadTextProto(absl::StrCat(repository, "/devices/", v.device(), "/profile.pbtxt"), &profile));
  HAPI_ASSIGN_OR_RETURN(LatencyModel latency, LatencyModel::Create(profile, shared_model->manifest()));
  s->latency_ = std::make_unique<LatencyModel>(std::move(latency));
  s->loaded_at_ = absl::Now();
  if (metrics != nullptr) s->metrics_ = metrics->ForVariant(*s);
  return std::shared_ptr<const Servable>(std::move(s));
}

const std::string& Servable::ClassName(int label) const {
  static const std::string kUnknown = "unknown";
  const auto& names = model().class_names();
  return label >= 0 && label < names.size() ? names[label] : kUnknown;
}

int Servable::ExitAtDepth(int depth) const {
  return depth <= variant_.enabled_exits_size() ? variant_.enabled_exits(depth - 1)
                                                : model().exits_size() - 1;
}

double Servable::SecondsBetweenDepths(int from_depth, int to_depth) const {
  double t = from_depth == 0 ? latency_->OverheadSeconds() : 0.0;
  int stage = from_depth == 0 ? 0 : ExitAtDepth(from_depth) + 1;
  for (int d = from_depth + 1; d <= to_depth; ++d) {
    int exit = ExitAtDepth(d);
    for (; stage <= exit; ++stage) t += latency_->StageSeconds(stage);
    t += latency_->HeadSeconds(exit);
  }
  return t;
}

absl::StatusOr<std::string> NewestVariantForDevice(const std::string& repository,
                                                   const std::string& device) {
  std::string best_id, best_created;
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator(absl::StrCat(repository, "/variants"), ec)) {
    const std::string name = entry.path().filename().string();
    if (absl::StartsWith(name, ".tmp-")) continue;
    v1::VariantManifest v;
    if (!ReadTextProto(entry.path().string() + "/variant.pbtxt", &v).ok()) continue;
    if (v.device() != device) continue;
    if (best_id.empty() || v.created_at() > best_created ||
        (v.created_at() == best_created && name > best_id)) {
      best_id = name;
      best_created = v.created_at();
    }
  }
  if (best_id.empty()) {
    return absl::NotFoundError(absl::StrCat("no variant for device '", device, "' in ", repository));
  }
  return best_id;
}

}  // namespace hapi
