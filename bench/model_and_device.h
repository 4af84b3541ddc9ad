// What the search benchmarks read: a model's metadata (manifest, calibration
// tables) from a repository, and a device profile as its latency model.
#pragma once

#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "core/files.h"
#include "core/latency_model.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"

namespace hapi::bench {

struct ModelAndDevice {
  ModelMetadata meta;
  LatencyModel latency;
};

inline absl::StatusOr<ModelAndDevice> LoadModelAndDevice(const std::string& repository,
                                                         const std::string& model,
                                                         const std::string& profile_path) {
  HAPI_ASSIGN_OR_RETURN(ModelMetadata meta,
                        LoadModelMetadata(RepositoryLayout(repository).ModelDir(model)));
  if (profile_path.empty()) return absl::InvalidArgumentError("--profile is required");
  v1::DeviceProfile profile;
  HAPI_RETURN_IF_ERROR(ReadTextProto(profile_path, &profile));
  HAPI_ASSIGN_OR_RETURN(LatencyModel latency, LatencyModel::Create(profile, meta.manifest));
  return ModelAndDevice{std::move(meta), std::move(latency)};
}

}  // namespace hapi::bench
