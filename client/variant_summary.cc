#include "client/variant_summary.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/device_profile.h"
#include "core/latency_statistic.h"

namespace hapi::client {

std::string CertificationColumns(const v1::VariantManifest& variant) {
  if (!variant.has_certification()) return "no certification";
  const v1::Certification& c = variant.certification();
  std::string out = c.certified() ? "certified" : "NOT certified";
  if (variant.sla().use_accuracy_drop()) {
    absl::StrAppendFormat(&out, "  drop <= %.2f pts", 100 * c.accuracy_drop_upper());
  } else {
    absl::StrAppendFormat(&out, "  acc >= %.2f%%", 100 * c.accuracy_lower());
  }
  absl::StatusOr<LatencyStatistic> statistic = LatencyStatisticFromProto(c.statistic());
  absl::StrAppendFormat(&out, "  %s <= %.3f ms",
                        statistic.ok() ? LatencyStatisticName(*statistic) : "latency",
                        c.latency_upper_ms());
  absl::StrAppendFormat(&out, "  at %.1f%%", 100 * c.confidence());
  if (!c.certified() && !c.note().empty()) absl::StrAppend(&out, "  (", c.note(), ")");
  return out;
}

std::string VariantLine(const v1::VariantManifest& v) {
  return absl::StrFormat("%-40s device %-16s %s exits [%s] acc %.2f%% mean %.3f ms  %s", v.id(),
                         v.device(), PrecisionName(v.precision()),
                         absl::StrJoin(v.enabled_exits(), ","), 100 * v.predicted_accuracy(),
                         v.predicted_latency().mean_ms(), CertificationColumns(v));
}

}  // namespace hapi::client
