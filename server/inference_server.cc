#include "server/inference_server.h"

#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "rpc/process.h"
#include "rpc/reflection_v1.h"

namespace hapi {

absl::StatusOr<std::unique_ptr<InferenceServer>> InferenceServer::Start(
    InferenceServerOptions options) {
  if (!options.servables.load_model) {
    return absl::InvalidArgumentError("the server needs a model loader");
  }
  if (!options.variant.empty() && !options.device.empty()) {
    return absl::InvalidArgumentError("serve a variant or a device's newest variant, not both");
  }
  // Read before anything is created or bound, so bad TLS files fail first.
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                        MakeServerCredentials(options.tls));
  std::unique_ptr<InferenceServer> s(new InferenceServer(std::move(options)));
  s->registry_ = std::make_shared<prometheus::Registry>();
  s->metrics_ = std::make_unique<ServerMetrics>(*s->registry_);
  HAPI_ASSIGN_OR_RETURN(s->exposer_, StartMetrics(s->options_.metrics_address, s->registry_));
  s->batcher_ = std::make_unique<Batcher>(s->options_.batcher);
  // Readiness means warm: a variant serves (initially, or after a swap) only
  // once every worker has run it.
  ServableOptions servables = s->options_.servables;
  servables.prepare = [b = s->batcher_.get()](const Servable& v) { return b->WarmUpWorkers(v); };
  s->servables_ = std::make_unique<ServableManager>(std::move(servables), s->metrics_.get());
  s->service_ = std::make_unique<InferenceService>(s->servables_.get(), s->batcher_.get(),
                                                   s->options_.service);
  OipServiceOptions oip;
  oip.response_margin = s->options_.service.response_margin;
  s->oip_service_ = std::make_unique<OipService>(s->servables_.get(), s->batcher_.get(), oip);
  HAPI_RETURN_IF_ERROR(s->StartGrpc(std::move(credentials)));
  HAPI_RETURN_IF_ERROR(s->LoadInitialVariant());
  if (!s->options_.device.empty()) s->watcher_ = std::thread([p = s.get()] { p->WatchDevice(); });
  return s;
}

absl::Status InferenceServer::StartGrpc(std::shared_ptr<grpc::ServerCredentials> credentials) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  AddReflectionV1(&builder);  // grpc.reflection.v1 next to the plugin's v1alpha
  builder.AddListeningPort(options_.listen, credentials, &port_);
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.RegisterService(service_.get());
  builder.RegisterService(oip_service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    return ListenError(options_.listen, options_.tls);
  }
  SetServing(false);  // until a variant is loaded
  LOG(INFO) << "hapi-server listening on port " << port_ << " (" << DescribeTls(options_.tls)
            << ")";
  return absl::OkStatus();
}

absl::Status InferenceServer::LoadInitialVariant() {
  std::string variant = options_.variant;
  if (!options_.device.empty()) {
    HAPI_ASSIGN_OR_RETURN(variant,
                          NewestVariantForDevice(options_.servables.repository, options_.device));
  }
  if (variant.empty()) return absl::OkStatus();
  HAPI_RETURN_IF_ERROR(servables_->Load(variant).status());
  SetServing(true);
  return absl::OkStatus();
}

void InferenceServer::WatchDevice() {
  while (!shutdown_.WaitForNotificationWithTimeout(options_.poll_interval)) {
    auto newest = NewestVariantForDevice(options_.servables.repository, options_.device);
    auto current = servables_->current();
    if (newest.ok() && current && *newest != current->variant().id()) {
      LOG(INFO) << "newer variant " << *newest << " for device " << options_.device;
      servables_->Load(*newest).IgnoreError();  // failure logged; the old one keeps serving
    }
  }
}

void InferenceServer::SetServing(bool serving) {
  auto* health = server_->GetHealthCheckService();
  health->SetServingStatus(serving);
  health->SetServingStatus("hapi.v1.Inference", serving);
  health->SetServingStatus("inference.GRPCInferenceService", serving);
}

InferenceServer::~InferenceServer() {
  shutdown_.Notify();
  if (server_) {
    SetServing(false);
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server_->Wait();
  }
  if (watcher_.joinable()) watcher_.join();
  batcher_.reset();  // joins the workers before the service and servables go
}

}  // namespace hapi
