// hapi-server: serves hapi.v1.Inference (and the Open Inference Protocol) for
// one variant per model at a time, one model or several side by side, with
// progressive early exits, dynamic batching and hot swap.
#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/marshalling.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "core/device_profile.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "model/torch_model.h"
#include "rpc/process.h"
#include "server/inference_server.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC listen address");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain for TLS on the gRPC port (with --tls_key; empty: plaintext)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates: require client certificates signed by them (mutual TLS)");
ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, variant, "", "Variant to serve");
ABSL_FLAG(std::string, device, "",
          "Serve the newest variant built for this device, and swap in newer ones as they appear");
ABSL_FLAG(std::vector<std::string>, models, {},
          "Serve these models side by side, each its newest variant (for --device when set; "
          "'*': every model with one), each with its own queue, workers and hot swap, each "
          "watched for newer variants");
ABSL_FLAG(std::vector<std::string>, variants, {},
          "Serve these variants side by side, one per model (instead of --variant/--device)");
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
ABSL_FLAG(double, response_margin_ms, 0.2,
          "Time kept at the end of a call's deadline to send the answer: exits are chosen to "
          "finish this early, and a progressive call closes with its best exit by then");
ABSL_FLAG(int32_t, max_message_bytes, 4 << 20, "Largest request accepted");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9101",
          "Prometheus /metrics address, plain HTTP even with TLS (empty: off)");
ABSL_FLAG(std::string, admin_token, "", "Token required by LoadVariant (empty: none)");
ABSL_FLAG(std::string, admin_token_file, "", "Read the admin token from this file");
ABSL_FLAG(bool, fuse_batch_norm, true, "Fold batch norm into convolutions");
ABSL_FLAG(bool, channels_last, true, "NHWC (channels-last) activations");
ABSL_FLAG(std::string, precision, "variant",
          "variant: each variant in the precision the optimizer planned it for; fp32 or int8: "
          "every variant in that precision (int8 needs the ranges hapi-quantize wrote into the "
          "model's directory)");
ABSL_FLAG(double, monitor_fraction, 0.02,
          "Live accuracy monitor: the fraction of answered requests that also run through the "
          "whole network off the request path (0: the monitor, drift test and loop are off)");
ABSL_FLAG(int32_t, monitor_window, 2000, "Shadowed requests the disagreement bound covers");
ABSL_FLAG(double, monitor_confidence, 0.9, "One-sided confidence of the disagreement bound");
ABSL_FLAG(double, monitor_cpu_share, 0.1,
          "Most of one core the shadow passes may use (they also run at a lower priority, and "
          "a sample is skipped while requests wait in the queue)");
ABSL_FLAG(int32_t, drift_window, 1000, "Answers per drift test window");
ABSL_FLAG(double, drift_alpha, 0.001,
          "False-alarm rate of the drift test per window (Bonferroni over its two tests)");
ABSL_FLAG(std::string, loop, "alert",
          "When the bound exceeds the SLA or drift is detected: off, alert (log, count, "
          "record), or repair (re-plan on the shadowed requests with --optimizer, swap in)");
ABSL_FLAG(std::string, optimizer, "", "hapi-optimizer address (host:port) for --loop=repair");
ABSL_FLAG(int32_t, loop_min_samples, 1000,
          "Shadowed requests before the loop acts on the bound, or re-plans after drift");
ABSL_FLAG(int32_t, loop_cooldown_s, 60, "Seconds between two loop decisions");
ABSL_FLAG(bool, full_network, false,
          "Serve the variant's model without early exits (a baseline for measurements)");

namespace {

absl::StatusOr<hapi::InferenceServerOptions> OptionsFromFlags() {
  hapi::InferenceServerOptions o;
  o.listen = absl::GetFlag(FLAGS_listen);
  o.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  o.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  o.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  o.servables.repository = absl::GetFlag(FLAGS_repository);
  o.servables.load_model = hapi::LoadTorchModel;
  o.servables.model.fuse_batch_norm = absl::GetFlag(FLAGS_fuse_batch_norm);
  o.servables.model.channels_last = absl::GetFlag(FLAGS_channels_last);
  const std::string precision = absl::GetFlag(FLAGS_precision);
  if (precision != "variant") {
    absl::StatusOr<hapi::v1::Precision> p = hapi::ParsePrecision(precision);
    if (!p.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--precision must be variant, fp32 or int8, not '", precision, "'"));
    }
    o.servables.precision = *p;
  }
  o.servables.full_network = absl::GetFlag(FLAGS_full_network);
  o.variant = absl::GetFlag(FLAGS_variant);
  o.device = absl::GetFlag(FLAGS_device);
  o.models = absl::GetFlag(FLAGS_models);
  o.variants = absl::GetFlag(FLAGS_variants);
  const int sources =
      !o.variant.empty() + !(o.device.empty() && o.models.empty()) + !o.variants.empty();
  if (sources != 1) {
    return absl::InvalidArgumentError(
        "pass exactly one of --variant, --device (with or without --models), --models or "
        "--variants");
  }
  o.poll_interval = absl::Seconds(absl::GetFlag(FLAGS_poll_seconds));
  o.batcher.max_batch = std::max(1, absl::GetFlag(FLAGS_max_batch));
  o.batcher.max_wait = absl::Microseconds(absl::GetFlag(FLAGS_max_wait_ms) * 1000);
  o.batcher.queue_capacity = absl::GetFlag(FLAGS_queue_capacity);
  o.batcher.workers = absl::GetFlag(FLAGS_workers);
  o.batcher.run_inline = absl::GetFlag(FLAGS_run_inline);
  o.monitor.fraction = absl::GetFlag(FLAGS_monitor_fraction);
  o.monitor.window = absl::GetFlag(FLAGS_monitor_window);
  o.monitor.confidence = absl::GetFlag(FLAGS_monitor_confidence);
  o.monitor.cpu_share = absl::GetFlag(FLAGS_monitor_cpu_share);
  o.monitor.drift_window = absl::GetFlag(FLAGS_drift_window);
  o.monitor.drift_alpha = absl::GetFlag(FLAGS_drift_alpha);
  HAPI_ASSIGN_OR_RETURN(o.monitor.loop, hapi::ParseLoopMode(absl::GetFlag(FLAGS_loop)));
  o.monitor.optimizer = absl::GetFlag(FLAGS_optimizer);
  o.monitor.loop_min_samples = absl::GetFlag(FLAGS_loop_min_samples);
  o.monitor.cooldown = absl::Seconds(absl::GetFlag(FLAGS_loop_cooldown_s));
  o.service.response_margin =
      absl::Microseconds(std::max(0.0, absl::GetFlag(FLAGS_response_margin_ms)) * 1000);
  HAPI_ASSIGN_OR_RETURN(
      o.service.admin_token,
      hapi::ResolveToken(absl::GetFlag(FLAGS_admin_token), absl::GetFlag(FLAGS_admin_token_file)));
  o.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  o.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Serves hapi.v1.Inference: early-exit classification.");
  absl::ParseCommandLine(argc, argv);
  hapi::BlockTerminationSignals();  // before any thread starts
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  absl::StatusOr<hapi::InferenceServerOptions> options = OptionsFromFlags();
  if (!options.ok()) {
    LOG(ERROR) << options.status();
    return 2;
  }
  hapi::SetIntraOpThreads(absl::GetFlag(FLAGS_intra_op_threads));
  absl::StatusOr<std::unique_ptr<hapi::InferenceServer>> server =
      hapi::InferenceServer::Start(*std::move(options));
  if (!server.ok()) {
    LOG(ERROR) << "cannot serve: " << server.status();
    return 1;
  }
  const int sig = hapi::WaitForTerminationSignal();
  LOG(INFO) << "signal " << sig << ": shutting down";
  server->reset();
  return 0;
}
