// Builds variants: runs the design search for a VariantSpec on a device
// profile and publishes the variant manifest (and its Pareto front) in the
// repository. The optimizer service and tools call it.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/certify.h"
#include "core/design_search.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/sla.h"
#include "hapi/v1/optimizer.pb.h"
#include "optimizer/variant_spec.h"

namespace hapi {

v1::PredictedLatency LatencyToProto(const LatencyPrediction& p);

// The live calibration table a variant planned on live traffic keeps in its
// directory (VariantManifest.live_plan.table_file).
inline constexpr char kLiveCalibrationFile[] = "live-calibration.bin";

struct VariantBuilderOptions {
  std::string repository = "repository";
  int threshold_grid = 64;
  std::string gnuplot = "gnuplot";  // empty: no plot
  // Select on part of the validation split, certify on the rest
  // (certify_fraction 0: select on all of it, uncertified).
  CertifyOptions certify;
};

class VariantBuilder {
 public:
  explicit VariantBuilder(VariantBuilderOptions options)
      : options_(std::move(options)), layout_(options_.repository) {}

  // What must hold before a job is queued, so that a request that cannot
  // work fails the RPC itself: NOT_FOUND for an unknown model,
  // INVALID_ARGUMENT for a profile of another model or a live table whose
  // exits or classes are not the model's, FAILED_PRECONDITION for a
  // precision the request names that the model or the device has no tables
  // for.
  absl::Status CheckModelAndDevice(const VariantSpec& spec, const v1::DeviceProfile& profile);

  using Progress = std::function<bool(const std::string& phase, double percent, int64_t evaluated)>;

  // Runs the search and writes repository/variants/<spec.variant_id>/ (the
  // id must be set). With spec.live_table the search plans on it instead of
  // the validation split, an absolute accuracy floor read as a drop below the
  // full network's validation accuracy, and the table is published with the
  // variant. Returns FAILED_PRECONDITION (saying what is achievable)
  // when no design meets the SLA and CANCELLED when `progress` returns false.
  absl::StatusOr<v1::VariantManifest> Build(const VariantSpec& spec,
                                            const v1::DeviceProfile& profile,
                                            const std::string& job_id, const Progress& progress);

  const RepositoryLayout& layout() const { return layout_; }
  const VariantBuilderOptions& options() const { return options_; }

 private:
  // `name` is a valid model name. Loaded once, then shared by every job.
  absl::StatusOr<std::shared_ptr<const ModelMetadata>> Model(const std::string& name);

  const VariantBuilderOptions options_;
  const RepositoryLayout layout_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<const ModelMetadata>> models_ ABSL_GUARDED_BY(mu_);
};

// A design on a Pareto front, with the precision it runs in.
struct ParetoPoint {
  LatencyPrediction prediction;
  Design design;
  std::string precision;  // "fp32" | "int8"
};

// Writes `front` to pareto.csv (latency, accuracy, exits, thresholds,
// precision) and, when gnuplot is available, an SVG plot with the chosen
// design marked, into `dir`; with `per_precision` (each precision's own
// front, when several were searched) also pareto-<precision>.csv, plotted as
// one series each beside the combined front. With a `certificate`,
// chosen.csv also holds its certified latency and accuracy bounds and the
// plot marks them. Returns whether the plot was made.
bool WriteParetoFront(const std::string& dir, const std::vector<ParetoPoint>& front,
                      const std::vector<std::vector<ParetoPoint>>& per_precision,
                      const LatencyPrediction& chosen, const Certificate* certificate,
                      LatencyStatistic statistic, const std::string& gnuplot,
                      const std::string& title);

}  // namespace hapi
