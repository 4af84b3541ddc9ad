#include "core/device_profile.h"

#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/status_macros.h"

namespace hapi {
namespace {

// More intra-op threads than any machine this runs on has cores: a typo.
constexpr int kMaxIntraOpThreads = 1024;

absl::Status CheckPart(const v1::PartLatency& part, const std::string& where) {
  for (auto [field, v] : {std::pair<const char*, double>{"median_s", part.median_s()},
                          {"p95_s", part.p95_s()},
                          {"mean_s", part.mean_s()}}) {
    if (!std::isfinite(v) || v < 0) {
      return absl::InvalidArgumentError(absl::StrCat("device profile: ", field, " of ", where,
                                                     " is ", v,
                                                     " (must be finite and >= 0 seconds)"));
    }
  }
  return absl::OkStatus();
}

// The source says how the latencies were obtained; the latency model never
// reads it, but a profile that records nonsense there is not trusted either.
absl::Status CheckSource(const v1::DeviceProfile& profile) {
  auto bad = [&](absl::string_view field, auto value, absl::string_view rule) {
    return absl::InvalidArgumentError(absl::StrCat("device profile '", profile.name(), "': ", field,
                                                   " is ", value, " (must be ", rule, ")"));
  };
  switch (profile.source_case()) {
    case v1::DeviceProfile::kMeasured:
      if (profile.measured().warmup_iterations() < 0) {
        return bad("measured.warmup_iterations", profile.measured().warmup_iterations(), ">= 0");
      }
      if (profile.measured().iterations() < 0) {
        return bad("measured.iterations", profile.measured().iterations(), ">= 0");
      }
      break;
    case v1::DeviceProfile::kAnalytic:
      if (!std::isfinite(profile.analytic().macs_per_second()) ||
          profile.analytic().macs_per_second() <= 0) {
        return bad("analytic.macs_per_second", profile.analytic().macs_per_second(),
                   "finite and > 0");
      }
      if (!std::isfinite(profile.analytic().per_layer_overhead_s()) ||
          profile.analytic().per_layer_overhead_s() < 0) {
        return bad("analytic.per_layer_overhead_s", profile.analytic().per_layer_overhead_s(),
                   "finite and >= 0");
      }
      break;
    case v1::DeviceProfile::kScaled:
      if (!std::isfinite(profile.scaled().factor()) || profile.scaled().factor() <= 0) {
        return bad("scaled.factor", profile.scaled().factor(), "finite and > 0");
      }
      break;
    case v1::DeviceProfile::SOURCE_NOT_SET:
      break;
  }
  return absl::OkStatus();
}

v1::PartLatency Part(double seconds) {
  v1::PartLatency p;
  p.set_median_s(seconds);
  p.set_p95_s(seconds);
  p.set_mean_s(seconds);
  return p;
}

v1::PartLatency Scale(const v1::PartLatency& p, double f) {
  v1::PartLatency out;
  out.set_median_s(p.median_s() * f);
  out.set_p95_s(p.p95_s() * f);
  out.set_mean_s(p.mean_s() * f);
  return out;
}

}  // namespace

absl::Status ValidateDeviceProfile(const v1::DeviceProfile& profile,
                                   const v1::ModelManifest& manifest) {
  HAPI_RETURN_IF_ERROR(ValidateName(profile.name(), "device name"));
  if (profile.model() != manifest.name()) {
    return absl::InvalidArgumentError(absl::StrCat("device profile '", profile.name(),
                                                   "' is for model '", profile.model(), "', not '",
                                                   manifest.name(), "'"));
  }
  if (profile.model_macs() != manifest.full_network_macs()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device profile '", profile.name(), "' was made for a model of ",
                     profile.model_macs(), " MACs; model '", manifest.name(), "' has ",
                     manifest.full_network_macs(), " (a different architecture)"));
  }
  // 0: not recorded (profiles from before the field was filled in).
  if (profile.intra_op_threads() < 0 || profile.intra_op_threads() > kMaxIntraOpThreads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device profile '", profile.name(), "': intra_op_threads is ", profile.intra_op_threads(),
        " (must be 0, meaning not recorded, to ", kMaxIntraOpThreads, ")"));
  }
  HAPI_RETURN_IF_ERROR(CheckSource(profile));
  if (!HasPrecision(profile, v1::FP32) && !HasPrecision(profile, v1::INT8)) {
    return absl::InvalidArgumentError(
        absl::StrCat("device profile '", profile.name(), "' has no batch-size-1 table"));
  }
  std::set<std::pair<int, int>> tables;  // (batch_size, precision)
  for (const v1::BatchProfile& b : profile.batches()) {
    if (b.batch_size() <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("device profile '", profile.name(),
                                                     "': batch_size is ", b.batch_size(),
                                                     " (must be >= 1)"));
    }
    if (!v1::Precision_IsValid(b.precision())) {
      return absl::InvalidArgumentError(
          absl::StrCat("device profile '", profile.name(), "': unknown precision ", b.precision()));
    }
    const std::string precision = PrecisionName(b.precision());
    // FindBatch would read the first table and silently ignore the others.
    if (!tables.insert({b.batch_size(), b.precision()}).second) {
      return absl::InvalidArgumentError(absl::StrCat("device profile '", profile.name(),
                                                     "': batch_size ", b.batch_size(), " ",
                                                     precision, " has more than one table"));
    }
    if (b.stages_size() != manifest.stages_size() || b.exits_size() != manifest.exits_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device profile '", profile.name(), "' batch ", b.batch_size(), " ", precision, " has ",
          b.stages_size(), " stages and ", b.exits_size(), " exits; model '", manifest.name(),
          "' has ", manifest.stages_size(), " and ", manifest.exits_size()));
    }
    std::string batch = absl::StrCat(" at batch ", b.batch_size(), " ", precision);
    for (int s = 0; s < b.stages_size(); ++s) {
      HAPI_RETURN_IF_ERROR(CheckPart(b.stages(s), absl::StrCat("stage ", s, batch)));
    }
    for (int e = 0; e < b.exits_size(); ++e) {
      HAPI_RETURN_IF_ERROR(CheckPart(b.exits(e), absl::StrCat("exit ", e, batch)));
    }
    HAPI_RETURN_IF_ERROR(CheckPart(b.overhead(), absl::StrCat("overhead", batch)));
  }
  return absl::OkStatus();
}

const v1::BatchProfile* FindBatch(const v1::DeviceProfile& profile, int batch_size,
                                  v1::Precision precision) {
  for (const v1::BatchProfile& b : profile.batches()) {
    if (b.batch_size() == batch_size && b.precision() == precision) return &b;
  }
  return nullptr;
}

bool HasPrecision(const v1::DeviceProfile& profile, v1::Precision precision) {
  return FindBatch(profile, 1, precision) != nullptr;
}

std::string PrecisionName(int precision) {
  switch (precision) {
    case v1::FP32:
      return "fp32";
    case v1::INT8:
      return "int8";
    default:
      return absl::StrCat("precision ", precision);
  }
}

absl::StatusOr<v1::Precision> ParsePrecision(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "fp32") return v1::FP32;
  if (lower == "int8") return v1::INT8;
  return absl::InvalidArgumentError(absl::StrCat("unknown precision '", name, "' (fp32 or int8)"));
}

absl::StatusOr<v1::DeviceProfile> MakeAnalyticProfile(const std::string& name,
                                                      const v1::ModelManifest& manifest,
                                                      double macs_per_second,
                                                      double per_layer_overhead_s,
                                                      const std::vector<int>& batch_sizes) {
  HAPI_RETURN_IF_ERROR(ValidateName(name, "device name"));
  if (!std::isfinite(macs_per_second) || macs_per_second <= 0 ||
      !std::isfinite(per_layer_overhead_s) || per_layer_overhead_s < 0) {
    return absl::InvalidArgumentError(
        "analytic profile needs macs_per_second > 0 and per_layer_overhead_s >= 0");
  }
  v1::DeviceProfile p;
  p.set_name(name);
  p.set_model(manifest.name());
  p.set_model_macs(manifest.full_network_macs());
  p.set_intra_op_threads(1);
  p.mutable_analytic()->set_macs_per_second(macs_per_second);
  p.mutable_analytic()->set_per_layer_overhead_s(per_layer_overhead_s);
  for (int b : batch_sizes) {
    if (b <= 0) return absl::InvalidArgumentError(absl::StrCat("batch size ", b));
    v1::BatchProfile* batch = p.add_batches();
    batch->set_batch_size(b);
    for (const auto& s : manifest.stages()) {
      *batch->add_stages() = Part(static_cast<double>(b) * s.macs() / macs_per_second +
                                  s.layers() * per_layer_overhead_s);
    }
    for (const auto& e : manifest.exits()) {
      *batch->add_exits() = Part(static_cast<double>(b) * e.macs() / macs_per_second +
                                 e.layers() * per_layer_overhead_s);
    }
    *batch->mutable_overhead() = Part(per_layer_overhead_s);
  }
  return p;
}

absl::StatusOr<v1::DeviceProfile> MakeScaledProfile(const std::string& name,
                                                    const v1::DeviceProfile& base, double factor) {
  HAPI_RETURN_IF_ERROR(ValidateName(name, "device name"));
  if (!std::isfinite(factor) || factor <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("scale factor ", factor, " must be > 0"));
  }
  v1::DeviceProfile p = base;
  p.set_name(name);
  p.clear_source();
  p.mutable_scaled()->set_base_device(base.name());
  p.mutable_scaled()->set_factor(factor);
  for (v1::BatchProfile& b : *p.mutable_batches()) {
    for (auto& s : *b.mutable_stages()) s = Scale(s, factor);
    for (auto& e : *b.mutable_exits()) e = Scale(e, factor);
    *b.mutable_overhead() = Scale(b.overhead(), factor);
  }
  return p;
}

}  // namespace hapi
