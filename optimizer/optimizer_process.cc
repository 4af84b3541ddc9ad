#include "optimizer/optimizer_process.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/files.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "rpc/process.h"
#include "rpc/reflection_v1.h"

namespace hapi {
namespace {

constexpr char kServiceName[] = "hapi.v1.Optimizer";

}  // namespace

absl::StatusOr<std::unique_ptr<OptimizerProcess>> OptimizerProcess::Create(
    OptimizerOptions options) {
  std::unique_ptr<OptimizerProcess> process(new OptimizerProcess(std::move(options)));
  HAPI_RETURN_IF_ERROR(process->Start());
  return process;
}

OptimizerProcess::~OptimizerProcess() { Shutdown(); }

absl::Status OptimizerProcess::Start() {
  HAPI_ASSIGN_OR_RETURN(admin_token_,
                        ResolveToken(options_.admin_token, options_.admin_token_file));
  // Read before anything is created or bound, so bad TLS files fail first.
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                        MakeServerCredentials(options_.tls));
  const RepositoryLayout layout(options_.repository);
  for (const std::string& dir : {layout.ModelsDir(), layout.DevicesDir(), layout.VariantsDir()}) {
    HAPI_RETURN_IF_ERROR(MakeDirectories(dir));
  }
  registry_ = std::make_shared<prometheus::Registry>();
  metrics_ = std::make_unique<OptimizerMetrics>(*registry_);
  HAPI_ASSIGN_OR_RETURN(exposer_, StartMetrics(options_.metrics_address, registry_));
  HAPI_RETURN_IF_ERROR(OpenState());
  JobManagerOptions job_options;
  job_options.workers = options_.workers;
  job_options.max_pending = options_.max_pending;
  jobs_ = std::make_unique<JobManager>(store_.get(), builder_.get(), metrics_.get(), job_options);
  service_ = std::make_unique<OptimizerService>(store_.get(), jobs_.get(), builder_.get(),
                                                admin_token_, options_.profiler);
  return StartServer(std::move(credentials));
}

// The store, and the builder that reads the repository, with what a
// previous process left behind put right before any job can start.
absl::Status OptimizerProcess::OpenState() {
  HAPI_ASSIGN_OR_RETURN(store_, StateStore::Open(StatePath()));
  VariantBuilderOptions builder_options;
  builder_options.repository = options_.repository;
  builder_options.threshold_grid = options_.threshold_grid;
  builder_options.certify = options_.certify;
  builder_options.gnuplot = options_.gnuplot;
  builder_ = std::make_unique<VariantBuilder>(builder_options);
  if (absl::Status st = RecoverState(store_.get(), builder_->layout()); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat("recovering state: ", st.message()));
  }
  return absl::OkStatus();
}

std::string OptimizerProcess::StatePath() const {
  return options_.state.empty() ? RepositoryLayout(options_.repository).OptimizerState()
                                : options_.state;
}

absl::Status OptimizerProcess::StartServer(std::shared_ptr<grpc::ServerCredentials> credentials) {
  // Process-wide gRPC settings; both calls are idempotent.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  AddReflectionV1(&builder);  // grpc.reflection.v1 next to the plugin's v1alpha
  if (!options_.listen.empty()) {
    builder.AddListeningPort(options_.listen, credentials, &port_);
  }
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || (!options_.listen.empty() && port_ == 0)) {
    return ListenError(options_.listen, options_.tls);
  }
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(kServiceName, true);
  health->SetServingStatus(true);
  LOG(INFO) << "hapi-optimizer serving on port " << port_ << " (" << DescribeTls(options_.tls)
            << "), repository " << options_.repository << ", state " << StatePath()
            << (admin_token_.empty() ? "" : ", operator token required");
  return absl::OkStatus();
}

std::shared_ptr<grpc::Channel> OptimizerProcess::InProcessChannel() {
  return server_->InProcessChannel(grpc::ChannelArguments());
}

void OptimizerProcess::Shutdown(absl::Duration grace) {
  if (server_) {
    server_->GetHealthCheckService()->SetServingStatus(false);
    server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
    server_->Wait();
    server_.reset();
  }
  jobs_.reset();
}

}  // namespace hapi
