// hapi-validate-latency: profiles this machine, then for designs spanning the
// space predicts mean/p95 latency from the profile and the test calibration
// table, measures them with the real executor at batch 1 over the test split,
// and prints both side by side.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_model.h"
#include "bench/common.h"
#include "core/executor.h"
#include "core/exit_policy.h"
#include "core/files.h"
#include "core/latency_model.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "model/profiler.h"
#include "model/torch_model.h"

ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, model, "fmnist-resnet", "Model");
ABSL_FLAG(std::string, data_dir, hapi::kDefaultFashionMnistDir, "Fashion-MNIST directory");
ABSL_FLAG(int32_t, threads, 1, "Intra-op threads (profile and executor)");
ABSL_FLAG(int32_t, samples, 0, "Test samples to measure (0: all 10k)");
ABSL_FLAG(int32_t, profile_iterations, 400, "Profiler passes");
ABSL_FLAG(std::string, profile_out, "", "Also write the measured profile here");
ABSL_FLAG(std::string, variant, "",
          "Also validate this variant's design (repository/variants/<id>), e.g. the one the "
          "optimizer chose");
ABSL_FLAG(std::string, precision, "fp32",
          "fp32, or int8 (the model directory's int8 ranges, profiled in int8; predictions use "
          "its int8 calibration table, hapi-quantize)");
ABSL_FLAG(std::string, markdown_out, "",
          "Also write the table as markdown into this file's generated section (a new file "
          "holds just the table); the text around the section is kept");

namespace {

// The flags, read once in main.
struct ValidateOptions {
  hapi::bench::ModelSource source;
  int threads = 1;
  int samples = 0;  // 0: the whole test split
  int profile_iterations = 400;
  std::string profile_out;   // empty: not written
  std::string markdown_out;  // empty: stdout only
  std::string variant;       // empty: the fixed designs only
};

// The design of `variant` in `repository`.
absl::StatusOr<hapi::Design> VariantDesign(const std::string& repository,
                                           const std::string& variant) {
  hapi::v1::VariantManifest v;
  HAPI_RETURN_IF_ERROR(
      hapi::ReadTextProto(hapi::RepositoryLayout(repository).VariantManifest(variant), &v));
  hapi::Design design;
  design.exits.assign(v.enabled_exits().begin(), v.enabled_exits().end());
  design.thresholds.assign(v.thresholds().begin(), v.thresholds().end());
  HAPI_ASSIGN_OR_RETURN(
      design.policy,
      hapi::ParseExitPolicy(v.exit_policy().empty() ? "max_softmax" : v.exit_policy()));
  return design;
}

// Untimed requests before each measurement.
constexpr int kWarmupRequests = 50;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "hapi-validate-latency: %s\n", std::string(s.message()).c_str());
  return 1;
}

hapi::v1::Precision Precision(const hapi::bench::ModelSource& source) {
  return source.int8 ? hapi::v1::INT8 : hapi::v1::FP32;
}

// This machine's profile, measured now, and its latency model.
absl::StatusOr<hapi::LatencyModel> ProfileThisMachine(const hapi::bench::BenchModel& bench,
                                                      const ValidateOptions& o) {
  hapi::ProfilerOptions popts;
  popts.threads = o.threads;
  popts.iterations = o.profile_iterations;
  popts.precision = Precision(o.source);
  HAPI_ASSIGN_OR_RETURN(
      hapi::v1::DeviceProfile profile,
      hapi::ProfileDevice(bench.served, "this-machine", bench.data.validation, popts));
  if (!o.profile_out.empty()) {
    HAPI_RETURN_IF_ERROR(hapi::WriteTextProtoAtomically(o.profile_out, profile));
  }
  return hapi::LatencyModel::Create(profile, bench.model->manifest(), popts.precision);
}

// The first `n` samples of the model's test table in the precision served,
// so that prediction and measurement see the same samples.
absl::StatusOr<hapi::CalibrationTable> FirstTestSamples(const hapi::bench::ModelSource& source,
                                                        int n) {
  HAPI_ASSIGN_OR_RETURN(
      hapi::ModelMetadata meta,
      hapi::LoadModelMetadata(hapi::RepositoryLayout(source.repository).ModelDir(source.model)));
  const hapi::CalibrationTable* full = meta.Test(Precision(source));
  if (full == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("model '", source.model, "' has no int8 calibration tables (hapi-quantize)"));
  }
  std::vector<int> first(std::min(n, full->num_samples()));
  std::iota(first.begin(), first.end(), 0);
  return full->Subset(first);
}

// Designs from the shallowest to the deepest paths; `last` is the deepest
// early exit.
std::vector<std::pair<std::string, hapi::Design>> DesignsToValidate(int last) {
  std::vector<int> all, every_second;
  for (int e = 0; e <= last; ++e) {
    all.push_back(e);
    if (e % 2 == 0 || e == last) every_second.push_back(e);
  }
  return {
      {"final only", hapi::Design::FinalOnly()},
      {"exit 0 @0.90", hapi::Design::Shared({0}, 0.90f)},
      {"exits 1,3 @0.95", hapi::Design::Shared({1, 3}, 0.95f)},
      {"exits 2,5,7 @0.99", hapi::Design::Shared({2, 5, 7}, 0.99f)},
      {"every 2nd @0.90", hapi::Design::Shared(every_second, 0.90f)},
      {"all exits @0.80", hapi::Design::Shared(all, 0.80f)},
      {"all exits @0.999", hapi::Design::Shared(all, 0.999f)},
      {"exit 4 entropy @0.90", hapi::Design::Shared({4}, 0.90f, hapi::ExitPolicy::kEntropy)},
  };
}

// Predicts and measures one design; one row on stdout and in the markdown.
absl::Status ValidateDesign(const std::string& name, const hapi::Design& design,
                            const hapi::LatencyModel& latency, const hapi::CalibrationTable& table,
                            const hapi::bench::BenchModel& bench, const std::vector<float>& pixels,
                            std::string* md) {
  HAPI_ASSIGN_OR_RETURN(hapi::LatencyPrediction pred, latency.Predict(design, table));
  HAPI_ASSIGN_OR_RETURN(auto executor, hapi::EarlyExitExecutor::Create(bench.served, design));
  const int n = bench.data.test.size();
  HAPI_ASSIGN_OR_RETURN(
      hapi::bench::BatchOneTimes measured,
      hapi::bench::TimeBatchOne(*executor, pixels, bench.data.test.labels, n, kWarmupRequests));
  const hapi::bench::Stats& m = measured.seconds;
  const double accuracy = 100.0 * measured.correct / n;
  double err_mean = (pred.mean_s - m.mean) / m.mean, err_p95 = (pred.p95_s - m.p95) / m.p95;
  std::printf("%-24s %7.2f%% %9.3f %9.3f %+6.1f%% %9.3f %9.3f %+6.1f%%\n", name.c_str(), accuracy,
              pred.mean_s * 1e3, m.mean * 1e3, 100 * err_mean, pred.p95_s * 1e3, m.p95 * 1e3,
              100 * err_p95);
  std::fflush(stdout);
  absl::StrAppendFormat(md, "| %s | %.2f%% | %.3f | %.3f | %+.1f%% | %.3f | %.3f | %+.1f%% |\n",
                        name, accuracy, pred.mean_s * 1e3, m.mean * 1e3, 100 * err_mean,
                        pred.p95_s * 1e3, m.p95 * 1e3, 100 * err_p95);
  return absl::OkStatus();
}

absl::Status ValidateLatency(const ValidateOptions& o) {
  HAPI_ASSIGN_OR_RETURN(hapi::bench::BenchModel bench, hapi::bench::LoadBenchModel(o.source));
  if (o.samples > 0) bench.data.test.Truncate(o.samples);
  HAPI_ASSIGN_OR_RETURN(hapi::LatencyModel latency, ProfileThisMachine(bench, o));
  HAPI_ASSIGN_OR_RETURN(const hapi::CalibrationTable table,
                        FirstTestSamples(o.source, bench.data.test.size()));
  const std::vector<float> pixels = hapi::bench::ToFloatPixels(bench.data.test);

  std::string md =
      "| design | accuracy | pred mean ms | meas mean ms | err | pred p95 ms | meas p95 ms | err "
      "|\n"
      "|---|---|---|---|---|---|---|---|\n";
  std::printf("%-24s %8s %9s %9s %7s %9s %9s %7s\n", "design", "acc", "pred_mean", "meas_mean",
              "err", "pred_p95", "meas_p95", "err");
  auto designs = DesignsToValidate(bench.model->manifest().exits_size() - 2);
  if (!o.variant.empty()) {
    HAPI_ASSIGN_OR_RETURN(hapi::Design design, VariantDesign(o.source.repository, o.variant));
    designs.emplace_back("the variant (--variant)", design);
  }
  for (const auto& [name, design] : designs) {
    HAPI_RETURN_IF_ERROR(ValidateDesign(name, design, latency, table, bench, pixels, &md));
  }
  if (o.markdown_out.empty()) return absl::OkStatus();
  return hapi::WriteGeneratedSection(o.markdown_out, md);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  ValidateOptions options;
  options.source = {absl::GetFlag(FLAGS_repository), absl::GetFlag(FLAGS_model),
                    absl::GetFlag(FLAGS_data_dir)};
  const std::string precision = absl::GetFlag(FLAGS_precision);
  if (precision != "fp32" && precision != "int8") {
    return Fail(absl::InvalidArgumentError("--precision must be fp32 or int8"));
  }
  options.source.int8 = precision == "int8";
  options.threads = absl::GetFlag(FLAGS_threads);
  options.samples = absl::GetFlag(FLAGS_samples);
  options.profile_iterations = absl::GetFlag(FLAGS_profile_iterations);
  options.profile_out = absl::GetFlag(FLAGS_profile_out);
  options.markdown_out = absl::GetFlag(FLAGS_markdown_out);
  options.variant = absl::GetFlag(FLAGS_variant);
  if (absl::Status st = ValidateLatency(options); !st.ok()) return Fail(st);
  return 0;
}
