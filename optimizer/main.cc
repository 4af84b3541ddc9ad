// hapi-optimizer: the hapi.v1.Optimizer gRPC service.
#include <memory>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "optimizer/optimizer_process.h"
#include "rpc/process.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50052", "gRPC listen address");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain for TLS on the gRPC port (with --tls_key; empty: plaintext)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates: require client certificates signed by them (mutual TLS)");
ABSL_FLAG(std::string, repository, "repository", "Repository root (models/, devices/, variants/)");
ABSL_FLAG(std::string, state, "", "SQLite state file (default: <repository>/optimizer.db)");
ABSL_FLAG(std::string, metrics_address, "0.0.0.0:9102",
          "Prometheus /metrics address, plain HTTP even with TLS (empty: off)");
ABSL_FLAG(int32_t, workers, 1, "Variant jobs run at the same time");
ABSL_FLAG(int32_t, max_pending, 16, "Queued jobs beyond which CreateVariant is refused");
ABSL_FLAG(int32_t, threshold_grid, 64, "Thresholds per exit in the search grid");
ABSL_FLAG(double, certify_fraction, 0.4,
          "Share of the validation split held out to certify the chosen design's SLA (0: select "
          "on all of it, uncertified)");
ABSL_FLAG(int32_t, certify_candidates, 6,
          "Candidate designs searched with ever wider margins and certified in turn");
ABSL_FLAG(std::string, certify_multiplicity, "bonferroni",
          "How certifying several candidates keeps the confidence: fixed-sequence or bonferroni");
ABSL_FLAG(std::string, admin_token, "", "Token required on mutating RPCs (empty: none)");
ABSL_FLAG(std::string, admin_token_file, "", "Read the admin token from this file");
ABSL_FLAG(std::string, gnuplot, "gnuplot", "gnuplot binary for Pareto plots (empty: no plots)");
ABSL_FLAG(std::string, profiler, "hapi-profile",
          "hapi-profile binary for measure_locally registrations (a bare name is looked up on "
          "PATH; empty: refuse them)");

namespace {

absl::StatusOr<hapi::OptimizerOptions> OptionsFromFlags() {
  hapi::OptimizerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.repository = absl::GetFlag(FLAGS_repository);
  options.state = absl::GetFlag(FLAGS_state);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.workers = absl::GetFlag(FLAGS_workers);
  options.max_pending = absl::GetFlag(FLAGS_max_pending);
  options.threshold_grid = absl::GetFlag(FLAGS_threshold_grid);
  options.certify.certify_fraction = absl::GetFlag(FLAGS_certify_fraction);
  if (!(options.certify.certify_fraction >= 0 && options.certify.certify_fraction < 1)) {
    return absl::InvalidArgumentError("--certify_fraction must be in [0, 1)");
  }
  options.certify.candidates = absl::GetFlag(FLAGS_certify_candidates);
  HAPI_ASSIGN_OR_RETURN(options.certify.multiplicity,
                        hapi::ParseMultiplicity(absl::GetFlag(FLAGS_certify_multiplicity)));
  options.admin_token = absl::GetFlag(FLAGS_admin_token);
  options.admin_token_file = absl::GetFlag(FLAGS_admin_token_file);
  options.gnuplot = absl::GetFlag(FLAGS_gnuplot);
  options.profiler = absl::GetFlag(FLAGS_profiler);
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Serves hapi.v1.Optimizer: device profiles, variant jobs, variants.");
  absl::ParseCommandLine(argc, argv);
  hapi::BlockTerminationSignals();  // before any thread starts
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  absl::StatusOr<hapi::OptimizerOptions> options = OptionsFromFlags();
  if (!options.ok()) {
    LOG(ERROR) << options.status();
    return 1;
  }
  absl::StatusOr<std::unique_ptr<hapi::OptimizerProcess>> optimizer =
      hapi::OptimizerProcess::Create(*std::move(options));
  if (!optimizer.ok()) {
    LOG(ERROR) << optimizer.status();
    return 1;
  }
  const int sig = hapi::WaitForTerminationSignal();
  LOG(INFO) << "signal " << sig << ": shutting down";
  (*optimizer)->Shutdown();  // running jobs end CANCELLED
  return 0;
}
