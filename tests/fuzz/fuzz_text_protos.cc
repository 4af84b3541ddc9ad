// The repository's text protos through the checks that guard them and what is
// built from them when they pass. Byte 0 (mod 4) picks the message; the rest
// is its protobuf text:
//   0  hapi.v1.DeviceProfile against a fixed model (the fake's manifest, 6
//      stages): ValidateDeviceProfile, LatencyModel::Create, predictions over
//      a calibration table, MakeScaledProfile.
//   1  hapi.v1.ModelManifest: an analytic profile of it (MakeAnalyticProfile),
//      LatencyModel::Create (the manifest's own checks), predictions, and the
//      fake model built from it (MakeFakeModel) run by the executor.
//   2  hapi.v1.CreateVariantRequest: ParseVariantSpec (names, SLA, search
//      algorithm, exit policy), then the design search it asks for over the
//      fixed model, device and table.
//   3  hapi.v1.VariantManifest as the server loads it: names, the design
//      (enabled exits, thresholds, exit policy), EarlyExitExecutor::Create
//      over the fixed model, a batch run, and the deadline latencies.
//
// Checks: refusals are INVALID_ARGUMENT with printable messages; what is
// accepted keeps its promises (fuzz_fixtures.h, executor results in range,
// latency model and validation agree).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "core/design.h"
#include "core/device_profile.h"
#include "core/executor.h"
#include "core/exit_policy.h"
#include "core/fake_model.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "core/latency_model.h"
#include "hapi/v1/device.pb.h"
#include "hapi/v1/model.pb.h"
#include "hapi/v1/optimizer.pb.h"
#include "optimizer/variant_spec.h"
#include "tests/fuzz/fuzz_check.h"
#include "tests/fuzz/fuzz_fixtures.h"

namespace {

constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;

// The text being checked: messages quote its strings.
absl::string_view g_text;

// A refusal of the text's message. Its string fields hold whatever bytes the
// text spelled, escapes included, and messages may quote them; so the message
// must be UTF-8 only when the text is UTF-8 without escapes, as the strings
// of a gRPC request are.
void CheckRefusal(const absl::Status& status, absl::StatusCode code) {
  HAPI_FUZZ_CHECK(status.code() == code);
  HAPI_FUZZ_CHECK(!status.message().empty());
  if (g_text.find('\\') == absl::string_view::npos && hapi::fuzz::IsValidUtf8(g_text)) {
    HAPI_FUZZ_CHECK(hapi::fuzz::IsValidUtf8(status.message()));
  }
}

// Manifests beyond these are parsed and checked, not scored or run: the
// cost grows with stages, and a calibration table holds at most
// CalibrationTable::kMaxClasses classes.
constexpr int kMaxRunStages = 16;
constexpr int kMaxRunClasses = hapi::CalibrationTable::kMaxClasses;
constexpr int kTableSamples = 64;

struct Fixed {
  hapi::v1::ModelManifest manifest = hapi::fuzz::FakeManifest();
  hapi::CalibrationTable table = hapi::fuzz::SyntheticTable(manifest, kTableSamples);
  std::unique_ptr<hapi::LatencyModel> latency;
  std::shared_ptr<const hapi::Model> model;
};

const Fixed& GetFixed() {
  static const Fixed* fixed = [] {
    auto* f = new Fixed;
    absl::StatusOr<hapi::LatencyModel> latency = hapi::fuzz::AnalyticLatency(f->manifest);
    HAPI_FUZZ_CHECK(latency.ok());
    f->latency = std::make_unique<hapi::LatencyModel>(*std::move(latency));
    absl::StatusOr<std::shared_ptr<const hapi::Model>> model = hapi::MakeFakeModel(f->manifest);
    HAPI_FUZZ_CHECK(model.ok());
    f->model = *std::move(model);
    return f;
  }();
  return *fixed;
}

// Three samples (dark, mid, bright) through the executor; every answer must
// come from an exit of the design.
void CheckExecutor(const std::shared_ptr<const hapi::Model>& model, const hapi::Design& design) {
  absl::StatusOr<std::unique_ptr<hapi::EarlyExitExecutor>> executor =
      hapi::EarlyExitExecutor::Create(model, design);
  HAPI_FUZZ_CHECK(executor.ok());
  const int size = model->input_size();
  std::vector<float> pixels;
  for (float v : {0.1f, 0.5f, 0.93f}) pixels.insert(pixels.end(), size, v);
  absl::StatusOr<std::vector<hapi::SampleResult>> results = (*executor)->Run(pixels.data(), 3);
  HAPI_FUZZ_CHECK(results.ok());
  HAPI_FUZZ_CHECK(results->size() == 3);
  const int depths = static_cast<int>(design.exits.size()) + 1;
  for (const hapi::SampleResult& r : *results) {
    HAPI_FUZZ_CHECK(r.label >= 0 && r.label < model->num_classes());
    HAPI_FUZZ_CHECK(r.confidence >= 0 && r.confidence <= 1);
    HAPI_FUZZ_CHECK(r.depth >= 1 && r.depth <= depths);
    HAPI_FUZZ_CHECK(r.exit_index ==
                    (r.depth < depths ? design.exits[r.depth - 1] : model->final_exit()));
    HAPI_FUZZ_CHECK(r.exits_evaluated == r.depth && !r.cut_short);
  }
}

void DeviceProfile(absl::string_view text) {
  const Fixed& fixed = GetFixed();
  hapi::v1::DeviceProfile profile;
  if (!hapi::fuzz::ParseTextProto(text, &profile)) return;
  const absl::Status valid = hapi::ValidateDeviceProfile(profile, fixed.manifest);
  absl::StatusOr<hapi::LatencyModel> latency = hapi::LatencyModel::Create(profile, fixed.manifest);
  HAPI_FUZZ_CHECK(valid.ok() == latency.ok());
  if (!valid.ok()) {
    CheckRefusal(valid, kInvalid);
    return;
  }
  HAPI_FUZZ_CHECK(hapi::FindBatch(profile, 1) != nullptr);
  for (hapi::ExitPolicy policy :
       {hapi::ExitPolicy::kMaxSoftmax, hapi::ExitPolicy::kEntropy, hapi::ExitPolicy::kMargin}) {
    hapi::fuzz::CheckPredictions(*latency, fixed.table, policy);
  }
  absl::StatusOr<hapi::v1::DeviceProfile> scaled =
      hapi::MakeScaledProfile("fuzz-scaled", profile, 0.5);
  HAPI_FUZZ_CHECK(scaled.ok());
  // Halving keeps every latency finite and >= 0.
  HAPI_FUZZ_CHECK(hapi::ValidateDeviceProfile(*scaled, fixed.manifest).ok());
}

void ModelManifest(absl::string_view text) {
  hapi::v1::ModelManifest manifest;
  if (!hapi::fuzz::ParseTextProto(text, &manifest)) return;
  absl::StatusOr<hapi::LatencyModel> latency = hapi::fuzz::AnalyticLatency(manifest);
  if (!latency.ok()) {
    CheckRefusal(latency.status(), kInvalid);
    return;
  }
  HAPI_FUZZ_CHECK(latency->num_exits() == manifest.exits_size());
  HAPI_FUZZ_CHECK(manifest.exits_size() >= 1);  // LatencyModel::Create's check
  if (manifest.stages_size() > kMaxRunStages || manifest.class_names_size() < 2 ||
      manifest.class_names_size() > kMaxRunClasses) {
    return;
  }
  const hapi::CalibrationTable table = hapi::fuzz::SyntheticTable(manifest, kTableSamples);
  hapi::fuzz::CheckPredictions(*latency, table, hapi::ExitPolicy::kMaxSoftmax);
  absl::StatusOr<std::shared_ptr<const hapi::Model>> model = hapi::MakeFakeModel(manifest);
  if (!model.ok()) {
    CheckRefusal(model.status(), kInvalid);
    return;
  }
  // The fake's input shape is its manifest's input spec, which it validated.
  HAPI_FUZZ_CHECK(hapi::ValidateInputSpec((*model)->input_spec()).ok());
  if ((*model)->input_size() > 4096) return;
  std::vector<int> early;
  for (int e = 0; e + 1 < manifest.exits_size(); ++e) early.push_back(e);
  CheckExecutor(*model, hapi::Design::Shared(early, 0.6f));
}

void CreateVariantRequest(absl::string_view text, uint64_t seed) {
  const Fixed& fixed = GetFixed();
  hapi::v1::CreateVariantRequest request;
  if (!hapi::fuzz::ParseTextProto(text, &request)) return;
  absl::StatusOr<hapi::VariantSpec> spec = hapi::ParseVariantSpec(request);
  if (!spec.ok()) {
    CheckRefusal(spec.status(), kInvalid);
    return;
  }
  HAPI_FUZZ_CHECK(spec->search != nullptr);
  HAPI_FUZZ_CHECK(hapi::ValidateSla(spec->sla).ok());
  hapi::fuzz::CheckSearch(*spec->search, fixed.table, *fixed.latency, spec->sla, spec->policy,
                          spec->per_exit_thresholds, seed);
}

void VariantManifest(absl::string_view text) {
  const Fixed& fixed = GetFixed();
  hapi::v1::VariantManifest variant;
  if (!hapi::fuzz::ParseTextProto(text, &variant)) return;
  // What Servable::Load checks before it builds the executor.
  for (auto [name, what] :
       {std::pair{&variant.id(), "variant id"}, std::pair{&variant.model(), "model name"},
        std::pair{&variant.device(), "device name"}}) {
    absl::Status st = hapi::ValidateName(*name, what);
    if (!st.ok()) {
      CheckRefusal(st, kInvalid);
      return;
    }
  }
  hapi::Design design;
  design.exits.assign(variant.enabled_exits().begin(), variant.enabled_exits().end());
  design.thresholds.assign(variant.thresholds().begin(), variant.thresholds().end());
  absl::StatusOr<hapi::ExitPolicy> policy =
      hapi::ParseExitPolicy(variant.exit_policy().empty() ? "max_softmax" : variant.exit_policy());
  if (!policy.ok()) {
    CheckRefusal(policy.status(), kInvalid);
    return;
  }
  design.policy = *policy;
  const absl::Status valid = hapi::ValidateDesign(design, fixed.model->num_exits());
  absl::StatusOr<std::unique_ptr<hapi::EarlyExitExecutor>> executor =
      hapi::EarlyExitExecutor::Create(fixed.model, design);
  HAPI_FUZZ_CHECK(valid.ok() == executor.ok());
  if (!valid.ok()) {
    CheckRefusal(valid, kInvalid);
    return;
  }
  CheckExecutor(fixed.model, design);
  // The server's deadline checks: seconds from any depth reached (0:
  // nothing yet) to any depth at or after it.
  const int depths = static_cast<int>(design.exits.size()) + 1;
  for (int from = 0; from <= depths; ++from) {
    for (int to = from; to <= depths; ++to) {
      HAPI_FUZZ_CHECK(fixed.latency->SecondsBetween(design.exits, from, to) >= 0);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const absl::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  g_text = text;
  switch (data[0] % 4) {
    case 0:
      DeviceProfile(text);
      break;
    case 1:
      ModelManifest(text);
      break;
    case 2:
      CreateVariantRequest(text, data[0]);
      break;
    case 3:
      VariantManifest(text);
      break;
  }
  return 0;
}
