// The models one server holds side by side. Each has its own ServableManager
// (its variant and hot swap) and its own Batcher (queue and workers), so load
// on one model never queues behind another's and swapping one never touches
// the other. Two modes:
//  - unnamed (no models configured): one slot that serves whichever variant
//    is loaded, of any model, as a single-model server always has;
//  - named (InferenceServerOptions::models or ::variants): one slot per
//    configured model, serving variants of that model only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/batcher.h"
#include "server/live_monitor.h"
#include "server/metrics.h"
#include "server/servable.h"

namespace hapi {

class ServedModel {
 public:
  // `monitor.fraction` > 0: with a live monitor (server/live_monitor.h).
  ServedModel(std::string name, BatcherOptions batcher, ServableOptions servables,
              const LiveMonitorOptions& monitor, ServerMetrics* metrics);
  ~ServedModel();
  // Empty for the unnamed slot (its model is the loaded variant's).
  const std::string& name() const { return name_; }
  ServableManager& servables() const { return *servables_; }
  Batcher& batcher() const { return *batcher_; }
  LiveMonitor* monitor() const { return monitor_.get(); }  // null: off

 private:
  const std::string name_;
  // Declared first, destroyed last: the batcher's workers are joined before
  // the servables they run go.
  std::unique_ptr<ServableManager> servables_;
  std::unique_ptr<LiveMonitor> monitor_;  // stopped before the batcher goes
  std::unique_ptr<Batcher> batcher_;
};

class ModelRegistry {
 public:
  // `names` empty: the unnamed slot. Each slot's servables are warmed up on
  // its own batcher's workers before they serve (ServableOptions::prepare).
  ModelRegistry(const std::vector<std::string>& names, const BatcherOptions& batcher,
                const ServableOptions& servables, const LiveMonitorOptions& monitor,
                ServerMetrics* metrics);

  // The model a hapi.v1 request names. Empty: the only model served, or
  // INVALID_ARGUMENT naming the models when there are several.
  absl::StatusOr<ServedModel*> Find(absl::string_view name) const;
  // The model called `name` (no default): NOT_FOUND naming the models served;
  // in the unnamed mode UNAVAILABLE while nothing is loaded.
  absl::StatusOr<ServedModel*> FindExact(absl::string_view name) const;
  // Where `variant_id` is served: the slot of the model its manifest names.
  // `model`, when not empty, must be that model (INVALID_ARGUMENT).
  absl::StatusOr<ServedModel*> ForVariant(const std::string& variant_id,
                                          absl::string_view model) const;
  // Every slot has a variant loaded.
  bool AllLoaded() const;
  bool named() const { return named_; }
  const std::vector<std::unique_ptr<ServedModel>>& models() const { return models_; }
  // The models served now, for messages: "'a', 'b'".
  std::string Describe() const;

 private:
  const std::string repository_;
  const bool named_;
  std::vector<std::unique_ptr<ServedModel>> models_;  // constant after construction
};

}  // namespace hapi
