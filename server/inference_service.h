// hapi.v1.Inference over gRPC's callback API, plus the variant hot swap.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/deadline_timer.h"
#include "core/model.h"
#include "hapi/v1/inference.grpc.pb.h"
#include "server/batcher.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/servable.h"

namespace hapi {

struct InferenceServiceOptions {
  std::string admin_token;  // protects LoadVariant when set
  // Kept free at the end of a call's deadline to send the answer: exits are
  // chosen to finish this long before it, and a progressive stream that has
  // streamed an exit closes with it by then (cut_by_deadline) instead of
  // letting the deadline end the call with no answer.
  absl::Duration response_margin = absl::Microseconds(200);
};

class InferenceService final : public v1::Inference::CallbackService {
 public:
  explicit InferenceService(ModelRegistry* models, InferenceServiceOptions options);

  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* ctx,
                                     const v1::ClassifyRequest* request,
                                     v1::ClassifyResponse* response) override;
  grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse>* ClassifyStream(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerWriteReactor<v1::ClassifyResponse>* ClassifyProgressive(
      grpc::CallbackServerContext* ctx, const v1::ClassifyRequest* request) override;
  // When an answer must be ready: the call's deadline less the response margin.
  absl::Time ComputeDeadline(absl::Time call_deadline) const;
  // Answers progressive calls at their compute deadline.
  DeadlineTimer& deadlines() { return deadlines_; }
  grpc::ServerUnaryReactor* GetServingStatus(grpc::CallbackServerContext* ctx,
                                             const v1::ServingStatusRequest* request,
                                             v1::ServingStatus* response) override;
  grpc::ServerUnaryReactor* LoadVariant(grpc::CallbackServerContext* ctx,
                                        const v1::LoadVariantRequest* request,
                                        v1::LoadVariantResponse* response) override;

  // Validates and decodes a request and queues it. `on_done` gets the filled
  // response or the error. Shared by the three classification RPCs.
  // `deadline` is the call's; the computation aims at deadline - response_margin.
  absl::Status Submit(const v1::ClassifyRequest& request, absl::Time deadline,
                      std::function<void(const ExitStep&, const Servable&)> on_step,
                      std::function<void(const absl::Status&, const v1::ClassifyResponse&)> on_done,
                      std::shared_ptr<std::atomic<bool>> cancelled);

 private:
  // One model's status (uptime and requests are the server's).
  void FillStatus(const ServedModel& model, v1::ServingStatus* status) const;
  // The status a request asks for: one model's, or every model's.
  absl::Status FillStatusFor(absl::string_view model, v1::ServingStatus* status) const;
  absl::Status Load(const v1::LoadVariantRequest& request, v1::LoadVariantResponse* response);

  ModelRegistry* const models_;
  const InferenceServiceOptions options_;
  const absl::Time started_;
  std::atomic<int64_t> requests_{0};
  DeadlineTimer deadlines_;
};

// A request's image as the input tensor of `model` (named `model_name` in
// messages): DecodeImage to the model's input spec (Model::input_spec(),
// derived once per loaded model). INVALID_ARGUMENT saying what is wrong.
// Submit's whole validation of a request, before anything is queued.
absl::StatusOr<std::vector<float>> RequestInput(const v1::ClassifyRequest& request,
                                                const Model& model, absl::string_view model_name);

// Fills the answer fields of a response from an executor result.
void FillResponse(const Servable& servable, const SampleResult& result,
                  v1::ClassifyResponse* response);

}  // namespace hapi
