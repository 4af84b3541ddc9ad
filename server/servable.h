// A loaded variant, ready to serve: the model, its executor for the chosen
// design, the device's latency model (for deadlines), and its metrics.
// Immutable after Load; shared by in-flight requests, so a swap never
// disturbs them.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/latency_model.h"
#include "hapi/v1/optimizer.pb.h"
#include "model/executor.h"

namespace hapi {

class VariantMetrics;
class ServerMetrics;

class Servable {
 public:
  // Reads repository/variants/<id>/variant.pbtxt, the model it names and the
  // device profile; NOT_FOUND for an unknown variant, INVALID_ARGUMENT or
  // DATA_LOSS (naming the file) for a broken one.
  // With `full_network`, the variant's model runs without early exits (the
  // baseline to measure a variant against); its id gets the suffix ".full".
  static absl::StatusOr<std::shared_ptr<const Servable>> Load(const std::string& repository,
                                                              const std::string& variant_id,
                                                              const ExecutorOptions& options,
                                                              ServerMetrics* metrics,
                                                              bool full_network = false);
  ~Servable();

  const v1::VariantManifest& variant() const { return variant_; }
  const v1::ModelManifest& model() const { return executor_->model().manifest(); }
  const EarlyExitExecutor& executor() const { return *executor_; }
  VariantMetrics* metrics() const { return metrics_.get(); }
  const std::string& ClassName(int label) const;
  absl::Time loaded_at() const { return loaded_at_; }
  int num_depths() const { return static_cast<int>(variant_.enabled_exits_size()) + 1; }
  int ExitAtDepth(int depth) const;  // 1-based depth -> model exit

  // Predicted seconds, at batch 1 on the variant's device, from having
  // evaluated the exit at `from_depth` (0 = nothing yet) to having evaluated
  // the exit at `to_depth`.
  double SecondsBetweenDepths(int from_depth, int to_depth) const;

 private:
  Servable() = default;

  v1::VariantManifest variant_;
  std::unique_ptr<EarlyExitExecutor> executor_;
  std::unique_ptr<LatencyModel> latency_;
  std::shared_ptr<VariantMetrics> metrics_;
  absl::Time loaded_at_;
};

// The newest variant (by created_at) built for `device`, or NOT_FOUND.
absl::StatusOr<std::string> NewestVariantForDevice(const std::string& repository,
                                                   const std::string& device);

}  // namespace hapi
