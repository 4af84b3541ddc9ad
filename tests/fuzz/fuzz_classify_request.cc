// The whole validation of a Classify request, from its wire bytes to the
// input tensor: the input is a serialized hapi.v1.ClassifyRequest, parsed as
// gRPC would and handed to RequestInput, which the service's Submit runs
// before anything is queued (encoded PNG/JPEG, raw uint8 or float32 tensors
// with their shape and channels, against the model's input spec). Each
// request goes to two fake models: 1x28x28 grayscale like the project's
// network, and 3x32x32 RGB, centre-cropped.
//
// Checks: for each model, a request is either refused with INVALID_ARGUMENT
// and a printable message, or becomes exactly the model's input size of
// floats in [0, 1].
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/fake_model.h"
#include "hapi/v1/inference.pb.h"
#include "server/inference_service.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

std::shared_ptr<const hapi::Model> MakeModel(const hapi::FakeModelSpec& spec) {
  absl::StatusOr<std::shared_ptr<const hapi::Model>> m =
      hapi::MakeFakeModel(hapi::FakeModelManifest(spec));
  HAPI_FUZZ_CHECK(m.ok());
  return *std::move(m);
}

const hapi::Model& GrayModel() {
  static const std::shared_ptr<const hapi::Model> model = MakeModel(hapi::FakeModelSpec());
  return *model;
}

const hapi::Model& RgbModel() {
  static const std::shared_ptr<const hapi::Model> model = [] {
    hapi::FakeModelSpec spec;
    spec.channels = 3;
    spec.height = 32;
    spec.width = 32;
    spec.resize = hapi::v1::InputSpec::RESIZE_CENTER_CROP;
    return MakeModel(spec);
  }();
  return *model;
}

void CheckRequest(const hapi::v1::ClassifyRequest& request, const hapi::Model& model) {
  absl::StatusOr<std::vector<float>> input = hapi::RequestInput(request, model, "fake");
  if (!input.ok()) {
    hapi::fuzz::CheckPrintableRefusal(input.status(), absl::StatusCode::kInvalidArgument);
    return;
  }
  HAPI_FUZZ_CHECK(input->size() == static_cast<size_t>(model.input_size()));
  for (float v : *input) HAPI_FUZZ_CHECK(v >= 0 && v <= 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  hapi::v1::ClassifyRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;  // gRPC refuses it
  CheckRequest(request, GrayModel());
  CheckRequest(request, RgbModel());
  return 0;
}
