#include "optimizer/variant_spec.h"

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/status_macros.h"

namespace hapi {

absl::StatusOr<Sla> SlaFromProto(const v1::Sla& p) {
  Sla sla;
  sla.latency_budget_s = p.latency_budget_ms() * 1e-3;
  HAPI_ASSIGN_OR_RETURN(sla.statistic, LatencyStatisticFromProto(p.statistic()));
  switch (p.objective()) {
    case v1::SLA_OBJECTIVE_UNSPECIFIED:
    case v1::MAX_ACCURACY:
      sla.objective = SlaObjective::kMaxAccuracy;
      break;
    case v1::MIN_LATENCY:
      sla.objective = SlaObjective::kMinLatency;
      break;
    default:
      return absl::InvalidArgumentError("unknown SLA objective");
  }
  sla.min_accuracy = p.min_accuracy();
  sla.max_accuracy_drop = p.use_accuracy_drop() ? p.max_accuracy_drop() : -1;
  if (p.use_accuracy_drop() && !(p.max_accuracy_drop() >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("accuracy drop ", p.max_accuracy_drop(), " must be in [0, 1]"));
  }
  sla.min_throughput_rps = p.min_throughput_rps();
  if (sla.objective == SlaObjective::kMinLatency) {  // the only SLAs with an accuracy floor
    sla.accuracy_confidence =
        p.accuracy_confidence() == 0 ? kDefaultSlaConfidence : p.accuracy_confidence();
  }
  if (IsPercentile(sla.statistic) && sla.latency_budget_s > 0) {  // percentile budgets only
    sla.latency_confidence =
        p.latency_confidence() == 0 ? kDefaultSlaConfidence : p.latency_confidence();
  }
  HAPI_RETURN_IF_ERROR(ValidateSla(sla));
  return sla;
}

absl::StatusOr<VariantSpec> ParseVariantSpec(const v1::CreateVariantRequest& request) {
  VariantSpec spec;
  HAPI_RETURN_IF_ERROR(ValidateName(request.model(), "model name"));
  HAPI_RETURN_IF_ERROR(ValidateName(request.device(), "device name"));
  if (!request.variant_id().empty()) {
    HAPI_RETURN_IF_ERROR(ValidateName(request.variant_id(), "variant id"));
  }
  spec.model = request.model();
  spec.device = request.device();
  spec.variant_id = request.variant_id();
  HAPI_ASSIGN_OR_RETURN(spec.sla, SlaFromProto(request.sla()));
  HAPI_ASSIGN_OR_RETURN(
      spec.search, MakeDesignSearch(request.algorithm().empty() ? "hapi" : request.algorithm()));
  if (!request.exit_policy().empty()) {
    HAPI_ASSIGN_OR_RETURN(spec.policy, ParseExitPolicy(request.exit_policy()));
  }
  spec.per_exit_thresholds = request.per_exit_thresholds();
  spec.request = request;
  return spec;
}

}  // namespace hapi
