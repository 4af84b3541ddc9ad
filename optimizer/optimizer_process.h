// One hapi-optimizer: the state store, the variant builder, the job pool, the
// hapi.v1.Optimizer service with health and reflection on a gRPC server, and
// the /metrics endpoint, wired in the one order that works. main() and the
// tests build it the same way, from OptimizerOptions.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "optimizer/job_manager.h"
#include "optimizer/metrics.h"
#include "optimizer/optimizer_service.h"
#include "optimizer/state_store.h"
#include "optimizer/variant_builder.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"
#include "rpc/tls.h"

namespace hapi {

struct OptimizerOptions {
  // gRPC listen address; empty: no port, in-process channel only (tests).
  std::string listen = "0.0.0.0:50052";
  // TLS on the `listen` port; none set: plaintext. The in-process channel
  // is not affected.
  ServerTlsOptions tls;
  // Repository root; models/, devices/ and variants/ are created in it.
  std::string repository = "repository";
  // SQLite state file; empty: <repository>/optimizer.db.
  std::string state;
  // Prometheus /metrics address (plain HTTP); empty: not served.
  std::string metrics_address = "0.0.0.0:9102";
  int workers = 1;          // variant jobs run at the same time
  int max_pending = 16;     // queued jobs beyond which CreateVariant is RESOURCE_EXHAUSTED
  int threshold_grid = 64;  // thresholds per exit in the search grid
  // Selection and certification parts of the validation split, candidates,
  // multiplicity correction (docs/certified-slas.md).
  CertifyOptions certify;
  // Operator token for mutating RPCs: `admin_token_file`'s contents when
  // set, else `admin_token`; empty: no token needed.
  std::string admin_token;
  std::string admin_token_file;
  std::string gnuplot = "gnuplot";  // for Pareto plots; empty: CSV only
  // hapi-profile, run for RegisterDevice's measure_locally. A name without a
  // '/' is looked up on PATH; empty refuses such registrations.
  std::string profiler = "hapi-profile";
};

class OptimizerProcess {
 public:
  // Creates the repository directories, recovers the state a previous
  // process left (see RecoverState), starts the job workers and the server,
  // and reports SERVING. UNAVAILABLE when an address cannot be bound; TLS
  // files that cannot be read are an error naming the file.
  static absl::StatusOr<std::unique_ptr<OptimizerProcess>> Create(OptimizerOptions options);
  ~OptimizerProcess();  // Shutdown()

  // The bound gRPC port; 0 when `listen` was empty.
  int port() const { return port_; }
  std::shared_ptr<grpc::Channel> InProcessChannel();

  // NOT_SERVING, then no new RPCs and in-flight ones cancelled after
  // `grace`, then running jobs cancelled (they end CANCELLED; queued ones
  // stay QUEUED in the state store). Idempotent.
  void Shutdown(absl::Duration grace = absl::Seconds(5));

 private:
  explicit OptimizerProcess(OptimizerOptions options) : options_(std::move(options)) {}
  absl::Status Start();
  absl::Status OpenState();
  absl::Status StartServer(std::shared_ptr<grpc::ServerCredentials> credentials);
  std::string StatePath() const;

  // Set in Create and Start, then constant; Shutdown (the owner's thread)
  // releases the server and the jobs.
  const OptimizerOptions options_;
  std::string admin_token_;  // resolved once in Start
  // Destroyed bottom-up: the server before what it calls, the jobs before
  // the builder and store they use, the metrics after everything that
  // updates them, the registry last.
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;  // serves registry_
  std::unique_ptr<OptimizerMetrics> metrics_;
  std::unique_ptr<StateStore> store_;
  std::unique_ptr<VariantBuilder> builder_;
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<OptimizerService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace hapi
