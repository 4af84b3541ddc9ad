#include "server/inference_server.h"

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "rpc/process.h"
#include "rpc/reflection_v1.h"

namespace hapi {

namespace {

absl::Status CheckSources(const InferenceServerOptions& o) {
  if (!o.variant.empty() && !o.device.empty()) {
    return absl::InvalidArgumentError("serve a variant or a device's newest variant, not both");
  }
  if (!o.variants.empty() && (!o.variant.empty() || !o.device.empty() || !o.models.empty())) {
    return absl::InvalidArgumentError("variants name their models: pass them alone");
  }
  if (!o.models.empty() && !o.variant.empty()) {
    return absl::InvalidArgumentError("models serve their newest variants, not --variant");
  }
  return absl::OkStatus();
}

absl::Status CheckDistinct(const std::vector<std::pair<std::string, std::string>>& initial) {
  for (size_t i = 0; i < initial.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (initial[i].first == initial[j].first) {
        return absl::InvalidArgumentError(
            absl::StrCat("model '", initial[i].first, "' is named twice (", initial[j].second, ", ",
                         initial[i].second, "): one variant per model"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<InferenceServer>> InferenceServer::Start(
    InferenceServerOptions options) {
  if (!options.servables.load_model) {
    return absl::InvalidArgumentError("the server needs a model loader");
  }
  HAPI_RETURN_IF_ERROR(CheckSources(options));
  if (options.monitor.fraction != 0) {
    HAPI_RETURN_IF_ERROR(ValidateLiveMonitorOptions(options.monitor));
  }
  // Read before anything is created or bound, so bad TLS files fail first.
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                        MakeServerCredentials(options.tls));
  std::unique_ptr<InferenceServer> s(new InferenceServer(std::move(options)));
  HAPI_ASSIGN_OR_RETURN(auto initial, s->InitialVariants());
  std::vector<std::string> names;
  for (const auto& [model, variant] : initial) {
    if (!model.empty()) names.push_back(model);
  }
  s->registry_ = std::make_shared<prometheus::Registry>();
  s->metrics_ = std::make_unique<ServerMetrics>(*s->registry_);
  HAPI_ASSIGN_OR_RETURN(s->exposer_, StartMetrics(s->options_.metrics_address, s->registry_));
  s->models_ = std::make_unique<ModelRegistry>(names, s->options_.batcher, s->options_.servables,
                                               s->options_.monitor, s->metrics_.get());
  s->service_ = std::make_unique<InferenceService>(s->models_.get(), s->options_.service);
  OipServiceOptions oip;
  oip.response_margin = s->options_.service.response_margin;
  s->oip_service_ = std::make_unique<OipService>(s->models_.get(), oip);
  HAPI_RETURN_IF_ERROR(s->StartGrpc(std::move(credentials)));
  HAPI_RETURN_IF_ERROR(s->LoadInitialVariants(initial));
  if (!s->options_.device.empty() || !s->options_.models.empty())
    s->watcher_ = std::thread([p = s.get()] { p->WatchDevice(); });
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

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> InferenceServer::InitialVariants()
    const {
  const std::string& repository = options_.servables.repository;
  std::vector<std::pair<std::string, std::string>> initial;
  if (!options_.variants.empty()) {
    for (const std::string& variant : options_.variants) {
      HAPI_ASSIGN_OR_RETURN(std::string model, ModelOfVariant(repository, variant));
      initial.emplace_back(model, variant);
    }
  } else if (!options_.models.empty()) {
    std::vector<std::string> models = options_.models;
    if (models == std::vector<std::string>{"*"}) {
      HAPI_ASSIGN_OR_RETURN(models, ModelsWithVariantsForDevice(repository, options_.device));
    }
    for (const std::string& model : models) {
      HAPI_RETURN_IF_ERROR(ValidateName(model, "model name"));
      HAPI_ASSIGN_OR_RETURN(std::string variant,
                            NewestVariantForDevice(repository, options_.device, model));
      initial.emplace_back(model, variant);
    }
  } else {
    std::string variant = options_.variant;
    if (!options_.device.empty()) {
      HAPI_ASSIGN_OR_RETURN(variant, NewestVariantForDevice(repository, options_.device));
    }
    initial.emplace_back("", variant);
  }
  HAPI_RETURN_IF_ERROR(CheckDistinct(initial));
  return initial;
}

absl::Status InferenceServer::LoadInitialVariants(
    const std::vector<std::pair<std::string, std::string>>& initial) {
  for (size_t i = 0; i < initial.size(); ++i) {
    if (initial[i].second.empty()) continue;
    HAPI_RETURN_IF_ERROR(models_->models()[i]->servables().Load(initial[i].second).status());
  }
  SetServing(models_->AllLoaded());  // ready only once every model is
  return absl::OkStatus();
}

void InferenceServer::WatchDevice() {
  while (!shutdown_.WaitForNotificationWithTimeout(options_.poll_interval)) {
    for (const auto& model : models_->models()) {
      auto newest =
          NewestVariantForDevice(options_.servables.repository, options_.device, model->name());
      auto current = model->servables().current();
      if (newest.ok() && current && *newest != current->variant().id()) {
        LOG(INFO) << "newer variant " << *newest << " for device " << options_.device;
        // Failure logged; the old one keeps serving.
        model->servables().Load(*newest).IgnoreError();
      }
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
  models_.reset();  // joins the workers before the services go
}

}  // namespace hapi
