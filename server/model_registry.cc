#include "server/model_registry.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "core/status_macros.h"

namespace hapi {
namespace {

// Names in requests are the client's: quoted as printable ASCII, long ones cut.
std::string Quoted(absl::string_view name) {
  constexpr size_t kMax = 64;
  return absl::StrCat("'", absl::CHexEscape(name.substr(0, kMax)),
                      name.size() > kMax ? "...'" : "'");
}

}  // namespace

ServedModel::ServedModel(std::string name, BatcherOptions batcher, ServableOptions servables,
                         const LiveMonitorOptions& monitor, ServerMetrics* metrics)
    : name_(std::move(name)) {
  // The monitor needs the manager (to swap) and the batcher its hook: the
  // manager is made last, so both are wired through `this`.
  if (monitor.fraction > 0) {
    monitor_ = std::make_unique<LiveMonitor>(monitor, servables.repository, metrics);
    batcher.on_answered = [this](const InferenceRequest& r, const SampleResult& result) {
      monitor_->Observe(r.servable, r.pixels, result, [this] { return batcher_->queued() > 0; });
    };
  }
  batcher_ = std::make_unique<Batcher>(batcher);
  // Readiness means warm: a variant serves (initially, or after a swap) only
  // once every worker of its model has run it.
  servables.prepare = [this](const Servable& v) {
    HAPI_RETURN_IF_ERROR(batcher_->WarmUpWorkers(v));
    if (monitor_) monitor_->Prepare(v);
    return absl::OkStatus();
  };
  servables_ = std::make_unique<ServableManager>(std::move(servables), metrics);
  if (monitor_) monitor_->set_servables(servables_.get());
}

ServedModel::~ServedModel() {
  // The monitor's repair may be loading a variant through the batcher.
  if (monitor_) monitor_->Stop();
}

ModelRegistry::ModelRegistry(const std::vector<std::string>& names, const BatcherOptions& batcher,
                             const ServableOptions& servables, const LiveMonitorOptions& monitor,
                             ServerMetrics* metrics)
    : repository_(servables.repository), named_(!names.empty()) {
  if (!named_) {
    models_.push_back(std::make_unique<ServedModel>("", batcher, servables, monitor, metrics));
  }
  for (const std::string& name : names) {
    models_.push_back(std::make_unique<ServedModel>(name, batcher, servables, monitor, metrics));
  }
}

std::string ModelRegistry::Describe() const {
  std::vector<std::string> names;
  for (const auto& m : models_) {
    std::shared_ptr<const Servable> s = m->servables().current();
    const std::string name = named_ ? m->name() : (s ? s->variant().model() : "");
    if (!name.empty()) names.push_back(absl::StrCat("'", name, "'"));
  }
  return names.empty() ? "none yet" : absl::StrJoin(names, ", ");
}

absl::StatusOr<ServedModel*> ModelRegistry::Find(absl::string_view name) const {
  if (!name.empty()) return FindExact(name);
  if (models_.size() == 1) return models_.front().get();
  return absl::InvalidArgumentError(
      absl::StrCat("name a model: this server serves models ", Describe()));
}

absl::StatusOr<ServedModel*> ModelRegistry::FindExact(absl::string_view name) const {
  if (!named_) {
    std::shared_ptr<const Servable> s = models_.front()->servables().current();
    if (!s) return absl::UnavailableError("no variant is loaded yet");
    if (name == s->variant().model()) return models_.front().get();
  } else {
    for (const auto& m : models_) {
      if (m->name() == name) return m.get();
    }
  }
  return absl::NotFoundError(absl::StrCat("unknown model ", Quoted(name),
                                          "; this server serves model",
                                          models_.size() > 1 ? "s " : " ", Describe()));
}

absl::StatusOr<ServedModel*> ModelRegistry::ForVariant(const std::string& variant_id,
                                                       absl::string_view model) const {
  absl::StatusOr<std::string> of_variant = ModelOfVariant(repository_, variant_id);
  if (!of_variant.ok()) {  // what is wrong inside the repository, not where it is
    return absl::Status(
        of_variant.status().code(),
        absl::StrReplaceAll(of_variant.status().message(), {{absl::StrCat(repository_, "/"), ""}}));
  }
  if (!model.empty() && model != *of_variant) {
    return absl::InvalidArgumentError(absl::StrCat("variant '", variant_id, "' is of model '",
                                                   *of_variant, "', not ", Quoted(model)));
  }
  if (!named_) return models_.front().get();
  return FindExact(*of_variant);
}

bool ModelRegistry::AllLoaded() const {
  for (const auto& m : models_) {
    if (!m->servables().current()) return false;
  }
  return true;
}

}  // namespace hapi
