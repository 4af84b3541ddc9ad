// hapi-server as one object: the servable manager, batcher, hapi.v1.Inference
// and Open Inference Protocol (server/oip_service.h) services, gRPC server
// (health + reflection) and /metrics, wired once. main parses flags into
// InferenceServerOptions and calls Start; tests do the same.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "rpc/tls.h"
#include "server/batcher.h"
#include "server/inference_service.h"
#include "server/metrics.h"
#include "server/model_registry.h"
#include "server/oip_service.h"
#include "server/servable.h"

namespace hapi {

struct InferenceServerOptions {
  std::string listen = "0.0.0.0:50051";  // port 0: an ephemeral port (see port())
  ServerTlsOptions tls;                  // none set: plaintext gRPC
  ServableOptions servables;             // repository, model loader, model options
  // What to serve at start: a variant id, or the newest variant for a device
  // (then newer ones are swapped in as they appear, polled every
  // poll_interval). Neither: start NOT_SERVING until LoadVariant.
  std::string variant;
  std::string device;
  // Several models side by side (server/model_registry.h), each with its own
  // variant, hot swap, queue and workers; the server is SERVING once all are
  // loaded. Either variants to serve (one per model), or models whose newest
  // variant serves, of `device` when set (each watched for newer ones; "*":
  // every model with a variant, for the device when set). A device profile
  // is one model's, so models on one device are the exception. Neither: one
  // model, as above.
  std::vector<std::string> variants;
  std::vector<std::string> models;
  absl::Duration poll_interval = absl::Seconds(5);
  BatcherOptions batcher;
  LiveMonitorOptions monitor;       // fraction 0: no live monitor
  InferenceServiceOptions service;  // admin token
  int max_message_bytes = 4 << 20;  // largest request accepted
  std::string metrics_address;      // Prometheus /metrics, plain HTTP (empty: off)
};

class InferenceServer {
 public:
  // Listens, loads the initial variants and reports SERVING; an initial
  // variant that fails to load is an error (the status says why), as are TLS
  // files that cannot be read (the status names the file).
  static absl::StatusOr<std::unique_ptr<InferenceServer>> Start(InferenceServerOptions options);
  // Shuts down: NOT_SERVING, gRPC drained for up to 5 s, workers joined.
  ~InferenceServer();

  int port() const { return port_; }
  // The first model's (the only one's, without configured models).
  ServableManager& servables() { return models_->models().front()->servables(); }
  ModelRegistry& models() { return *models_; }
  prometheus::Registry& registry() { return *registry_; }

 private:
  explicit InferenceServer(InferenceServerOptions options) : options_(std::move(options)) {}
  absl::Status StartGrpc(std::shared_ptr<grpc::ServerCredentials> credentials);
  // The configured models (empty: unnamed) and the variant each starts with
  // (empty: none yet).
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> InitialVariants() const;
  absl::Status LoadInitialVariants(const std::vector<std::pair<std::string, std::string>>& initial);
  void WatchDevice();
  void SetServing(bool serving);

  // All constant after Start, except what the objects guard themselves.
  const InferenceServerOptions options_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<ModelRegistry> models_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<OipService> oip_service_;  // inference.GRPCInferenceService, same port
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Notification shutdown_;
  std::thread watcher_;  // with a device: looks for newer variants
};

}  // namespace hapi
