// The whole validation of a Classify request, from its wire bytes to the
// input tensor: the input is a serialized hapi.v1.ClassifyRequest, parsed as
// gRPC would and handed to RequestInput, which the service's Submit runs
// before anything is queued (encoded PNG/JPEG, raw uint8 or float32 tensors
// with their shape, the size the model takes). The model is the fake one,
// 1x28x28 like the project's network.
//
// Checks: a request is either refused with INVALID_ARGUMENT and a printable
// message, or becomes exactly the model's input size of floats in [0, 1].
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/fake_model.h"
#include "hapi/v1/inference.pb.h"
#include "server/inference_service.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

const hapi::Model& FuzzModel() {
  static const std::shared_ptr<const hapi::Model> model = [] {
    absl::StatusOr<std::shared_ptr<const hapi::Model>> m =
        hapi::MakeFakeModel(hapi::FakeModelManifest(hapi::FakeModelSpec()));
    HAPI_FUZZ_CHECK(m.ok());
    return *std::move(m);
  }();
  return *model;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  hapi::v1::ClassifyRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;  // gRPC refuses it
  const hapi::Model& model = FuzzModel();
  absl::StatusOr<std::vector<float>> input = hapi::RequestInput(request, model, "fake");
  if (!input.ok()) {
    hapi::fuzz::CheckPrintableRefusal(input.status(), absl::StatusCode::kInvalidArgument);
    return 0;
  }
  HAPI_FUZZ_CHECK(input->size() == static_cast<size_t>(model.input_size()));
  for (float v : *input) HAPI_FUZZ_CHECK(v >= 0 && v <= 1);
  return 0;
}
