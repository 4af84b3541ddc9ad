#include "server/inference_service.h"

#include <deque>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/device_profile.h"
#include "core/files.h"
#include "core/image_decoder.h"
#include "core/input_spec.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "rpc/grpc_status.h"
#include "rpc/tsan_handoff.h"

namespace hapi {
namespace {

absl::Time DeadlineOf(const grpc::CallbackServerContext& ctx) {
  auto d = ctx.deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

// Responses for one streaming call, written one at a time in order; the call
// finishes once closing was requested and everything queued was written.
// Lives in a shared_ptr so callbacks from batch workers outlive the reactor.
template <typename Reactor>
struct StreamState {
  absl::Mutex mu;
  Reactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
  std::deque<v1::ClassifyResponse> queue ABSL_GUARDED_BY(mu);
  v1::ClassifyResponse current ABSL_GUARDED_BY(mu);
  bool writing ABSL_GUARDED_BY(mu) = false;
  bool closing ABSL_GUARDED_BY(mu) = false;
  bool finished ABSL_GUARDED_BY(mu) = false;
  grpc::Status status ABSL_GUARDED_BY(mu);
  // Bidirectional streams: requests read but not answered, and whether the
  // client has half-closed.
  int outstanding ABSL_GUARDED_BY(mu) = 0;
  bool reads_done ABSL_GUARDED_BY(mu) = false;

  void Push(v1::ClassifyResponse r) {
    absl::MutexLock lock(&mu);
    queue.push_back(std::move(r));
    Pump();
  }
  void Close(const grpc::Status& s) {
    absl::MutexLock lock(&mu);
    CloseLocked(s);
  }
  void CloseLocked(const grpc::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (!closing) {
      closing = true;
      status = s;
    }
    Pump();
  }
  void WriteDone(bool ok) {
    absl::MutexLock lock(&mu);
    writing = false;
    if (!ok) {  // the client is gone: drop the rest
      queue.clear();
      closing = true;
      status = grpc::Status(grpc::StatusCode::CANCELLED, "client went away");
    }
    Pump();
  }
  void Pump() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (finished || reactor == nullptr || writing) return;
    if (!queue.empty()) {
      current = std::move(queue.front());
      queue.pop_front();
      writing = true;
      HandOffReactor(reactor);
      reactor->StartWrite(&current);
      return;
    }
    if (closing) {
      finished = true;
      HandOffReactor(reactor);
      reactor->Finish(status);
    }
  }
};

v1::ClassifyResponse StepResponse(const Servable& s, const ExitStep& step) {
  v1::ClassifyResponse r;
  r.set_label(step.label);
  r.set_class_name(s.ClassName(step.label));
  r.set_confidence(step.confidence);
  v1::ExitResult* e = r.mutable_exit();
  e->set_exit_index(step.exit_index);
  e->set_depth(step.depth);
  e->set_label(step.label);
  e->set_class_name(s.ClassName(step.label));
  e->set_confidence(step.confidence);
  r.set_exits_evaluated(step.depth);
  r.set_variant(s.variant().id());
  return r;
}

// A progressive call's stream plus what it has evaluated so far. The newest
// step is held back: it becomes the final message when it is the one that
// answers. At the compute deadline, if the executor is still working, the
// call closes with the most confident step streamed so far, marked
// cut_by_deadline (the executor's own rule when it cuts a sample short).
template <typename Reactor>
struct ProgressiveState : StreamState<Reactor> {
  using StreamState<Reactor>::mu;
  std::optional<v1::ClassifyResponse> held ABSL_GUARDED_BY(mu);
  std::optional<v1::ClassifyResponse> best ABSL_GUARDED_BY(mu);
  float best_score ABSL_GUARDED_BY(mu) = 0;

  void Step(v1::ClassifyResponse step, float score) {
    absl::MutexLock lock(&mu);
    if (this->closing) return;
    if (held.has_value()) this->queue.push_back(*std::move(held));
    if (!best.has_value() || score > best_score) {
      best = step;
      best_score = score;
    }
    held = std::move(step);
    this->Pump();
  }
  void Answer(const absl::Status& status, const v1::ClassifyResponse& answer) {
    absl::MutexLock lock(&mu);
    if (this->closing) return;  // already answered at the deadline
    if (status.ok()) {
      if (held.has_value() && held->exit().exit_index() != answer.exit().exit_index()) {
        this->queue.push_back(*held);  // cut short: the answer is an earlier exit
      }
      v1::ClassifyResponse last = answer;
      last.set_final(true);
      this->queue.push_back(std::move(last));
    }
    this->CloseLocked(ToGrpcStatus(status));
  }
  // True when the call was answered here.
  bool AnswerAtDeadline(const std::string& request_id, absl::Time start) {
    absl::MutexLock lock(&mu);
    if (this->closing || !best.has_value()) return false;
    if (held.has_value() && held->exit().exit_index() != best->exit().exit_index()) {
      this->queue.push_back(*held);
    }
    v1::ClassifyResponse last = *best;
    last.set_final(true);
    last.set_cut_by_deadline(true);
    last.set_request_id(request_id);
    last.set_server_latency_s(absl::ToDoubleSeconds(absl::Now() - start));
    this->queue.push_back(std::move(last));
    this->CloseLocked(grpc::Status::OK);
    return true;
  }
};

class ProgressiveReactor : public grpc::ServerWriteReactor<v1::ClassifyResponse> {
 public:
  ProgressiveReactor(InferenceService* service, grpc::CallbackServerContext* ctx,
                     const v1::ClassifyRequest& request)
      : service_(service),
        state_(std::make_shared<State>()),
        cancelled_(std::make_shared<std::atomic<bool>>(false)) {
    {
      absl::MutexLock lock(&state_->mu);
      state_->reactor = this;
    }
    auto state = state_;
    const absl::Time deadline = DeadlineOf(*ctx);
    if (deadline != absl::InfiniteFuture())
      ArmDeadline(service->ComputeDeadline(deadline), request);
    absl::Status st = service->Submit(
        request, deadline,
        [state](const ExitStep& step, const Servable& s) {
          state->Step(StepResponse(s, step), step.score);
        },
        [state](const absl::Status& status, const v1::ClassifyResponse& answer) {
          state->Answer(status, answer);
        },
        cancelled_);
    if (!st.ok()) {
      state_->Close(ToGrpcStatus(st));
      return;
    }
  }
  void OnWriteDone(bool ok) override {
    TakeOverReactor(this);
    state_->WriteDone(ok);
  }
  void OnCancel() override {
    TakeOverReactor(this);
    cancelled_->store(true);
  }
  void OnDone() override {
    TakeOverReactor(this);
    if (timer_.has_value()) service_->deadlines().Cancel(*timer_);
    {
      absl::MutexLock lock(&state_->mu);
      state_->reactor = nullptr;
    }
    delete this;
  }

 private:
  using State = ProgressiveState<ProgressiveReactor>;

  // At the compute deadline the call answers from what it has, and the
  // executor stops this sample at its next stage boundary.
  void ArmDeadline(absl::Time at, const v1::ClassifyRequest& request) {
    auto state = state_;
    auto cancelled = cancelled_;
    const absl::Time start = absl::Now();
    timer_ = service_->deadlines().At(at, [state, cancelled, id = request.request_id(), start] {
      if (state->AnswerAtDeadline(id, start)) cancelled->store(true);
    });
  }

  InferenceService* const service_;
  std::shared_ptr<State> state_;
  std::shared_ptr<std::atomic<bool>> cancelled_;
  std::optional<DeadlineTimer::Id> timer_;
};

class StreamReactor : public grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse> {
 public:
  StreamReactor(InferenceService* service, grpc::CallbackServerContext* ctx)
      : service_(service), ctx_(ctx), state_(std::make_shared<State>()) {
    {
      absl::MutexLock lock(&state_->mu);
      state_->reactor = this;
    }
    HandOffReactor(this);
    StartRead(&request_);
  }
  void OnReadDone(bool ok) override {
    TakeOverReactor(this);
    auto state = state_;
    if (!ok) {
      absl::MutexLock lock(&state->mu);
      state->reads_done = true;
      if (state->outstanding == 0) state->CloseLocked(grpc::Status::OK);
      return;
    }
    {
      absl::MutexLock lock(&state->mu);
      ++state->outstanding;
    }
    const std::string id = request_.request_id();
    auto answered = [state, id](const absl::Status& status, const v1::ClassifyResponse& answer) {
      v1::ClassifyResponse r = answer;
      r.set_request_id(id);
      if (!status.ok()) {
        r.set_error_code(static_cast<int>(status.code()));
        r.set_error(std::string(status.message()));
      }
      absl::MutexLock lock(&state->mu);
      state->queue.push_back(std::move(r));
      --state->outstanding;
      if (state->reads_done && state->outstanding == 0) state->closing = true;
      state->Pump();
    };
    absl::Status st = service_->Submit(request_, DeadlineOf(*ctx_), nullptr, answered, nullptr);
    if (!st.ok()) answered(st, v1::ClassifyResponse());
    HandOffReactor(this);
    StartRead(&request_);
  }
  void OnWriteDone(bool ok) override {
    TakeOverReactor(this);
    state_->WriteDone(ok);
  }
  void OnDone() override {
    TakeOverReactor(this);
    {
      absl::MutexLock lock(&state_->mu);
      state_->reactor = nullptr;
    }
    delete this;
  }

 private:
  using State = StreamState<StreamReactor>;
  InferenceService* const service_;
  grpc::CallbackServerContext* const ctx_;
  std::shared_ptr<State> state_;
  v1::ClassifyRequest request_;
};

}  // namespace

void FillResponse(const Servable& s, const SampleResult& result, v1::ClassifyResponse* r) {
  r->set_label(result.label);
  r->set_class_name(s.ClassName(result.label));
  r->set_confidence(result.confidence);
  v1::ExitResult* e = r->mutable_exit();
  e->set_exit_index(result.exit_index);
  e->set_depth(result.depth);
  e->set_label(result.label);
  e->set_class_name(s.ClassName(result.label));
  e->set_confidence(result.confidence);
  r->set_exits_evaluated(result.exits_evaluated);
  r->set_cut_by_deadline(result.cut_short);
  r->set_variant(s.variant().id());
}

absl::StatusOr<std::vector<float>> RequestInput(const v1::ClassifyRequest& request,
                                                const Model& model, absl::string_view model_name) {
  absl::StatusOr<std::vector<float>> pixels = DecodeImage(request.image(), model.input_spec());
  if (pixels.ok() && pixels->size() != static_cast<size_t>(model.input_size())) {
    // The model's input_shape() disagrees with its own input spec.
    pixels = absl::InternalError(
        absl::StrCat("model '", model_name, "' takes ", ShapeString(model.input_spec()),
                     " by its input spec but ", model.input_size(), " values by its input shape"));
  }
  return pixels;
}

InferenceService::InferenceService(ModelRegistry* models, InferenceServiceOptions options)
    : models_(models), options_(std::move(options)), started_(absl::Now()) {}

absl::Status InferenceService::Submit(
    const v1::ClassifyRequest& request, absl::Time deadline,
    std::function<void(const ExitStep&, const Servable&)> on_step,
    std::function<void(const absl::Status&, const v1::ClassifyResponse&)> on_done,
    std::shared_ptr<std::atomic<bool>> cancelled) {
  const absl::Time start = absl::Now();
  HAPI_ASSIGN_OR_RETURN(ServedModel * model, models_->Find(request.model()));
  std::shared_ptr<const Servable> servable = model->servables().current();
  if (!servable) return absl::UnavailableError("no variant is loaded yet");
  ++requests_;
  VariantMetrics* metrics = servable->metrics();
  absl::StatusOr<std::vector<float>> pixels =
      RequestInput(request, servable->executor().model(), servable->variant().model());
  if (!pixels.ok()) {
    if (metrics) metrics->RequestDone(pixels.status().code(), 0);
    return pixels.status();
  }
  auto r = std::make_unique<InferenceRequest>();
  r->servable = servable;
  r->pixels = *std::move(pixels);
  r->deadline = ComputeDeadline(deadline);
  r->cancelled = std::move(cancelled);
  if (on_step) {
    const Servable* s = servable.get();
    r->on_step = [on_step, s](const ExitStep& step) { on_step(step, *s); };
  }
  const std::string request_id = request.request_id();
  r->on_done = [servable, on_done, start, request_id](const InferenceOutcome& out) {
    v1::ClassifyResponse response;
    response.set_request_id(request_id);
    if (out.status.ok()) FillResponse(*servable, out.result, &response);
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    response.set_server_latency_s(seconds);
    response.set_queue_s(out.queue_s);
    response.set_batch_size(out.batch_size);
    if (servable->metrics()) servable->metrics()->RequestDone(out.status.code(), seconds);
    on_done(out.status, response);
  };
  absl::Status st = model->batcher().Submit(std::move(r));
  if (!st.ok() && metrics) metrics->RequestDone(st.code(), 0);
  return st;
}

namespace {

// Classify's reactor, finished by a batcher worker: the response it wrote is
// destroyed by gRPC after OnDone, on another thread (the order ThreadSanitizer
// is told by HandOffReactor/TakeOverReactor).
class UnaryReactor : public grpc::ServerUnaryReactor {
 public:
  void Finish(grpc::Status status) {
    HandOffReactor(this);
    grpc::ServerUnaryReactor::Finish(std::move(status));
  }
  void OnDone() override {
    TakeOverReactor(this);
    delete this;
  }
};

}  // namespace

grpc::ServerUnaryReactor* InferenceService::Classify(grpc::CallbackServerContext* ctx,
                                                     const v1::ClassifyRequest* request,
                                                     v1::ClassifyResponse* response) {
  auto* reactor = new UnaryReactor();
  absl::Status st = Submit(
      *request, DeadlineOf(*ctx), nullptr,
      [reactor, response](const absl::Status& status, const v1::ClassifyResponse& answer) {
        if (status.ok()) *response = answer;
        reactor->Finish(ToGrpcStatus(status));
      },
      nullptr);
  if (!st.ok()) reactor->Finish(ToGrpcStatus(st));
  return reactor;
}

grpc::ServerBidiReactor<v1::ClassifyRequest, v1::ClassifyResponse>*
InferenceService::ClassifyStream(grpc::CallbackServerContext* ctx) {
  return new StreamReactor(this, ctx);
}

grpc::ServerWriteReactor<v1::ClassifyResponse>* InferenceService::ClassifyProgressive(
    grpc::CallbackServerContext* ctx, const v1::ClassifyRequest* request) {
  return new ProgressiveReactor(this, ctx, *request);
}

absl::Time InferenceService::ComputeDeadline(absl::Time call_deadline) const {
  if (call_deadline == absl::InfiniteFuture()) return call_deadline;
  return call_deadline - options_.response_margin;
}

absl::Status InferenceService::FillStatusFor(absl::string_view model,
                                             v1::ServingStatus* status) const {
  if (model.empty() && models_->models().size() > 1) {
    status->set_uptime_s(absl::ToDoubleSeconds(absl::Now() - started_));
    status->set_requests(requests_.load());
    for (const auto& m : models_->models()) FillStatus(*m, status->add_models());
    return absl::OkStatus();
  }
  HAPI_ASSIGN_OR_RETURN(ServedModel * found, models_->Find(model));
  FillStatus(*found, status);
  return absl::OkStatus();
}

void InferenceService::FillStatus(const ServedModel& model, v1::ServingStatus* status) const {
  std::shared_ptr<const Servable> s = model.servables().current();
  status->set_uptime_s(absl::ToDoubleSeconds(absl::Now() - started_));
  status->set_requests(requests_.load());
  status->set_variant_swaps(model.servables().swaps());
  status->set_model(model.name());
  if (!s) return;
  const v1::VariantManifest& v = s->variant();
  status->set_variant(v.id());
  status->set_model(v.model());
  *status->mutable_input() = s->executor().model().input_spec();
  status->set_device(v.device());
  for (int e : v.enabled_exits()) status->add_enabled_exits(e);
  for (float t : v.thresholds()) status->add_thresholds(t);
  status->set_exit_policy(v.exit_policy().empty() ? "max_softmax" : v.exit_policy());
  status->set_precision(PrecisionName(s->precision()));
  status->set_sla(v.sla().ShortDebugString());
  if (s->metrics()) {
    for (int64_t c : s->metrics()->ExitCounts()) status->add_exit_counts(c);
  }
  status->set_predicted_accuracy(v.predicted_accuracy());
  status->set_predicted_mean_ms(v.predicted_latency().mean_ms());
  status->set_loaded_at(absl::FormatTime(absl::RFC3339_sec, s->loaded_at(), absl::UTCTimeZone()));
  if (model.monitor()) model.monitor()->FillStatus(*s, status->mutable_monitor());
}

grpc::ServerUnaryReactor* InferenceService::GetServingStatus(
    grpc::CallbackServerContext* ctx, const v1::ServingStatusRequest* request,
    v1::ServingStatus* response) {
  absl::Status st = FillStatusFor(request->model(), response);
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(st));
  return reactor;
}

grpc::ServerUnaryReactor* InferenceService::LoadVariant(grpc::CallbackServerContext* ctx,
                                                        const v1::LoadVariantRequest* request,
                                                        v1::LoadVariantResponse* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::Status st = CheckToken(*ctx, options_.admin_token);
  if (st.ok()) st = ValidateName(request->variant(), "variant id");
  if (st.ok()) st = Load(*request, response);
  reactor->Finish(ToGrpcStatus(st));
  return reactor;
}

// Loading takes a moment (weights, BN folding); it runs on the callback
// thread, which gRPC allows for the rare admin call.
absl::Status InferenceService::Load(const v1::LoadVariantRequest& request,
                                    v1::LoadVariantResponse* response) {
  ServedModel* model = models_->models().front().get();
  // Unnamed, the one slot takes any variant (its manifest is read by the load).
  if (models_->named() || !request.model().empty()) {
    HAPI_ASSIGN_OR_RETURN(model, models_->ForVariant(request.variant(), request.model()));
  }
  HAPI_RETURN_IF_ERROR(model->servables().Load(request.variant()).status());
  FillStatus(*model, response->mutable_status());
  return absl::OkStatus();
}

}  // namespace hapi
