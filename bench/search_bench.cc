// hapi-bench-search: the design-space exploration compared. For >= 20 latency
// budgets from the fastest design to the full network, runs the exhaustive
// reference, the efficient search ("hapi"), and random search and simulated
// annealing given the same number of evaluated designs as hapi; prints
// accuracy, gap to the optimum, designs evaluated and time. Torch-free: reads
// the model's manifest and validation table and a device profile.
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/design_search.h"
#include "core/files.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"

ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, model, "fmnist-resnet", "Model");
ABSL_FLAG(std::string, profile, "", "Device profile (hapi-profile output); required");
ABSL_FLAG(std::string, statistic, "mean", "Latency statistic the budgets bound");
ABSL_FLAG(int32_t, budgets, 20, "Number of budgets in the sweep");
ABSL_FLAG(int32_t, grid, 64, "Threshold grid size");
ABSL_FLAG(bool, per_exit, true, "Also run hapi with per-exit thresholds");
ABSL_FLAG(std::string, markdown_out, "",
          "Also write the table as markdown into this file's generated section (a new file "
          "holds just the table); the text around the section is kept");

namespace {
int Fail(const absl::Status& s) {
  std::fprintf(stderr, "hapi-bench-search: %s\n", std::string(s.message()).c_str());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto meta = hapi::LoadModelMetadata(
      hapi::RepositoryLayout(absl::GetFlag(FLAGS_repository)).ModelDir(absl::GetFlag(FLAGS_model)));
  if (!meta.ok()) return Fail(meta.status());
  hapi::v1::DeviceProfile profile;
  if (absl::GetFlag(FLAGS_profile).empty()) {
    return Fail(absl::InvalidArgumentError("--profile is required"));
  }
  if (auto st = hapi::ReadTextProto(absl::GetFlag(FLAGS_profile), &profile); !st.ok()) {
    return Fail(st);
  }
  auto latency = hapi::LatencyModel::Create(profile, meta->manifest);
  if (!latency.ok()) return Fail(latency.status());
  auto statistic = hapi::ParseLatencyStatistic(absl::GetFlag(FLAGS_statistic));
  if (!statistic.ok()) return Fail(statistic.status());

  hapi::SearchProblem base;
  base.table = &meta->validation;
  base.latency = &*latency;
  base.space = hapi::DefaultSearchSpace(meta->validation, hapi::ExitPolicy::kMaxSoftmax,
                                        absl::GetFlag(FLAGS_grid));
  base.sla.statistic = *statistic;
  base.sla.objective = hapi::SlaObjective::kMaxAccuracy;

  // Range of the sweep: the fastest design of the space .. the full network.
  hapi::DesignEvaluator probe(meta->validation, *latency, base.space);
  double fastest = 1e9;
  const int k = static_cast<int>(base.space.candidate_exits.size());
  for (int mask = 0; mask < (1 << k); ++mask) {
    std::vector<int> exits;
    for (int i = 0; i < k; ++i) {
      if (mask & (1 << i)) exits.push_back(base.space.candidate_exits[i]);
    }
    for (int t = 0; t < probe.grid_size(); ++t) {
      std::vector<int> th(exits.size(), t);
      fastest = std::min(fastest, hapi::StatisticOf(probe.Evaluate(exits, th), *statistic));
      if (exits.empty()) break;
    }
  }
  const double slowest = hapi::StatisticOf(probe.Evaluate({}, {}), *statistic);
  const int budgets = std::max(2, absl::GetFlag(FLAGS_budgets));

  auto exhaustive = *hapi::MakeDesignSearch("exhaustive");
  auto hapi_search = *hapi::MakeDesignSearch("hapi");
  auto random = *hapi::MakeDesignSearch("random");
  auto annealing = *hapi::MakeDesignSearch("annealing");

  std::printf(
      "%d candidate exits, %zu thresholds: %lld shared-threshold designs; %s budgets "
      "%.3f..%.3f ms\n",
      k, base.space.thresholds.size(),
      static_cast<long long>((int64_t{1} << k) - 1) *
              static_cast<long long>(base.space.thresholds.size()) +
          1,
      hapi::LatencyStatisticName(*statistic).data(), fastest * 1e3, slowest * 1e3);
  std::string md = absl::StrFormat(
      "%s latency budgets, shared threshold, %d candidate exits x %d thresholds.\n\n"
      "| budget ms | exhaustive acc | hapi acc | gap pts | random acc | annealing acc | "
      "per-exit acc | hapi evals | exhaustive ms | hapi ms |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n",
      hapi::LatencyStatisticName(*statistic), k, static_cast<int>(base.space.thresholds.size()));
  std::printf("%9s %9s %9s %7s %9s %9s %9s %7s %9s %8s\n", "budget_ms", "exh_acc", "hapi_acc",
              "gap", "rand_acc", "sa_acc", "perexit", "evals", "exh_ms", "hapi_ms");
  double total_exhaustive_s = 0, total_hapi_s = 0, worst_gap = 0;
  int64_t total_exhaustive_evals = 0, total_hapi_evals = 0;
  int hapi_worse_than_baseline = 0;
  auto acc_of = [](const absl::StatusOr<hapi::SearchResult>& r) {
    return r.ok() ? r->prediction.accuracy : -1.0;
  };
  for (int b = 0; b < budgets; ++b) {
    hapi::SearchProblem problem = base;
    problem.sla.latency_budget_s = fastest + (slowest - fastest) * b / (budgets - 1);
    auto ex = exhaustive->Search(problem);
    auto hp = hapi_search->Search(problem);
    if (!ex.ok()) return Fail(ex.status());
    if (!hp.ok()) return Fail(hp.status());
    problem.evaluation_budget = hp->stats.designs_evaluated;
    problem.seed = 1000 + b;
    auto rs = random->Search(problem);
    auto sa = annealing->Search(problem);
    double per_exit_acc = -1;
    if (absl::GetFlag(FLAGS_per_exit)) {
      hapi::SearchProblem pe = problem;
      pe.space.per_exit_thresholds = true;
      auto r = hapi_search->Search(pe);
      per_exit_acc = acc_of(r);
    }
    double gap = 100 * (ex->prediction.accuracy - hp->prediction.accuracy);
    worst_gap = std::max(worst_gap, gap);
    if (hp->prediction.accuracy < std::max(acc_of(rs), acc_of(sa))) ++hapi_worse_than_baseline;
    total_exhaustive_s += ex->stats.seconds;
    total_hapi_s += hp->stats.seconds;
    total_exhaustive_evals += ex->stats.designs_evaluated;
    total_hapi_evals += hp->stats.designs_evaluated;
    std::printf("%9.3f %8.2f%% %8.2f%% %7.2f %8.2f%% %8.2f%% %8.2f%% %7lld %9.1f %8.1f\n",
                problem.sla.latency_budget_s * 1e3, 100 * ex->prediction.accuracy,
                100 * hp->prediction.accuracy, gap, 100 * acc_of(rs), 100 * acc_of(sa),
                100 * per_exit_acc, static_cast<long long>(hp->stats.designs_evaluated),
                ex->stats.seconds * 1e3, hp->stats.seconds * 1e3);
    std::fflush(stdout);
    absl::StrAppendFormat(
        &md, "| %.3f | %.2f%% | %.2f%% | %.2f | %.2f%% | %.2f%% | %.2f%% | %d | %.1f | %.1f |\n",
        problem.sla.latency_budget_s * 1e3, 100 * ex->prediction.accuracy,
        100 * hp->prediction.accuracy, gap, 100 * acc_of(rs), 100 * acc_of(sa), 100 * per_exit_acc,
        hp->stats.designs_evaluated, ex->stats.seconds * 1e3, hp->stats.seconds * 1e3);
  }
  std::string summary = absl::StrFormat(
      "\nSweep: exhaustive %.2f s (%lld designs), hapi %.3f s (%lld designs): %.0fx faster, "
      "%.1fx fewer designs. Worst gap to the exhaustive optimum: %.2f points. Budgets where "
      "random search or annealing (same design count) beat hapi: %d.\n",
      total_exhaustive_s, static_cast<long long>(total_exhaustive_evals), total_hapi_s,
      static_cast<long long>(total_hapi_evals), total_exhaustive_s / total_hapi_s,
      static_cast<double>(total_exhaustive_evals) / total_hapi_evals, worst_gap,
      hapi_worse_than_baseline);
  std::printf("%s", summary.c_str());
  md += summary;
  if (!absl::GetFlag(FLAGS_markdown_out).empty()) {
    if (auto st = hapi::WriteGeneratedSection(absl::GetFlag(FLAGS_markdown_out), md); !st.ok()) {
      return Fail(st);
    }
  }
  return 0;
}
