// hapi-server: serves hapi.v1.Inference for one variant at a time, with
// progressive early exits, dynamic batching and hot swap.
#include <csignal>
#include <memory>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/synchronization/notification.h"
#include "core/files.h"
#include "glog/logging.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "model/executor.h"
#include "rpc/process.h"
#include "prometheus/registry.h"
#include "server/batcher.h"
#include "server/inference_service.h"
#include "server/metrics.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC listen address");
ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, variant, "", "Variant to serve");
ABSL_FLAG(std::string, device, "",
          "Serve the newest variant built for this device, and swap in newer ones as they appear");
ABSL_FLAG(int32_t, poll_seconds, 5, "With --device: how often to look for a newer variant");
ABSL_FLAG(int32_t, intra_op_threads, 1, "LibTorch intra-op threads (profile with the same)");
ABSL_FLAG(int32_t, max_batch, 1, "Largest batch (1: batching off)");
ABSL_FLAG(double, max_wait_ms, 0.0,
          "Longest wait for a batch to fill (0: a free worker takes whatever is queued at once, "
          "so batches form only under load)");
ABSL_FLAG(int32_t, queue_capacity, 256, "Queued requests beyond which requests are refused");
ABSL_FLAG(int32_t, workers, 1, "Batches executing at once");
ABSL_FLAG(bool, run_inline, true,
          "With batching off, run a request on the gRPC thread that received it when an "
          "execution slot is free (no hand-off to a worker thread)");
ABSL_FLAG(int32_t, max_message_bytes, 4 << 20, "Largest request accepted");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9101", "Prometheus /metrics address (empty: off)");
ABSL_FLAG(std::string, admin_token, "", "Token required by LoadVariant (empty: none)");
ABSL_FLAG(std::string, admin_token_file, "", "Read the admin token from this file");
ABSL_FLAG(bool, fuse_batch_norm, true, "Fold batch norm into convolutions");
ABSL_FLAG(bool, channels_last, true, "NHWC (channels-last) activations");
ABSL_FLAG(bool, full_network, false,
          "Serve the variant's model without early exits (a baseline for measurements)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Serves hapi.v1.Inference: early-exit classification.");
  absl::ParseCommandLine(argc, argv);
  hapi::BlockTerminationSignals();  // before any thread starts
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  const std::string repository = absl::GetFlag(FLAGS_repository);
  const std::string device = absl::GetFlag(FLAGS_device);
  if (absl::GetFlag(FLAGS_variant).empty() == device.empty()) {
    LOG(ERROR) << "pass exactly one of --variant or --device";
    return 2;
  }
  absl::StatusOr<std::string> resolved =
      hapi::ResolveToken(absl::GetFlag(FLAGS_admin_token), absl::GetFlag(FLAGS_admin_token_file));
  if (!resolved.ok()) {
    LOG(ERROR) << resolved.status();
    return 1;
  }
  const std::string token = *resolved;
  hapi::SetIntraOpThreads(absl::GetFlag(FLAGS_intra_op_threads));

  auto registry = std::make_shared<prometheus::Registry>();
  hapi::ServerMetrics metrics(*registry);
  auto exposer = hapi::StartMetrics(absl::GetFlag(FLAGS_metrics_address), registry);
  if (!exposer.ok()) {
    LOG(ERROR) << exposer.status();
    return 1;
  }

  hapi::ExecutorOptions executor_options;
  executor_options.fuse_batch_norm = absl::GetFlag(FLAGS_fuse_batch_norm);
  executor_options.channels_last = absl::GetFlag(FLAGS_channels_last);
  hapi::ServableManager servables(repository, executor_options, &metrics,
                                  absl::GetFlag(FLAGS_full_network));
  hapi::BatcherOptions batcher_options;
  batcher_options.max_batch = std::max(1, absl::GetFlag(FLAGS_max_batch));
  batcher_options.max_wait = absl::Microseconds(absl::GetFlag(FLAGS_max_wait_ms) * 1000);
  batcher_options.queue_capacity = absl::GetFlag(FLAGS_queue_capacity);
  batcher_options.workers = absl::GetFlag(FLAGS_workers);
  batcher_options.run_inline = absl::GetFlag(FLAGS_run_inline);
  auto batcher = std::make_unique<hapi::Batcher>(batcher_options);
  hapi::InferenceServiceOptions service_options;
  service_options.admin_token = token;
  hapi::InferenceService service(&servables, batcher.get(), service_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(absl::GetFlag(FLAGS_max_message_bytes));
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    LOG(ERROR) << "cannot listen on " << absl::GetFlag(FLAGS_listen);
    return 1;
  }
  auto* health = server->GetHealthCheckService();
  health->SetServingStatus(false);  // NOT_SERVING until a variant is loaded
  health->SetServingStatus("hapi.v1.Inference", false);
  LOG(INFO) << "hapi-server listening on port " << port;

  auto initial = device.empty() ? absl::StatusOr<std::string>(absl::GetFlag(FLAGS_variant))
                                : hapi::NewestVariantForDevice(repository, device);
  if (!initial.ok() || !servables.Load(*initial).ok()) {
    LOG(ERROR) << "no variant to serve: "
               << (initial.ok() ? "the variant failed to load (see above)" : initial.status().ToString());
    return 1;
  }
  health->SetServingStatus(true);
  health->SetServingStatus("hapi.v1.Inference", true);

  absl::Notification shutdown;
  std::thread watcher;
  if (!device.empty()) {
    watcher = std::thread([&] {
      while (!shutdown.WaitForNotificationWithTimeout(absl::Seconds(absl::GetFlag(FLAGS_poll_seconds)))) {
        auto newest = hapi::NewestVariantForDevice(repository, device);
        auto current = servables.current();
        if (newest.ok() && current && *newest != current->variant().id()) {
          LOG(INFO) << "newer variant " << *newest << " for device " << device;
          servables.Load(*newest).IgnoreError();  // failure logged; the old one keeps serving
        }
      }
    });
  }
  const int sig = hapi::WaitForTerminationSignal();
  shutdown.Notify();
  LOG(INFO) << "signal " << sig << ": shutting down";
  health->SetServingStatus(false);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (watcher.joinable()) watcher.join();
  batcher.reset();
  return 0;
}
