// What the optimizer needs of a model, without LibTorch: its manifest and
// calibration tables.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "core/calibration_table.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

inline constexpr char kManifestFile[] = "manifest.pbtxt";
inline constexpr char kBackboneFile[] = "backbone.pt";
inline constexpr char kExitsFile[] = "exits.pt";
inline constexpr char kValidationCalibrationFile[] = "calibration-validation.bin";
inline constexpr char kTestCalibrationFile[] = "calibration-test.bin";
inline constexpr char kReportFile[] = "report.md";
inline constexpr char kInt8RangesFile[] = "int8-ranges.pbtxt";  // hapi-quantize

struct ModelMetadata {
  v1::ModelManifest manifest;
  CalibrationTable validation;
  CalibrationTable test;
};

// Reads <model_dir>/manifest.pbtxt and both calibration tables. NOT_FOUND
// when there is no manifest; DATA_LOSS naming the file when one is corrupt or
// disagrees with the manifest.
absl::StatusOr<ModelMetadata> LoadModelMetadata(const std::string& model_dir);

}  // namespace hapi
