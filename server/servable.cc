#include "server/servable.h"

#include <atomic>
#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/device_profile.h"
#include "core/files.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "server/metrics.h"

namespace hapi {

Servable::~Servable() = default;

namespace {

std::atomic<uint64_t> next_serial{1};
// The servable this thread last warmed up (0: none). One is enough: a thread
// executes the current servable, and a swap retires the previous one.
thread_local uint64_t warm_serial = 0;

// The variant manifest at its place in the repository, checked against it.
absl::StatusOr<v1::VariantManifest> ReadVariant(const RepositoryLayout& layout,
                                                const std::string& variant_id) {
  HAPI_RETURN_IF_ERROR(ValidateName(variant_id, "variant id"));
  const std::string path = layout.VariantManifest(variant_id);
  v1::VariantManifest v;
  absl::Status st = ReadTextProto(path, &v);
  if (absl::IsNotFound(st)) {
    return absl::NotFoundError(absl::StrCat("unknown variant '", variant_id, "'"));
  }
  HAPI_RETURN_IF_ERROR(st);
  if (v.id() != variant_id) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " names variant '", v.id(), "'; it must match its directory"));
  }
  HAPI_RETURN_IF_ERROR(ValidateName(v.model(), "model name"));
  HAPI_RETURN_IF_ERROR(ValidateName(v.device(), "device name"));
  return v;
}

void StripToFullNetwork(v1::VariantManifest& v) {
  v.set_id(absl::StrCat(v.id(), ".full"));
  v.clear_enabled_exits();
  v.clear_thresholds();
  v.clear_predicted_exit_ratios();
  *v.mutable_predicted_latency() = v.full_network_latency();
  v.set_predicted_accuracy(v.final_exit_accuracy());
}

absl::StatusOr<Design> DesignOfVariant(const v1::VariantManifest& v) {
  Design design;
  design.exits.assign(v.enabled_exits().begin(), v.enabled_exits().end());
  design.thresholds.assign(v.thresholds().begin(), v.thresholds().end());
  HAPI_ASSIGN_OR_RETURN(design.policy,
                        ParseExitPolicy(v.exit_policy().empty() ? "max_softmax" : v.exit_policy()));
  return design;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const Servable>> Servable::Load(const ServableOptions& options,
                                                               const std::string& variant_id,
                                                               ServerMetrics* metrics) {
  const RepositoryLayout layout(options.repository);
  std::shared_ptr<Servable> s(new Servable());
  HAPI_ASSIGN_OR_RETURN(s->variant_, ReadVariant(layout, variant_id));
  const v1::VariantManifest& v = s->variant_;
  if (options.full_network) StripToFullNetwork(s->variant_);
  s->precision_ = options.precision.value_or(v.precision());
  ModelOptions model_options = options.model;
  model_options.int8 = s->precision_ == v1::INT8;
  absl::StatusOr<std::shared_ptr<const Model>> model =
      options.load_model(layout.ModelDir(v.model()), model_options);
  if (!model.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("variant '", variant_id, "' needs model '",
                                                      v.model(), "': ", model.status().message()));
  }
  HAPI_ASSIGN_OR_RETURN(Design design, DesignOfVariant(v));
  absl::StatusOr<std::unique_ptr<EarlyExitExecutor>> executor =
      EarlyExitExecutor::Create(*model, design);
  if (!executor.ok()) {
    return absl::Status(executor.status().code(), absl::StrCat(layout.VariantManifest(variant_id),
                                                               ": ", executor.status().message()));
  }
  s->executor_ = *std::move(executor);
  s->serial_ = next_serial.fetch_add(1);
  HAPI_RETURN_IF_ERROR(s->WarmUpThisThread());
  v1::DeviceProfile profile;
  HAPI_RETURN_IF_ERROR(ReadTextProto(layout.DeviceProfile(v.device()), &profile));
  // Deadlines follow the precision served; a device never profiled in it
  // (a forced --precision) falls back to its fp32 latencies.
  absl::StatusOr<LatencyModel> latency =
      LatencyModel::Create(profile, (*model)->manifest(), s->precision_);
  if (absl::IsFailedPrecondition(latency.status())) {
    LOG(WARNING) << "variant " << variant_id << ": " << latency.status().message()
                 << "; deadlines use its fp32 latencies";
    latency = LatencyModel::Create(profile, (*model)->manifest());
  }
  HAPI_RETURN_IF_ERROR(latency.status());
  s->latency_ = std::make_unique<LatencyModel>(*std::move(latency));
  s->loaded_at_ = absl::Now();
  if (metrics != nullptr) s->metrics_ = metrics->ForVariant(*s);
  return std::shared_ptr<const Servable>(std::move(s));
}

absl::Status Servable::WarmUpThisThread(int batch_size) const {
  if (WarmOnThisThread()) return absl::OkStatus();
  HAPI_RETURN_IF_ERROR(executor_->WarmUp(1));
  if (batch_size > 1) HAPI_RETURN_IF_ERROR(executor_->WarmUp(batch_size));
  warm_serial = serial_;
  return absl::OkStatus();
}

bool Servable::WarmOnThisThread() const { return warm_serial == serial_; }

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
  return latency_->SecondsBetween(variant_.enabled_exits(), from_depth, to_depth);
}

absl::StatusOr<std::shared_ptr<const Servable>> ServableManager::Load(
    const std::string& variant_id) {
  absl::MutexLock load_lock(&load_mu_);
  auto loaded = Servable::Load(options_, variant_id, metrics_);
  if (loaded.ok() && options_.prepare) {
    if (absl::Status st = options_.prepare(**loaded); !st.ok()) loaded = st;
  }
  if (!loaded.ok()) {
    LOG(WARNING) << "variant " << variant_id << " failed to load, still serving "
                 << (current() ? current()->variant().id() : std::string("nothing")) << ": "
                 << loaded.status();
    // Clients learn what is wrong inside the repository, not where the
    // server keeps it on disk.
    return absl::Status(loaded.status().code(),
                        absl::StrReplaceAll(loaded.status().message(),
                                            {{absl::StrCat(options_.repository, "/"), ""}}));
  }
  std::shared_ptr<const Servable> previous;
  {
    absl::MutexLock lock(&mu_);
    previous = current_;
    current_ = *loaded;
    ++swaps_;
  }
  if (previous && metrics_ && previous->variant().id() != (*loaded)->variant().id()) {
    metrics_->Retire(*previous);
  }
  LOG(INFO) << "serving variant " << variant_id << " (model " << (*loaded)->variant().model()
            << ", device " << (*loaded)->variant().device() << ")"
            << (previous ? absl::StrCat(", replacing ", previous->variant().id()) : "");
  return *loaded;
}

std::shared_ptr<const Servable> ServableManager::current() const {
  absl::MutexLock lock(&mu_);
  return current_;
}

int64_t ServableManager::swaps() const {
  absl::MutexLock lock(&mu_);
  return swaps_;
}

namespace {

// Calls `fn` with the id and manifest of every readable variant.
void ForEachVariant(const std::string& repository,
                    const std::function<void(const std::string&, const v1::VariantManifest&)>& fn) {
  std::error_code ec;
  for (const auto& entry :
       std::filesystem::directory_iterator(RepositoryLayout(repository).VariantsDir(), ec)) {
    const std::string name = entry.path().filename().string();
    if (IsStagingName(name)) continue;
    v1::VariantManifest v;
    if (!ReadTextProto(absl::StrCat(entry.path().string(), "/", kVariantFile), &v).ok()) continue;
    fn(name, v);
  }
}

}  // namespace

absl::StatusOr<std::string> NewestVariantForDevice(const std::string& repository,
                                                   const std::string& device,
                                                   const std::string& model) {
  std::string best_id, best_created;
  ForEachVariant(repository, [&](const std::string& name, const v1::VariantManifest& v) {
    if ((!device.empty() && v.device() != device) || (!model.empty() && v.model() != model)) {
      return;
    }
    if (best_id.empty() || v.created_at() > best_created ||
        (v.created_at() == best_created && name > best_id)) {
      best_id = name;
      best_created = v.created_at();
    }
  });
  if (best_id.empty()) {
    const std::string of_model = model.empty() ? "" : absl::StrCat(" of model '", model, "'");
    const std::string for_device = device.empty() ? "" : absl::StrCat(" for device '", device, "'");
    return absl::NotFoundError(
        absl::StrCat("no variant", for_device, of_model, " in ", repository));
  }
  return best_id;
}

absl::StatusOr<std::vector<std::string>> ModelsWithVariantsForDevice(const std::string& repository,
                                                                     const std::string& device) {
  std::set<std::string> models;
  ForEachVariant(repository, [&](const std::string&, const v1::VariantManifest& v) {
    if (device.empty() || v.device() == device) models.insert(v.model());
  });
  if (models.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no variant for device '", device, "' in ", repository));
  }
  return std::vector<std::string>(models.begin(), models.end());
}

absl::StatusOr<std::string> ModelOfVariant(const std::string& repository,
                                           const std::string& variant_id) {
  HAPI_ASSIGN_OR_RETURN(v1::VariantManifest v,
                        ReadVariant(RepositoryLayout(repository), variant_id));
  return v.model();
}

}  // namespace hapi
