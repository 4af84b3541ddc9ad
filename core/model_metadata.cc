#include "core/model_metadata.h"

#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/status_macros.h"

namespace hapi {

namespace {

absl::StatusOr<CalibrationTable> LoadTable(const std::string& model_dir,
                                           const v1::ModelManifest& manifest,
                                           const std::string& file) {
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
  if (parsed->num_exits() != manifest.exits_size()) {
    return absl::DataLossError(absl::StrCat(path, ": ", parsed->num_exits(),
                                            " exits, manifest has ", manifest.exits_size()));
  }
  return parsed;
}

}  // namespace

absl::StatusOr<ModelMetadata> LoadModelMetadata(const std::string& model_dir) {
  ModelMetadata m;
  absl::Status st = ReadTextProto(absl::StrCat(model_dir, "/", kManifestFile), &m.manifest);
  if (absl::IsNotFound(st)) {
    return absl::NotFoundError(absl::StrCat("no model at ", model_dir, " (", st.message(), ")"));
  }
  HAPI_RETURN_IF_ERROR(st);
  HAPI_ASSIGN_OR_RETURN(m.validation,
                        LoadTable(model_dir, m.manifest, m.manifest.validation_calibration()));
  HAPI_ASSIGN_OR_RETURN(m.test, LoadTable(model_dir, m.manifest, m.manifest.test_calibration()));
  const std::string& int8_validation = m.manifest.int8_validation_calibration();
  const std::string& int8_test = m.manifest.int8_test_calibration();
  if (int8_validation.empty() != int8_test.empty()) {
    return absl::DataLossError(absl::StrCat(model_dir, "/", kManifestFile,
                                            ": names one int8 calibration table, not both"));
  }
  if (int8_validation.empty()) return m;
  for (auto [file, fp32, out] : {std::tuple{int8_validation, &m.validation, &m.int8_validation},
                                 std::tuple{int8_test, &m.test, &m.int8_test}}) {
    HAPI_ASSIGN_OR_RETURN(CalibrationTable table, LoadTable(model_dir, m.manifest, file));
    if (absl::Status same = table.SetReference(*fp32); !same.ok()) {
      return absl::DataLossError(
          absl::StrCat(model_dir, "/", file, ": not the fp32 table's samples: ", same.message()));
    }
    *out = std::move(table);
  }
  return m;
}

const CalibrationTable* ModelMetadata::Validation(v1::Precision precision) const {
  if (precision == v1::FP32) return &validation;
  return precision == v1::INT8 && int8_validation ? &*int8_validation : nullptr;
}

const CalibrationTable* ModelMetadata::Test(v1::Precision precision) const {
  if (precision == v1::FP32) return &test;
  return precision == v1::INT8 && int8_test ? &*int8_test : nullptr;
}

}  // namespace hapi
