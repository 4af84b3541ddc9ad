// A CreateVariant request as the optimizer works with it: parsed and
// validated once, at the RPC edge, then handed to the job manager and the
// variant builder, which never look at the request proto again.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/calibration_table.h"
#include "core/design_search.h"
#include "core/exit_policy.h"
#include "core/sla.h"
#include "hapi/v1/optimizer.pb.h"

namespace hapi {

struct VariantSpec {
  std::string model;       // a valid repository name
  std::string device;      // a valid repository name
  std::string variant_id;  // a valid repository name; empty until the job names it
  Sla sla;                 // valid (ValidateSla), confidences resolved
  std::shared_ptr<const DesignSearch> search;  // never null
  ExitPolicy policy = ExitPolicy::kMaxSoftmax;
  bool per_exit_thresholds = false;
  // What the search may choose among, each given once; empty: every
  // precision the model and the device have tables for. At most one with a
  // live table (the precision its rows were computed in; empty: fp32).
  std::vector<v1::Precision> precisions;
  // Set when the request carries live_calibration: the server's table of
  // shadowed requests, labelled with the full network's answers, that the
  // search plans on instead of the validation split (docs/certified-slas.md,
  // "Planning on live traffic"). Its exits and classes are checked against
  // the model with CheckLiveTable. Null otherwise.
  std::shared_ptr<const CalibrationTable> live_table;
  std::string live_from_variant;  // empty or a valid name
  std::string live_reason;        // "bound" | "drift" | "operator" when live_table is set
  // As received: the state store persists it with the job, and the variant
  // manifest records its SLA (with the resolved confidences) as asked for.
  // Once the job is stored, the job manager's copy drops live_calibration's
  // bytes: live_table holds them parsed.
  v1::CreateVariantRequest request;
};

// A live calibration table smaller than this is refused: the search would
// select on about 60 of its samples and certify on about 40.
inline constexpr int kMinLiveCalibrationSamples = 100;

// The one parse of a CreateVariant request. INVALID_ARGUMENT, saying what is
// wrong, for bad names, SLA, search algorithm or exit policy, and for a live
// calibration table that does not parse, has fewer than
// kMinLiveCalibrationSamples samples, non-finite scores, or a true label that
// is not the final exit's answer. Whether the model and the device exist and
// fit each other (and the live table the model) needs the repository: the
// job manager checks that when it accepts the job.
absl::StatusOr<VariantSpec> ParseVariantSpec(const v1::CreateVariantRequest& request);

// INVALID_ARGUMENT, naming both counts, when the live table's exits or classes
// are not the model's (whose validation table is `model_validation`).
absl::Status CheckLiveTable(const CalibrationTable& live, const CalibrationTable& model_validation);

// Seconds, the core enums, and the confidences the service defaults to when
// a request leaves them unset (kDefaultSlaConfidence); validated.
absl::StatusOr<Sla> SlaFromProto(const v1::Sla& proto);

}  // namespace hapi
