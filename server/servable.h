// A loaded variant, ready to serve: the model, its executor for the chosen
// design, the device's latency model (for deadlines), and its metrics.
// Immutable after Load; shared by in-flight requests, so a swap never
// disturbs them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/executor.h"
#include "core/latency_model.h"
#include "core/model.h"
#include "hapi/v1/optimizer.pb.h"

namespace hapi {

class Servable;
class VariantMetrics;
class ServerMetrics;

// Where variants come from and how their models are prepared.
struct ServableOptions {
  std::string repository = "repository";
  ModelLoader load_model;  // required: the model implementation the process links
  ModelOptions model;      // passed to load_model, with `int8` set per variant
  // Serve every variant in this precision instead of the one it was planned
  // for (VariantManifest.precision): a benchmark's switch.
  std::optional<v1::Precision> precision;
  // Runs on a loaded servable before it is swapped in, e.g. to warm it up on
  // the threads that will execute it. An error fails the load.
  std::function<absl::Status(const Servable&)> prepare;
  // The variant's model without early exits (a baseline to measure a variant
  // against); its id gets the suffix ".full".
  bool full_network = false;
};

class Servable {
 public:
  // Reads repository/variants/<id>/variant.pbtxt, the model it names and the
  // device profile; NOT_FOUND for an unknown variant, INVALID_ARGUMENT or
  // DATA_LOSS (naming the file) for a broken one.
  static absl::StatusOr<std::shared_ptr<const Servable>> Load(const ServableOptions& options,
                                                              const std::string& variant_id,
                                                              ServerMetrics* metrics);
  ~Servable();

  const v1::VariantManifest& variant() const { return variant_; }
  // What the model runs in: the variant's precision unless overridden.
  v1::Precision precision() const { return precision_; }
  const v1::ModelManifest& model() const { return executor_->model().manifest(); }
  v1::TensorShape input_shape() const { return executor_->model().input_shape(); }
  const EarlyExitExecutor& executor() const { return *executor_; }
  VariantMetrics* metrics() const { return metrics_.get(); }
  const std::string& ClassName(int label) const;
  absl::Time loaded_at() const { return loaded_at_; }
  // Unique within the process (a new servable never reuses an old one's).
  uint64_t serial() const { return serial_; }

  // Runs every stage and head of the design once on the calling thread, at
  // batch 1 (and at `batch_size` too when it is larger), unless this thread
  // has done so already for this servable: kernels are created, caches and
  // per-thread allocator arenas filled, before a request pays for them.
  // Load does it on the loading thread.
  absl::Status WarmUpThisThread(int batch_size = 1) const;
  // Whether WarmUpThisThread has succeeded on the calling thread.
  bool WarmOnThisThread() const;
  int num_depths() const { return static_cast<int>(variant_.enabled_exits_size()) + 1; }
  int ExitAtDepth(int depth) const;  // 1-based depth -> model exit

  // Predicted seconds, at batch 1 on the variant's device, from having
  // evaluated the exit at `from_depth` (0 = nothing yet) to having evaluated
  // the exit at `to_depth`.
  double SecondsBetweenDepths(int from_depth, int to_depth) const;

 private:
  Servable() = default;

  v1::VariantManifest variant_;
  v1::Precision precision_ = v1::FP32;
  std::unique_ptr<EarlyExitExecutor> executor_;
  std::unique_ptr<LatencyModel> latency_;
  std::shared_ptr<VariantMetrics> metrics_;
  absl::Time loaded_at_;
  uint64_t serial_ = 0;
};

// Holds the servable being served. Loading happens beside the current one;
// the swap is one pointer exchange, and requests keep the servable they
// started with, so in-flight work finishes on the old variant.
class ServableManager {
 public:
  ServableManager(ServableOptions options, ServerMetrics* metrics)
      : options_(std::move(options)), metrics_(metrics) {}

  // Loads `variant_id` and swaps it in. On error the current one keeps
  // serving and the status says why.
  absl::StatusOr<std::shared_ptr<const Servable>> Load(const std::string& variant_id);
  std::shared_ptr<const Servable> current() const;
  int64_t swaps() const;
  const std::string& repository() const { return options_.repository; }

 private:
  const ServableOptions options_;
  ServerMetrics* const metrics_;
  absl::Mutex load_mu_;  // one load at a time
  mutable absl::Mutex mu_;
  std::shared_ptr<const Servable> current_ ABSL_GUARDED_BY(mu_);
  int64_t swaps_ ABSL_GUARDED_BY(mu_) = 0;
};

// The newest variant (by created_at) built for `device` (any device when
// empty; callers serving one model always name one), of `model` when it is
// not empty, or NOT_FOUND.
absl::StatusOr<std::string> NewestVariantForDevice(const std::string& repository,
                                                   const std::string& device,
                                                   const std::string& model = "");
// The models that have a variant built for `device` (any when empty),
// sorted; NOT_FOUND when none has.
absl::StatusOr<std::vector<std::string>> ModelsWithVariantsForDevice(const std::string& repository,
                                                                     const std::string& device);
// The model a variant's manifest names; NOT_FOUND for an unknown variant.
absl::StatusOr<std::string> ModelOfVariant(const std::string& repository,
                                           const std::string& variant_id);

}  // namespace hapi
