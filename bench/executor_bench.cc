// hapi-bench-executor: the executor's speed. For the full network (final exit
// only) and an early-exit design: batch-1 latency (mean, p50, p99) and
// batched throughput with compaction, for each inference option (batch norm
// folded or not, channels-last), and how far batch-1 is from what the MAC
// count would allow at this CPU's GEMM rate.
#include <cstdio>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/common.h"
#include "core/files.h"
#include "core/executor.h"
#include "model/torch_model.h"
#include "model/profiler.h"

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
int Fail(const absl::Status& s) {
  std::fprintf(stderr, "hapi-bench-executor: %s\n", std::string(s.message()).c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  hapi::SetIntraOpThreads(absl::GetFlag(FLAGS_threads));
  auto loaded = hapi::EarlyExitModel::Load(
      absl::StrCat(absl::GetFlag(FLAGS_repository), "/models/", absl::GetFlag(FLAGS_model)));
  if (!loaded.ok()) return Fail(loaded.status());
  std::shared_ptr<hapi::EarlyExitModel> model = *std::move(loaded);
  auto data = hapi::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir));
  if (!data.ok()) return Fail(data.status());
  data->test.Truncate(absl::GetFlag(FLAGS_samples));
  const int n = data->test.size();
  std::vector<float> pixels = hapi::bench::ToFloatPixels(data->test);

  std::vector<int> exits;
  for (const std::string& s : absl::GetFlag(FLAGS_exits)) {
    int e;
    if (!absl::SimpleAtoi(s, &e)) return Fail(absl::InvalidArgumentError("bad --exits"));
    exits.push_back(e);
  }
  const hapi::Design early =
      hapi::Design::Shared(exits, static_cast<float>(absl::GetFlag(FLAGS_threshold)));
  struct Variant {
    std::string name;
    hapi::ModelOptions options;
  };
  hapi::ModelOptions unfused, fused, channels_last, onednn, onednn_cl;
  for (auto* o : {&unfused, &fused, &channels_last}) o->onednn = false;
  unfused.fuse_batch_norm = false;
  unfused.channels_last = false;
  fused.channels_last = false;
  onednn.channels_last = false;
  const std::vector<Variant> variants = {
      {"LibTorch conv, BN separate", unfused},
      {"LibTorch conv, BN folded", fused},
      {"LibTorch conv, BN folded, NHWC", channels_last},
      {"oneDNN conv, BN folded", onednn},
      {"oneDNN conv, BN folded, NHWC", onednn_cl}};

  const double gemm = hapi::MeasureGemmMacsPerSecond();
  const double ideal_s = model->manifest().full_network_macs() / gemm;
  std::printf("CPU GEMM rate at %d thread(s): %.1f GMAC/s; full network %.2f M MACs -> %.3f ms "
              "if convolutions ran at GEMM speed\n",
              hapi::IntraOpThreads(), gemm / 1e9, model->manifest().full_network_macs() / 1e6,
              ideal_s * 1e3);
  std::printf("early-exit design: %s\n\n", hapi::DescribeDesign(early).c_str());
  std::string md = absl::StrFormat(
      "GEMM rate %.1f GMAC/s (%d thread(s)); full network %.2f M MACs = %.3f ms at GEMM "
      "speed. Early-exit design: %s. %d test samples.\n\n"
      "| inference | design | accuracy | b1 mean ms | b1 p50 ms | b1 p99 ms | b%d samples/s |\n"
      "|---|---|---|---|---|---|---|\n",
      gemm / 1e9, hapi::IntraOpThreads(), model->manifest().full_network_macs() / 1e6,
      ideal_s * 1e3, hapi::DescribeDesign(early), n, absl::GetFlag(FLAGS_batch));
  std::printf("%-34s %-10s %8s %10s %10s %10s %12s\n", "inference", "design", "acc",
              "b1_mean_ms", "b1_p50_ms", "b1_p99_ms", "batched/s");
  for (const Variant& v : variants) {
    double full_mean = 0, full_tput = 0;
    for (const auto& [dname, design] :
         std::vector<std::pair<std::string, hapi::Design>>{{"full", hapi::Design::FinalOnly()},
                                                           {"early-exit", early}}) {
      auto served = hapi::MakeTorchModel(*model, v.options);
      if (!served.ok()) return Fail(served.status());
      auto executor = hapi::EarlyExitExecutor::Create(*served, design);
      if (!executor.ok()) return Fail(executor.status());
      for (int i = 0; i < 50; ++i) (void)(*executor)->Run(pixels.data() + (i % n) * 784, 1);
      std::vector<double> times;
      int correct = 0;
      for (int s = 0; s < n; ++s) {
        double t0 = hapi::bench::Now();
        auto r = (*executor)->Run(pixels.data() + static_cast<size_t>(s) * 784, 1);
        times.push_back(hapi::bench::Now() - t0);
        if (!r.ok()) return Fail(r.status());
        correct += (*r)[0].label == data->test.labels[s];
      }
      const int batch = absl::GetFlag(FLAGS_batch);
      double t0 = hapi::bench::Now();
      for (int begin = 0; begin + batch <= n; begin += batch) {
        auto r = (*executor)->Run(pixels.data() + static_cast<size_t>(begin) * 784, batch);
        if (!r.ok()) return Fail(r.status());
      }
      double tput = (n / batch) * batch / (hapi::bench::Now() - t0);
      hapi::bench::Stats st = hapi::bench::Summarise(times);
      if (dname == "full") {
        full_mean = st.mean;
        full_tput = tput;
      }
      std::string speed = dname == "full" ? ""
                                          : absl::StrFormat(" (%.2fx latency, %.2fx throughput)",
                                                            full_mean / st.mean, tput / full_tput);
      std::printf("%-34s %-10s %7.2f%% %10.3f %10.3f %10.3f %12.0f%s\n", v.name.c_str(),
                  dname.c_str(), 100.0 * correct / n, st.mean * 1e3, st.p50 * 1e3, st.p99 * 1e3,
                  tput, speed.c_str());
      std::fflush(stdout);
      absl::StrAppendFormat(&md, "| %s | %s | %.2f%% | %.3f | %.3f | %.3f | %.0f%s |\n", v.name,
                            dname, 100.0 * correct / n, st.mean * 1e3, st.p50 * 1e3,
                            st.p99 * 1e3, tput, speed);
    }
  }
  if (!absl::GetFlag(FLAGS_markdown_out).empty()) {
    if (auto st = hapi::WriteGeneratedSection(absl::GetFlag(FLAGS_markdown_out), md); !st.ok()) {
      return Fail(st);
    }
  }
  return 0;
}
