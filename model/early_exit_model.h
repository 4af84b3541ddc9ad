// A trained early-exit model: manifest, network weights and calibration
// tables, as stored under repository/models/<name>/. Torch-free header.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/calibration_table.h"
#include "core/model_metadata.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

class EarlyExitNetwork;

class EarlyExitModel {
 public:
  // A freshly initialised (untrained) model named `name`.
  static absl::StatusOr<std::unique_ptr<EarlyExitModel>> Create(const std::string& name,
                                                                const v1::BackboneConfig& config);
  // Loads models/<name>/ from a directory; errors name the file at fault.
  static absl::StatusOr<std::unique_ptr<EarlyExitModel>> Load(const std::string& model_dir);
  ~EarlyExitModel();

  // Writes the whole model to `model_dir` atomically: a staging directory is
  // filled and fsynced, then renamed over `model_dir` in one step.
  absl::Status Save(const std::string& model_dir) const;

  const v1::ModelManifest& manifest() const { return manifest_; }
  v1::ModelManifest* mutable_manifest() { return &manifest_; }
  EarlyExitNetwork& network() { return *network_; }
  const CalibrationTable& validation_table() const { return validation_table_; }
  const CalibrationTable& test_table() const { return test_table_; }
  void set_calibration(CalibrationTable validation, CalibrationTable test);

 private:
  EarlyExitModel() = default;

  v1::ModelManifest manifest_;
  std::unique_ptr<EarlyExitNetwork> network_;
  CalibrationTable validation_table_;
  CalibrationTable test_table_;
};

}  // namespace hapi
