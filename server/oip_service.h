// inference.GRPCInferenceService: the Open Inference Protocol (KServe v2,
// proto/inference/grpc_service.proto) beside hapi.v1.Inference, on the same
// port and over the same servables, batcher and metrics (docs/oip.md).
//
// A model is a served variant's model (one per model the server holds,
// chosen by model_name); its OIP version is the variant id.
// ModelInfer takes one input, "image": a tensor [N, C, H, W] of FP32 (0..1)
// or UINT8 (0..255), [N, H, W, C] with the request parameter
// hapi_layout=NHWC, or BYTES [N] of encoded PNG/JPEG images. Each of the N
// samples becomes one request of the hapi.v1 path (the batcher, early exits,
// deadlines, metrics); the call answers once all N have. Outputs, in
// raw_output_contents: label INT64 [N], confidence FP32 [N], exit INT32 [N]
// (the model exit that answered), and on request probabilities FP32
// [N, classes].
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/model.h"
#include "inference/grpc_service.grpc.pb.h"
#include "server/batcher.h"
#include "server/model_registry.h"
#include "server/servable.h"

namespace hapi {

// Tensor and parameter names of the protocol's hapi-server dialect.
inline constexpr char kOipImageInput[] = "image";
inline constexpr char kOipLabelOutput[] = "label";
inline constexpr char kOipConfidenceOutput[] = "confidence";
inline constexpr char kOipExitOutput[] = "exit";
inline constexpr char kOipProbabilitiesOutput[] = "probabilities";
// Request (or input tensor) parameter: "NCHW" (the default) or "NHWC".
inline constexpr char kOipLayoutParameter[] = "hapi_layout";
// Request parameter, int64 or decimal string, milliseconds > 0: the answer
// must be computed this long after the request arrived; exits that would not
// fit are skipped as for a gRPC deadline (the earlier of the two applies).
inline constexpr char kOipBudgetParameter[] = "hapi_latency_budget_ms";
// Response parameters.
inline constexpr char kOipVariantParameter[] = "hapi_variant";
inline constexpr char kOipDeviceParameter[] = "hapi_device";
inline constexpr char kOipCutParameter[] = "hapi_cut_by_deadline";  // samples cut short

struct OipServiceOptions {
  // As InferenceServiceOptions::response_margin: kept free at the end of a
  // call's deadline to send the answer.
  absl::Duration response_margin = absl::Microseconds(200);
};

enum class OipOutput { kLabel, kConfidence, kExit, kProbabilities };

// A ModelInfer request checked against the model and turned into what the
// batcher takes.
struct OipInferRequest {
  std::vector<std::vector<float>> samples;  // one model input per batch row
  std::vector<OipOutput> outputs;           // in the order of the response
  absl::Duration latency_budget = absl::InfiniteDuration();
};

// INVALID_ARGUMENT saying what is wrong, naming the tensor or parameter: a
// missing or unknown input, a shape, datatype or size that does not match,
// contents both raw and typed, an image the decoder refuses, an unknown
// output or hapi_ parameter, more than `max_batch` samples.
absl::StatusOr<OipInferRequest> ParseOipInferRequest(const inference::ModelInferRequest& request,
                                                     const Model& model,
                                                     absl::string_view model_name, int max_batch);

// Class probabilities of each sample at the model exit that answered it
// (`exits[i]`), computed by running the samples again up to the deepest of
// those exits, compacted after each: num_samples x num_classes floats.
absl::StatusOr<std::vector<float>> AnsweringExitProbabilities(const Model& model,
                                                              const std::vector<float>& pixels,
                                                              const std::vector<int>& exits);

class OipService final : public inference::GRPCInferenceService::CallbackService {
 public:
  OipService(ModelRegistry* models, OipServiceOptions options);

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* ctx,
                                       const inference::ServerLiveRequest* request,
                                       inference::ServerLiveResponse* response) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* ctx,
                                        const inference::ServerReadyRequest* request,
                                        inference::ServerReadyResponse* response) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* ctx,
                                       const inference::ModelReadyRequest* request,
                                       inference::ModelReadyResponse* response) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* ctx,
                                           const inference::ServerMetadataRequest* request,
                                           inference::ServerMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* ctx,
                                          const inference::ModelMetadataRequest* request,
                                          inference::ModelMetadataResponse* response) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* ctx,
                                       const inference::ModelInferRequest* request,
                                       inference::ModelInferResponse* response) override;

  // The one place an OIP model name and version become a servable:
  // UNAVAILABLE while no variant is loaded, NOT_FOUND for a model not served
  // (the name is required), or a version that is neither empty nor the
  // variant that model serves. `served`, when given, gets the model's slot.
  absl::StatusOr<std::shared_ptr<const Servable>> FindModel(absl::string_view name,
                                                            absl::string_view version,
                                                            ServedModel** served = nullptr) const;

 private:
  // Parses the request and queues its samples; the call finishes once every
  // sample is answered. An error returned here finishes nothing.
  absl::Status StartInfer(const grpc::CallbackServerContext& ctx,
                          const inference::ModelInferRequest& request,
                          inference::ModelInferResponse* response,
                          grpc::ServerUnaryReactor* reactor,
                          std::shared_ptr<std::atomic<bool>> cancelled);

  ModelRegistry* const models_;
  const OipServiceOptions options_;
};

}  // namespace hapi
