// Device profiles: per-part latencies of a model on one device. Three kinds
// share one format (hapi.v1.DeviceProfile): measured, analytic, scaled.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "hapi/v1/device.pb.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

// INVALID_ARGUMENT (naming the field) unless the profile has a valid name,
// belongs to `manifest` (same model name and MACs), records intra_op_threads
// in 0..1024 (0: not recorded) and a sane source (no negative iteration
// counts, a finite positive scale factor or MAC rate), has a batch-1 table
// (in some precision), every batch_size >= 1 and given once per precision, one entry per
// stage and per exit, and every latency is finite and >= 0.
absl::Status ValidateDeviceProfile(const v1::DeviceProfile& profile,
                                   const v1::ModelManifest& manifest);

// The table for `batch_size` in `precision`, or nullptr.
const v1::BatchProfile* FindBatch(const v1::DeviceProfile& profile, int batch_size,
                                  v1::Precision precision = v1::FP32);
// Whether the profile has a batch-1 table in `precision` (what planning needs).
bool HasPrecision(const v1::DeviceProfile& profile, v1::Precision precision);

// "fp32", "int8" (the flags' and files' spelling), and back
// (INVALID_ARGUMENT naming the value for anything else; case-insensitive).
std::string PrecisionName(int precision);
absl::StatusOr<v1::Precision> ParsePrecision(absl::string_view name);

// A device nobody has profiled yet: each part costs MACs / macs_per_second
// plus per_layer_overhead_s per conv/linear layer. Batch b scales the MAC
// term by b.
absl::StatusOr<v1::DeviceProfile> MakeAnalyticProfile(const std::string& name,
                                                      const v1::ModelManifest& manifest,
                                                      double macs_per_second,
                                                      double per_layer_overhead_s,
                                                      const std::vector<int>& batch_sizes = {1});

// `base` with every latency multiplied by `factor` (> 0).
absl::StatusOr<v1::DeviceProfile> MakeScaledProfile(const std::string& name,
                                                    const v1::DeviceProfile& base, double factor);

}  // namespace hapi
