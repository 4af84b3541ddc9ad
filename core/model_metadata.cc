#include "core/model_metadata.h"

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/status_macros.h"

namespace hapi {

absl::StatusOr<ModelMetadata> LoadModelMetadata(const std::string& model_dir) {
  ModelMetadata m;
  absl::Status st = ReadTextProto(absl::StrCat(model_dir, "/", kManifestFile), &m.manifest);
  if (absl::IsNotFound(st)) {
    return absl::NotFoundError(absl::StrCat("no model at ", model_dir, " (", st.message(), ")"));
  }
  HAPI_RETURN_IF_ERROR(st);
  for (auto [file, table] : {std::pair{m.manifest.validation_calibration(), &m.validation},
                             std::pair{m.manifest.test_calibration(), &m.test}}) {
    if (file.empty() || file.find('/') != std::string::npos || file == "..") {
      return absl::DataLossError(absl::StrCat(model_dir, "/", kManifestFile,
                                              ": invalid calibration file name '", file, "'"));
    }
    std::string path = absl::StrCat(model_dir, "/", file);
    HAPI_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
    absl::StatusOr<CalibrationTable> parsed = CalibrationTable::Parse(bytes);
    if (!parsed.ok()) {
      return absl::DataLossError(absl::StrCat(path, ": ", parsed.status().message()));
    }
    if (parsed->num_exits() != m.manifest.exits_size()) {
      return absl::DataLossError(absl::StrCat(path, ": ", parsed->num_exits(),
                                              " exits, manifest has ", m.manifest.exits_size()));
    }
    *table = *std::move(parsed);
  }
  return m;
}

}  // namespace hapi
