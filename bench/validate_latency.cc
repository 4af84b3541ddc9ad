// hapi-validate-latency: profiles this machine, then for designs spanning the
// space predicts mean/p95 latency from the profile and the test calibration
// table, measures them with the real executor at batch 1 over the test split,
// and prints both side by side.
#include <cstdio>
#include <iostream>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/common.h"
#include "core/files.h"
#include "core/latency_model.h"
#include "core/executor.h"
#include "model/torch_model.h"
#include "model/profiler.h"

ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, model, "fmnist-resnet", "Model");
ABSL_FLAG(std::string, data_dir, hapi::kDefaultFashionMnistDir, "Fashion-MNIST directory");
ABSL_FLAG(int32_t, threads, 1, "Intra-op threads (profile and executor)");
ABSL_FLAG(int32_t, samples, 0, "Test samples to measure (0: all 10k)");
ABSL_FLAG(int32_t, profile_iterations, 400, "Profiler passes");
ABSL_FLAG(std::string, profile_out, "", "Also write the measured profile here");
ABSL_FLAG(std::string, markdown_out, "",
          "Also write the table as markdown into this file's generated section (a new file "
          "holds just the table); the text around the section is kept");

namespace {
int Fail(const absl::Status& s) {
  std::fprintf(stderr, "hapi-validate-latency: %s\n", std::string(s.message()).c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto loaded = hapi::EarlyExitModel::Load(
      absl::StrCat(absl::GetFlag(FLAGS_repository), "/models/", absl::GetFlag(FLAGS_model)));
  if (!loaded.ok()) return Fail(loaded.status());
  std::shared_ptr<hapi::EarlyExitModel> model = *std::move(loaded);
  auto served_or = hapi::MakeTorchModel(*model);
  if (!served_or.ok()) return Fail(served_or.status());
  std::shared_ptr<const hapi::Model> served = *std::move(served_or);
  auto data = hapi::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir));
  if (!data.ok()) return Fail(data.status());
  if (absl::GetFlag(FLAGS_samples) > 0) data->test.Truncate(absl::GetFlag(FLAGS_samples));

  hapi::ProfilerOptions popts;
  popts.threads = absl::GetFlag(FLAGS_threads);
  popts.iterations = absl::GetFlag(FLAGS_profile_iterations);
  auto profile = hapi::ProfileDevice(served, "this-machine", data->validation, popts);
  if (!profile.ok()) return Fail(profile.status());
  if (!absl::GetFlag(FLAGS_profile_out).empty()) {
    if (auto st = hapi::WriteTextProtoAtomically(absl::GetFlag(FLAGS_profile_out), *profile);
        !st.ok()) {
      return Fail(st);
    }
  }
  auto latency = hapi::LatencyModel::Create(*profile, model->manifest());
  if (!latency.ok()) return Fail(latency.status());

  // The test table, truncated like the measured split, so prediction and
  // measurement see the same samples.
  const hapi::CalibrationTable& full_table = model->test_table();
  const int n = data->test.size();
  hapi::CalibrationTable table(n, full_table.num_exits(), full_table.num_classes());
  for (int s = 0; s < n; ++s) {
    table.SetTrueLabel(s, full_table.true_label(s));
    for (int e = 0; e < full_table.num_exits(); ++e) {
      hapi::ExitScores sc;
      sc.label = full_table.predicted(e, s);
      for (int p = 0; p < hapi::kNumExitPolicies; ++p) {
        sc.scores[p] = full_table.score(static_cast<hapi::ExitPolicy>(p), e, s);
      }
      table.Set(e, s, sc);
    }
  }

  const int last = model->manifest().exits_size() - 2;  // deepest early exit
  std::vector<int> all, every_second;
  for (int e = 0; e <= last; ++e) {
    all.push_back(e);
    if (e % 2 == 0 || e == last) every_second.push_back(e);
  }
  const std::vector<std::pair<std::string, hapi::Design>> designs = {
      {"final only", hapi::Design::FinalOnly()},
      {"exit 0 @0.90", hapi::Design::Shared({0}, 0.90f)},
      {"exits 1,3 @0.95", hapi::Design::Shared({1, 3}, 0.95f)},
      {"exits 2,5,7 @0.99", hapi::Design::Shared({2, 5, 7}, 0.99f)},
      {"every 2nd @0.90", hapi::Design::Shared(every_second, 0.90f)},
      {"all exits @0.80", hapi::Design::Shared(all, 0.80f)},
      {"all exits @0.999", hapi::Design::Shared(all, 0.999f)},
      {"exit 4 entropy @0.90", hapi::Design::Shared({4}, 0.90f, hapi::ExitPolicy::kEntropy)},
  };

  std::vector<float> pixels = hapi::bench::ToFloatPixels(data->test);
  std::string md =
      "| design | accuracy | pred mean ms | meas mean ms | err | pred p95 ms | meas p95 ms | err |\n"
      "|---|---|---|---|---|---|---|---|\n";
  std::printf("%-24s %8s %9s %9s %7s %9s %9s %7s\n", "design", "acc", "pred_mean", "meas_mean",
              "err", "pred_p95", "meas_p95", "err");
  for (const auto& [name, design] : designs) {
    auto pred = latency->Predict(design, table);
    if (!pred.ok()) return Fail(pred.status());
    auto executor = hapi::EarlyExitExecutor::Create(served, design);
    if (!executor.ok()) return Fail(executor.status());
    for (int i = 0; i < 50; ++i) (void)(*executor)->Run(pixels.data() + (i % n) * 784, 1);
    std::vector<double> times;
    times.reserve(n);
    int correct = 0;
    for (int s = 0; s < n; ++s) {
      double t0 = hapi::bench::Now();
      auto r = (*executor)->Run(pixels.data() + static_cast<size_t>(s) * 784, 1);
      times.push_back(hapi::bench::Now() - t0);
      if (!r.ok()) return Fail(r.status());
      correct += (*r)[0].label == data->test.labels[s];
    }
    hapi::bench::Stats m = hapi::bench::Summarise(times);
    double err_mean = (pred->mean_s - m.mean) / m.mean, err_p95 = (pred->p95_s - m.p95) / m.p95;
    std::printf("%-24s %7.2f%% %9.3f %9.3f %+6.1f%% %9.3f %9.3f %+6.1f%%\n", name.c_str(),
                100.0 * correct / n, pred->mean_s * 1e3, m.mean * 1e3, 100 * err_mean,
                pred->p95_s * 1e3, m.p95 * 1e3, 100 * err_p95);
    std::fflush(stdout);
    absl::StrAppendFormat(&md, "| %s | %.2f%% | %.3f | %.3f | %+.1f%% | %.3f | %.3f | %+.1f%% |\n",
                          name, 100.0 * correct / n, pred->mean_s * 1e3, m.mean * 1e3,
                          100 * err_mean, pred->p95_s * 1e3, m.p95 * 1e3, 100 * err_p95);
  }
  if (!absl::GetFlag(FLAGS_markdown_out).empty()) {
    if (auto st = hapi::WriteGeneratedSection(absl::GetFlag(FLAGS_markdown_out), md); !st.ok()) {
      return Fail(st);
    }
  }
  return 0;
}
