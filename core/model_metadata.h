// What the optimizer needs of a model, without LibTorch: its manifest and
// calibration tables.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "core/calibration_table.h"
#include "hapi/v1/device.pb.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

inline constexpr char kManifestFile[] = "manifest.pbtxt";
inline constexpr char kBackboneFile[] = "backbone.pt";
inline constexpr char kExitsFile[] = "exits.pt";
inline constexpr char kValidationCalibrationFile[] = "calibration-validation.bin";
inline constexpr char kTestCalibrationFile[] = "calibration-test.bin";
inline constexpr char kReportFile[] = "report.md";
inline constexpr char kInt8RangesFile[] = "int8-ranges.pbtxt";  // hapi-quantize

inline constexpr char kInt8ValidationCalibrationFile[] = "calibration-int8-validation.bin";
inline constexpr char kInt8TestCalibrationFile[] = "calibration-int8-test.bin";

struct ModelMetadata {
  v1::ModelManifest manifest;
  CalibrationTable validation;  // fp32
  CalibrationTable test;
  // The int8 path's tables (hapi-quantize), when the manifest names them:
  // the same samples, with the fp32 tables' final exit as their reference
  // (CalibrationTable::SetReference), so an int8 design's accuracy drop is
  // measured against the fp32 full network.
  std::optional<CalibrationTable> int8_validation, int8_test;

  // The tables of `precision`, or nullptr when the model has none.
  const CalibrationTable* Validation(v1::Precision precision) const;
  const CalibrationTable* Test(v1::Precision precision) const;
};

// Reads <model_dir>/manifest.pbtxt and its calibration tables (fp32, and
// int8 when named). NOT_FOUND when there is no manifest; DATA_LOSS naming
// the file when one is corrupt or disagrees with the manifest (or, for an
// int8 table, does not hold the fp32 table's samples).
absl::StatusOr<ModelMetadata> LoadModelMetadata(const std::string& model_dir);

}  // namespace hapi
