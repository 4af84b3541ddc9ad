// hapi-bench-executor: the executor's speed. For the full network (final exit
// only) and an early-exit design: batch-1 latency (mean, p50, p99) and
// batched throughput with compaction, for each inference option (batch norm
// folded or not, channels-last), and how far batch-1 is from what the MAC
// count would allow at this CPU's GEMM rate.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_model.h"
#include "bench/common.h"
#include "core/executor.h"
#include "core/files.h"
#include "core/status_macros.h"
#include "model/profiler.h"
#include "model/torch_model.h"

ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, model, "fmnist-resnet", "Model");
ABSL_FLAG(std::string, data_dir, hapi::kDefaultFashionMnistDir, "Fashion-MNIST directory");
ABSL_FLAG(int32_t, threads, 1, "Intra-op threads");
ABSL_FLAG(int32_t, samples, 2000, "Test samples per measurement");
ABSL_FLAG(int32_t, batch, 64, "Batch size of the batched measurement");
ABSL_FLAG(std::vector<std::string>, exits, std::vector<std::string>({"1", "3", "5"}),
          "Early-exit design: enabled exits");
ABSL_FLAG(double, threshold, 0.95, "Early-exit design: shared max-softmax threshold");
ABSL_FLAG(std::string, markdown_out, "",
          "Also write the table as markdown into this file's generated section (a new file "
          "holds just the table); the text around the section is kept");

namespace {

// The flags, read once in main.
struct ExecutorBenchOptions {
  hapi::bench::ModelSource source;
  int threads = 1;
  int samples = 2000;
  int batch = 64;
  std::vector<std::string> exits;  // as given; parsed after the model loads
  double threshold = 0.95;
  std::string markdown_out;  // empty: stdout only
};

// Untimed requests before each batch-1 measurement.
constexpr int kWarmupRequests = 50;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "hapi-bench-executor: %s\n", std::string(s.message()).c_str());
  return 1;
}

absl::StatusOr<std::vector<int>> ParseExits(const std::vector<std::string>& flag) {
  std::vector<int> exits;
  for (const std::string& s : flag) {
    int e;
    if (!absl::SimpleAtoi(s, &e)) return absl::InvalidArgumentError("bad --exits");
    exits.push_back(e);
  }
  return exits;
}

struct Variant {
  std::string name;
  hapi::ModelOptions options;
};

std::vector<Variant> InferenceVariants() {
  hapi::ModelOptions unfused, fused, channels_last, onednn, onednn_cl, direct;
  for (auto* o : {&unfused, &fused, &channels_last, &onednn, &onednn_cl}) o->direct = false;
  for (auto* o : {&unfused, &fused, &channels_last}) o->onednn = false;
  unfused.fuse_batch_norm = false;
  unfused.channels_last = false;
  fused.channels_last = false;
  onednn.channels_last = false;
  return {{"LibTorch conv, BN separate", unfused},
          {"LibTorch conv, BN folded", fused},
          {"LibTorch conv, BN folded, NHWC", channels_last},
          {"oneDNN conv via LibTorch, BN folded", onednn},
          {"oneDNN conv via LibTorch, BN folded, NHWC", onednn_cl},
          {"direct oneDNN path (the default)", direct}};
}

// Prints the GEMM bound and the column header; returns the markdown preamble
// and table header.
std::string StartTable(const hapi::EarlyExitModel& model, const hapi::Design& early, int samples,
                       int batch) {
  const double gemm = hapi::MeasureGemmMacsPerSecond();
  const double macs = model.manifest().full_network_macs();
  const double ideal_s = macs / gemm;
  std::printf(
      "CPU GEMM rate at %d thread(s): %.1f GMAC/s; full network %.2f M MACs -> %.3f ms "
      "if convolutions ran at GEMM speed\n",
      hapi::IntraOpThreads(), gemm / 1e9, macs / 1e6, ideal_s * 1e3);
  std::printf("early-exit design: %s\n\n", hapi::DescribeDesign(early).c_str());
  std::printf("%-34s %-10s %8s %10s %10s %10s %12s\n", "inference", "design", "acc", "b1_mean_ms",
              "b1_p50_ms", "b1_p99_ms", "batched/s");
  return absl::StrFormat(
      "GEMM rate %.1f GMAC/s (%d thread(s)); full network %.2f M MACs = %.3f ms at GEMM "
      "speed. Early-exit design: %s. %d test samples.\n\n"
      "| inference | design | accuracy | b1 mean ms | b1 p50 ms | b1 p99 ms | b%d samples/s |\n"
      "|---|---|---|---|---|---|---|\n",
      gemm / 1e9, hapi::IntraOpThreads(), macs / 1e6, ideal_s * 1e3, hapi::DescribeDesign(early),
      samples, batch);
}

// Samples per second over whole batches of `batch` images (the rest left out).
absl::StatusOr<double> BatchedThroughput(const hapi::EarlyExitExecutor& executor,
                                         const std::vector<float>& pixels, int n, int batch) {
  double t0 = hapi::bench::Now();
  for (int begin = 0; begin + batch <= n; begin += batch) {
    auto r = executor.Run(
        pixels.data() + static_cast<size_t>(begin) * executor.model().input_size(), batch);
    if (!r.ok()) return r.status();
  }
  return (n / batch) * batch / (hapi::bench::Now() - t0);
}

struct DesignSpeed {
  hapi::bench::BatchOneTimes batch_one;
  double batched_per_second = 0;
};

absl::StatusOr<DesignSpeed> MeasureDesign(hapi::EarlyExitModel& model,
                                          const hapi::ModelOptions& options,
                                          const hapi::Design& design, const hapi::ImageSet& test,
                                          const std::vector<float>& pixels, int batch) {
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const hapi::Model> served,
                        hapi::MakeTorchModel(model, options));
  HAPI_ASSIGN_OR_RETURN(auto executor, hapi::EarlyExitExecutor::Create(served, design));
  DesignSpeed speed;
  HAPI_ASSIGN_OR_RETURN(speed.batch_one, hapi::bench::TimeBatchOne(*executor, pixels, test.labels,
                                                                   test.size(), kWarmupRequests));
  HAPI_ASSIGN_OR_RETURN(speed.batched_per_second,
                        BatchedThroughput(*executor, pixels, test.size(), batch));
  return speed;
}

// One row on stdout and in the markdown; `versus_full` is empty for the full
// network itself.
void ReportRow(const std::string& variant, const std::string& design, const DesignSpeed& speed,
               int n, const std::string& versus_full, std::string* md) {
  const hapi::bench::Stats& st = speed.batch_one.seconds;
  const double accuracy = 100.0 * speed.batch_one.correct / n;
  std::printf("%-34s %-10s %7.2f%% %10.3f %10.3f %10.3f %12.0f%s\n", variant.c_str(),
              design.c_str(), accuracy, st.mean * 1e3, st.p50 * 1e3, st.p99 * 1e3,
              speed.batched_per_second, versus_full.c_str());
  std::fflush(stdout);
  absl::StrAppendFormat(md, "| %s | %s | %.2f%% | %.3f | %.3f | %.3f | %.0f%s |\n", variant, design,
                        accuracy, st.mean * 1e3, st.p50 * 1e3, st.p99 * 1e3,
                        speed.batched_per_second, versus_full);
}

// The full network, then the early-exit design against it.
absl::Status BenchVariant(hapi::EarlyExitModel& model, const Variant& v, const hapi::Design& early,
                          const hapi::ImageSet& test, const std::vector<float>& pixels, int batch,
                          std::string* md) {
  HAPI_ASSIGN_OR_RETURN(DesignSpeed full, MeasureDesign(model, v.options, hapi::Design::FinalOnly(),
                                                        test, pixels, batch));
  ReportRow(v.name, "full", full, test.size(), "", md);
  HAPI_ASSIGN_OR_RETURN(DesignSpeed ee,
                        MeasureDesign(model, v.options, early, test, pixels, batch));
  ReportRow(v.name, "early-exit", ee, test.size(),
            absl::StrFormat(" (%.2fx latency, %.2fx throughput)",
                            full.batch_one.seconds.mean / ee.batch_one.seconds.mean,
                            ee.batched_per_second / full.batched_per_second),
            md);
  return absl::OkStatus();
}

absl::Status BenchExecutor(const ExecutorBenchOptions& o) {
  hapi::SetIntraOpThreads(o.threads);
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<hapi::EarlyExitModel> model,
                        hapi::bench::LoadRepositoryModel(o.source.repository, o.source.model));
  HAPI_ASSIGN_OR_RETURN(hapi::FashionMnist data, hapi::LoadFashionMnist(o.source.data_dir));
  data.test.Truncate(o.samples);
  const std::vector<float> pixels = hapi::bench::ToFloatPixels(data.test);
  HAPI_ASSIGN_OR_RETURN(std::vector<int> exits, ParseExits(o.exits));
  const hapi::Design early = hapi::Design::Shared(exits, static_cast<float>(o.threshold));

  std::string md = StartTable(*model, early, data.test.size(), o.batch);
  for (const Variant& v : InferenceVariants()) {
    HAPI_RETURN_IF_ERROR(BenchVariant(*model, v, early, data.test, pixels, o.batch, &md));
  }
  if (o.markdown_out.empty()) return absl::OkStatus();
  return hapi::WriteGeneratedSection(o.markdown_out, md);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  ExecutorBenchOptions options;
  options.source = {absl::GetFlag(FLAGS_repository), absl::GetFlag(FLAGS_model),
                    absl::GetFlag(FLAGS_data_dir)};
  options.threads = absl::GetFlag(FLAGS_threads);
  options.samples = absl::GetFlag(FLAGS_samples);
  options.batch = absl::GetFlag(FLAGS_batch);
  options.exits = absl::GetFlag(FLAGS_exits);
  options.threshold = absl::GetFlag(FLAGS_threshold);
  options.markdown_out = absl::GetFlag(FLAGS_markdown_out);
  if (absl::Status st = BenchExecutor(options); !st.ok()) return Fail(st);
  return 0;
}
