// hapi-optimizer: the hapi.v1.Optimizer gRPC service.
#include <csignal>
#include <filesystem>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/files.h"
#include "glog/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "optimizer/job_manager.h"
#include "optimizer/metrics.h"
#include "optimizer/optimizer_service.h"
#include "optimizer/state_store.h"
#include "optimizer/variant_builder.h"
#include "rpc/process.h"
#include "prometheus/registry.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50052", "gRPC listen address");
ABSL_FLAG(std::string, repository, "repository", "Repository root (models/, devices/, variants/)");
ABSL_FLAG(std::string, state, "", "SQLite state file (default: <repository>/optimizer.db)");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9102", "Prometheus /metrics address (empty: off)");
ABSL_FLAG(int32_t, workers, 1, "Variant jobs run at the same time");
ABSL_FLAG(int32_t, max_pending, 16, "Queued jobs beyond which CreateVariant is refused");
ABSL_FLAG(int32_t, threshold_grid, 64, "Thresholds per exit in the search grid");
ABSL_FLAG(std::string, admin_token, "", "Token required on mutating RPCs (empty: none)");
ABSL_FLAG(std::string, admin_token_file, "", "Read the admin token from this file");
ABSL_FLAG(std::string, gnuplot, "gnuplot", "gnuplot binary for Pareto plots (empty: no plots)");
ABSL_FLAG(std::string, profiler, "",
          "hapi-profile binary for measure_locally registrations (default: next to this binary)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Serves hapi.v1.Optimizer: device profiles, variant jobs, variants.");
  absl::ParseCommandLine(argc, argv);
  hapi::BlockTerminationSignals();  // before any thread starts
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  const std::string repository = absl::GetFlag(FLAGS_repository);
  absl::StatusOr<std::string> resolved =
      hapi::ResolveToken(absl::GetFlag(FLAGS_admin_token), absl::GetFlag(FLAGS_admin_token_file));
  if (!resolved.ok()) {
    LOG(ERROR) << resolved.status();
    return 1;
  }
  const std::string token = *resolved;
  for (const char* sub : {"/models", "/devices", "/variants"}) {
    if (absl::Status st = hapi::MakeDirectories(repository + sub); !st.ok()) {
      LOG(ERROR) << st;
      return 1;
    }
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  auto registry = std::make_shared<prometheus::Registry>();
  hapi::OptimizerMetrics metrics(*registry);
  auto exposer = hapi::StartMetrics(absl::GetFlag(FLAGS_metrics_address), registry);
  if (!exposer.ok()) {
    LOG(ERROR) << exposer.status();
    return 1;
  }

  const std::string state_path = absl::GetFlag(FLAGS_state).empty()
                                     ? repository + "/optimizer.db"
                                     : absl::GetFlag(FLAGS_state);
  auto store = hapi::StateStore::Open(state_path);
  if (!store.ok()) {
    LOG(ERROR) << store.status();
    return 1;
  }
  hapi::VariantBuilderOptions builder_options;
  builder_options.repository = repository;
  builder_options.threshold_grid = absl::GetFlag(FLAGS_threshold_grid);
  builder_options.gnuplot = absl::GetFlag(FLAGS_gnuplot);
  hapi::VariantBuilder builder(builder_options);
  if (absl::Status st = hapi::RecoverState(store->get(), builder.layout()); !st.ok()) {
    LOG(ERROR) << "recovering state: " << st;
    return 1;
  }
  hapi::JobManagerOptions job_options;
  job_options.workers = absl::GetFlag(FLAGS_workers);
  job_options.max_pending = absl::GetFlag(FLAGS_max_pending);
  auto jobs = std::make_unique<hapi::JobManager>(store->get(), &builder, &metrics, job_options);
  std::string profiler = absl::GetFlag(FLAGS_profiler);
  if (profiler.empty()) {
    std::error_code ec;
    auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) profiler = (self.parent_path() / "hapi-profile").string();
  }
  hapi::OptimizerService service(store->get(), jobs.get(), &builder, token, profiler);

  grpc::ServerBuilder server_builder;
  int port = 0;
  server_builder.AddListeningPort(absl::GetFlag(FLAGS_listen), grpc::InsecureServerCredentials(),
                                  &port);
  server_builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = server_builder.BuildAndStart();
  if (!server || port == 0) {
    LOG(ERROR) << "cannot listen on " << absl::GetFlag(FLAGS_listen);
    return 1;
  }
  auto* health = server->GetHealthCheckService();
  health->SetServingStatus("hapi.v1.Optimizer", true);
  health->SetServingStatus(true);
  LOG(INFO) << "hapi-optimizer serving on port " << port << ", repository " << repository
            << ", state " << state_path << (token.empty() ? "" : ", operator token required");

  absl::Notification shutdown;
  const int sig = hapi::WaitForTerminationSignal();
  shutdown.Notify();
  LOG(INFO) << "signal " << sig << ": shutting down";
  health->SetServingStatus(false);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  jobs.reset();  // cancels running jobs; they end CANCELLED
  return 0;
}
