// A CreateVariant request as the optimizer works with it: parsed and
// validated once, at the RPC edge, then handed to the job manager and the
// variant builder, which never look at the request proto again.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
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
  // As received: the state store persists it with the job, and the variant
  // manifest records its SLA (with the resolved confidences) as asked for.
  v1::CreateVariantRequest request;
};

// The one parse of a CreateVariant request. INVALID_ARGUMENT, saying what is
// wrong, for bad names, SLA, search algorithm or exit policy. Whether the
// model and the device exist and fit each other needs the repository: the
// job manager checks that when it accepts the job.
absl::StatusOr<VariantSpec> ParseVariantSpec(const v1::CreateVariantRequest& request);

// Seconds, the core enums, and the confidences the service defaults to when
// a request leaves them unset (kDefaultSlaConfidence); validated.
absl::StatusOr<Sla> SlaFromProto(const v1::Sla& proto);

}  // namespace hapi
