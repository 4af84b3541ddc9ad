#include "optimizer/variant_spec.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/device_profile.h"
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

namespace {

// The live table as the optimizer relies on it: enough samples, scores the
// threshold grid can be built from, and the full network's answers as labels
// (what makes an absolute floor convertible into a drop).
absl::StatusOr<std::shared_ptr<const CalibrationTable>> ParseLiveTable(absl::string_view bytes) {
  absl::StatusOr<CalibrationTable> parsed = CalibrationTable::Parse(bytes);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("live_calibration: ", parsed.status().message()));
  }
  const CalibrationTable& t = *parsed;
  if (t.num_samples() < kMinLiveCalibrationSamples) {
    return absl::InvalidArgumentError(absl::StrCat("live_calibration has ", t.num_samples(),
                                                   " samples; planning needs at least ",
                                                   kMinLiveCalibrationSamples));
  }
  const int final_exit = t.num_exits() - 1;
  int mislabelled = 0;
  for (int s = 0; s < t.num_samples(); ++s) {
    if (!t.correct(final_exit, s)) ++mislabelled;
  }
  if (mislabelled > 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "live_calibration: ", mislabelled, " of ", t.num_samples(),
        " samples have a true label other than the final exit's answer; a live table is "
        "labelled with the full network's answers"));
  }
  for (int p = 0; p < kNumExitPolicies; ++p) {
    for (int e = 0; e < t.num_exits(); ++e) {
      for (int s = 0; s < t.num_samples(); ++s) {
        if (!std::isfinite(t.score(static_cast<ExitPolicy>(p), e, s))) {
          return absl::InvalidArgumentError(
              absl::StrCat("live_calibration: the ", ExitPolicyName(static_cast<ExitPolicy>(p)),
                           " score of sample ", s, " at exit ", e, " is not finite"));
        }
      }
    }
  }
  return std::make_shared<const CalibrationTable>(*std::move(parsed));
}

}  // namespace

absl::Status CheckLiveTable(const CalibrationTable& live,
                            const CalibrationTable& model_validation) {
  if (live.num_exits() != model_validation.num_exits() ||
      live.num_classes() != model_validation.num_classes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("live_calibration has ", live.num_exits(), " exits and ", live.num_classes(),
                     " classes; the model has ", model_validation.num_exits(), " exits and ",
                     model_validation.num_classes(), " classes"));
  }
  return absl::OkStatus();
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
  if (!request.live_from_variant().empty()) {
    HAPI_RETURN_IF_ERROR(ValidateName(request.live_from_variant(), "live_from_variant"));
  }
  const std::string& reason = request.live_reason();
  if (!reason.empty() && reason != "bound" && reason != "drift" && reason != "operator") {
    return absl::InvalidArgumentError(
        absl::StrCat("live_reason '", reason, "' is not one of bound, drift, operator (or empty)"));
  }
  if (!request.live_calibration().empty()) {
    HAPI_ASSIGN_OR_RETURN(spec.live_table, ParseLiveTable(request.live_calibration()));
    spec.live_from_variant = request.live_from_variant();
    spec.live_reason = reason.empty() ? "operator" : reason;
  } else if (!request.live_from_variant().empty() || !reason.empty()) {
    return absl::InvalidArgumentError(
        "live_from_variant and live_reason describe a live_calibration table, and there is none");
  }
  for (int p : request.precisions()) {
    if (!v1::Precision_IsValid(p)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown precision ", p, " (FP32 or INT8)"));
    }
    const auto precision = static_cast<v1::Precision>(p);
    if (std::find(spec.precisions.begin(), spec.precisions.end(), precision) !=
        spec.precisions.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("precision ", PrecisionName(precision), " is listed twice"));
    }
    spec.precisions.push_back(precision);
  }
  if (spec.live_table && spec.precisions.size() > 1) {
    return absl::InvalidArgumentError(
        "a live calibration table comes from one precision: list at most one");
  }
  spec.request = request;
  return spec;
}

}  // namespace hapi
