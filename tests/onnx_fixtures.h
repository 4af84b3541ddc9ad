// The committed ONNX fixtures (tests/data/onnx, scripts/make-onnx-fixtures.py)
// for tests that import them. The including target defines HAPI_ONNX_FIXTURES
// (their directory) and links the model library.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/input_spec.h"
#include "hapi/v1/model.pb.h"
#include "model/imported_model.h"
#include "model/onnx_import.h"
#include "tests/test_util.h"

namespace hapi {
namespace testing {

inline std::string Fixture(const std::string& file) {
  return std::string(HAPI_ONNX_FIXTURES) + "/" + file;
}

// The fixtures' input spec (scripts/make-onnx-fixtures.py: 3x32x32, these
// per-channel mean and std, as hapi-import reads them from the metadata).
inline v1::InputSpec FixtureSpec() {
  v1::InputSpec spec = MakeInputSpec(3, 32, 32, 0, 1);
  spec.clear_mean();
  spec.clear_std();
  for (float m : {0.49f, 0.48f, 0.45f}) spec.add_mean(m);
  for (float s : {0.25f, 0.24f, 0.26f}) spec.add_std(s);
  return spec;
}

// Imports fixture `onnx` into `model_dir` as model `name`, every cut point a
// candidate exit, as hapi-import does.
inline absl::Status ImportFixture(const std::string& onnx, const std::string& model_dir,
                                  const std::string& name) {
  const std::string bytes = ReadBytes(Fixture(onnx));
  absl::StatusOr<ImportedGraph> graph = ImportOnnx(bytes, onnx);
  if (!graph.ok()) return graph.status();
  absl::StatusOr<std::vector<CutPoint>> cuts = SelectCutPoints(*graph, {});
  if (!cuts.ok()) return cuts.status();
  ImportedModelInfo info;
  info.name = name;
  info.input = FixtureSpec();
  absl::StatusOr<v1::ModelManifest> manifest = MakeImportedManifest(*graph, *cuts, info);
  if (!manifest.ok()) return manifest.status();
  return SaveImportedModel(model_dir, bytes, *manifest);
}

}  // namespace testing
}  // namespace hapi
