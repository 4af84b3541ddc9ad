// Builds a variant: the search for one (model, device, SLA), the Pareto front
// (CSV + gnuplot SVG), and the variant directory in the repository, written
// atomically. No gRPC here; the service and tools call it.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/design_search.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/sla.h"
#include "hapi/v1/optimizer.pb.h"

namespace hapi {

absl::StatusOr<Sla> SlaFromProto(const v1::Sla& proto);
v1::PredictedLatency LatencyToProto(const LatencyPrediction& p);

struct VariantBuilderOptions {
  std::string repository = "repository";
  int threshold_grid = 64;
  std::string gnuplot = "gnuplot";  // empty: no plot
};

class VariantBuilder {
 public:
  explicit VariantBuilder(VariantBuilderOptions options) : options_(std::move(options)) {}

  // Fast checks run before a job is queued, so a bad request fails the RPC
  // itself: INVALID_ARGUMENT for names/SLA/algorithm/policy, NOT_FOUND for an
  // unknown model, INVALID_ARGUMENT for a profile of another model.
  absl::Status Validate(const v1::CreateVariantRequest& request,
                        const v1::DeviceProfile& profile);

  using Progress = std::function<bool(const std::string& phase, double percent, int64_t evaluated)>;

  // Runs the search and writes repository/variants/<variant_id>/. Returns
  // FAILED_PRECONDITION (saying what is achievable) when no design meets the
  // SLA and CANCELLED when `progress` returns false.
  absl::StatusOr<v1::VariantManifest> Build(const v1::CreateVariantRequest& request,
                                            const v1::DeviceProfile& profile,
                                            const std::string& variant_id,
                                            const std::string& job_id, const Progress& progress);

  std::string ModelDir(const std::string& model) const;
  std::string VariantDir(const std::string& id) const;
  std::string DeviceDir(const std::string& device) const;
  const VariantBuilderOptions& options() const { return options_; }

 private:
  absl::StatusOr<std::shared_ptr<const ModelMetadata>> Model(const std::string& name);

  const VariantBuilderOptions options_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<const ModelMetadata>> models_ ABSL_GUARDED_BY(mu_);
};

// Writes `front` to CSV and, when gnuplot is available, an SVG plot with the
// chosen design marked, into `dir`. Returns whether the plot was made.
bool WriteParetoFront(const std::string& dir, const std::vector<LatencyPrediction>& front,
                      const std::vector<Design>& designs, const LatencyPrediction& chosen,
                      LatencyStatistic statistic, const std::string& gnuplot,
                      const std::string& title);

}  // namespace hapi
