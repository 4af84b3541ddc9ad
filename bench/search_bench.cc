// hapi-bench-search: the design-space exploration compared. For >= 20 latency
// budgets from the fastest design to the full network, runs the exhaustive
// reference, the efficient search ("hapi"), and random search and simulated
// annealing given the same number of evaluated designs as hapi; prints
// accuracy, gap to the optimum, designs evaluated and time. Torch-free: reads
// the model's manifest and validation table and a device profile.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/model_and_device.h"
#include "core/design_search.h"
#include "core/files.h"
#include "core/latency_model.h"
#include "core/latency_statistic.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/sla.h"
#include "core/status_macros.h"

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

// The flags, read once in main.
struct SearchBenchOptions {
  std::string repository;
  std::string model;
  std::string profile;  // required
  std::string statistic;
  int budgets = 20;
  int grid = 64;
  bool per_exit = true;
  std::string markdown_out;  // empty: stdout only
};

// Owned here because every SearchProblem points into it.
struct SearchInputs : hapi::bench::ModelAndDevice {
  hapi::LatencyStatistic statistic;
};

// The latencies the budgets span.
struct BudgetRange {
  double fastest_s = 0;
  double slowest_s = 0;
};

struct Searches {
  std::unique_ptr<hapi::DesignSearch> exhaustive, hapi, random, annealing;
};

// One budget's outcome. The baselines and per-exit search may find no design
// within the budget: their accuracy is then -1.
struct BudgetRow {
  double budget_s = 0;
  hapi::SearchResult exhaustive, hapi;
  double random_acc = -1, annealing_acc = -1, per_exit_acc = -1;
};

// Accumulated over the sweep for the summary.
struct SweepTotals {
  double exhaustive_s = 0, hapi_s = 0, worst_gap = 0;
  int64_t exhaustive_evals = 0, hapi_evals = 0;
  int hapi_worse_than_baseline = 0;
};

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "hapi-bench-search: %s\n", std::string(s.message()).c_str());
  return 1;
}

absl::StatusOr<SearchInputs> LoadInputs(const SearchBenchOptions& o) {
  HAPI_ASSIGN_OR_RETURN(hapi::bench::ModelAndDevice loaded,
                        hapi::bench::LoadModelAndDevice(o.repository, o.model, o.profile));
  HAPI_ASSIGN_OR_RETURN(hapi::LatencyStatistic statistic, hapi::ParseLatencyStatistic(o.statistic));
  return SearchInputs{std::move(loaded), statistic};
}

// The problem every budget shares; it points into `in`.
hapi::SearchProblem BaseProblem(const SearchInputs& in, int grid) {
  hapi::SearchProblem base;
  base.table = &in.meta.validation;
  base.latency = &in.latency;
  base.space = hapi::DefaultSearchSpace(in.meta.validation, hapi::ExitPolicy::kMaxSoftmax, grid);
  base.sla.statistic = in.statistic;
  base.sla.objective = hapi::SlaObjective::kMaxAccuracy;
  return base;
}

// The fastest shared-threshold design of the space, found by brute force so
// that the lowest budget is the tightest one any design meets; the slowest is
// the full network.
BudgetRange SweepRange(const hapi::SearchProblem& base) {
  hapi::DesignEvaluator probe(*base.table, *base.latency, base.space);
  const hapi::LatencyStatistic statistic = base.sla.statistic;
  BudgetRange range;
  range.fastest_s = 1e9;
  const int k = static_cast<int>(base.space.candidate_exits.size());
  for (int mask = 0; mask < (1 << k); ++mask) {
    std::vector<int> exits;
    for (int i = 0; i < k; ++i) {
      if (mask & (1 << i)) exits.push_back(base.space.candidate_exits[i]);
    }
    for (int t = 0; t < probe.grid_size(); ++t) {
      std::vector<int> th(exits.size(), t);
      range.fastest_s =
          std::min(range.fastest_s, hapi::StatisticOf(probe.Evaluate(exits, th), statistic));
      // Without exits the threshold changes nothing.
      if (exits.empty()) break;
    }
  }
  range.slowest_s = hapi::StatisticOf(probe.Evaluate({}, {}), statistic);
  return range;
}

// Prints the space's size and the column header; returns the markdown
// preamble and table header.
std::string StartTable(const hapi::SearchProblem& base, const BudgetRange& range) {
  const int k = static_cast<int>(base.space.candidate_exits.size());
  const absl::string_view statistic = hapi::LatencyStatisticName(base.sla.statistic);
  std::printf(
      "%d candidate exits, %zu thresholds: %lld shared-threshold designs; %s budgets "
      "%.3f..%.3f ms\n",
      k, base.space.thresholds.size(),
      static_cast<long long>((int64_t{1} << k) - 1) *
              static_cast<long long>(base.space.thresholds.size()) +
          1,
      statistic.data(), range.fastest_s * 1e3, range.slowest_s * 1e3);
  std::printf("%9s %9s %9s %7s %9s %9s %9s %7s %9s %8s\n", "budget_ms", "exh_acc", "hapi_acc",
              "gap", "rand_acc", "sa_acc", "perexit", "evals", "exh_ms", "hapi_ms");
  return absl::StrFormat(
      "%s latency budgets, shared threshold, %d candidate exits x %d thresholds.\n\n"
      "| budget ms | exhaustive acc | hapi acc | gap pts | random acc | annealing acc | "
      "per-exit acc | hapi evals | exhaustive ms | hapi ms |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n",
      statistic, k, static_cast<int>(base.space.thresholds.size()));
}

double AccuracyOf(const absl::StatusOr<hapi::SearchResult>& r) {
  return r.ok() ? r->prediction.accuracy : -1.0;
}

// Budget `b` of the sweep. The baselines get as many evaluated designs as
// hapi needed, and a seed per budget so that runs repeat.
absl::StatusOr<BudgetRow> RunBudget(const hapi::SearchProblem& base, const Searches& searches,
                                    double budget_s, int b, bool per_exit) {
  hapi::SearchProblem problem = base;
  problem.sla.latency_budget_s = budget_s;
  BudgetRow row;
  row.budget_s = budget_s;
  HAPI_ASSIGN_OR_RETURN(row.exhaustive, searches.exhaustive->Search(problem));
  HAPI_ASSIGN_OR_RETURN(row.hapi, searches.hapi->Search(problem));
  problem.evaluation_budget = row.hapi.stats.designs_evaluated;
  problem.seed = 1000 + b;
  row.random_acc = AccuracyOf(searches.random->Search(problem));
  row.annealing_acc = AccuracyOf(searches.annealing->Search(problem));
  if (per_exit) {
    problem.space.per_exit_thresholds = true;
    row.per_exit_acc = AccuracyOf(searches.hapi->Search(problem));
  }
  return row;
}

// Adds the row to the totals and prints it on stdout and in the markdown.
void ReportBudget(const BudgetRow& row, SweepTotals* totals, std::string* md) {
  const hapi::SearchResult& ex = row.exhaustive;
  const hapi::SearchResult& hp = row.hapi;
  const double gap = 100 * (ex.prediction.accuracy - hp.prediction.accuracy);
  totals->worst_gap = std::max(totals->worst_gap, gap);
  if (hp.prediction.accuracy < std::max(row.random_acc, row.annealing_acc)) {
    ++totals->hapi_worse_than_baseline;
  }
  totals->exhaustive_s += ex.stats.seconds;
  totals->hapi_s += hp.stats.seconds;
  totals->exhaustive_evals += ex.stats.designs_evaluated;
  totals->hapi_evals += hp.stats.designs_evaluated;
  std::printf("%9.3f %8.2f%% %8.2f%% %7.2f %8.2f%% %8.2f%% %8.2f%% %7lld %9.1f %8.1f\n",
              row.budget_s * 1e3, 100 * ex.prediction.accuracy, 100 * hp.prediction.accuracy, gap,
              100 * row.random_acc, 100 * row.annealing_acc, 100 * row.per_exit_acc,
              static_cast<long long>(hp.stats.designs_evaluated), ex.stats.seconds * 1e3,
              hp.stats.seconds * 1e3);
  std::fflush(stdout);
  absl::StrAppendFormat(
      md, "| %.3f | %.2f%% | %.2f%% | %.2f | %.2f%% | %.2f%% | %.2f%% | %d | %.1f | %.1f |\n",
      row.budget_s * 1e3, 100 * ex.prediction.accuracy, 100 * hp.prediction.accuracy, gap,
      100 * row.random_acc, 100 * row.annealing_acc, 100 * row.per_exit_acc,
      hp.stats.designs_evaluated, ex.stats.seconds * 1e3, hp.stats.seconds * 1e3);
}

std::string Summary(const SweepTotals& t) {
  return absl::StrFormat(
      "\nSweep: exhaustive %.2f s (%lld designs), hapi %.3f s (%lld designs): %.0fx faster, "
      "%.1fx fewer designs. Worst gap to the exhaustive optimum: %.2f points. Budgets where "
      "random search or annealing (same design count) beat hapi: %d.\n",
      t.exhaustive_s, static_cast<long long>(t.exhaustive_evals), t.hapi_s,
      static_cast<long long>(t.hapi_evals), t.exhaustive_s / t.hapi_s,
      static_cast<double>(t.exhaustive_evals) / t.hapi_evals, t.worst_gap,
      t.hapi_worse_than_baseline);
}

absl::Status BenchSearch(const SearchBenchOptions& o) {
  HAPI_ASSIGN_OR_RETURN(const SearchInputs inputs, LoadInputs(o));
  const hapi::SearchProblem base = BaseProblem(inputs, o.grid);
  const BudgetRange range = SweepRange(base);
  const int budgets = std::max(2, o.budgets);
  const Searches searches{*hapi::MakeDesignSearch("exhaustive"), *hapi::MakeDesignSearch("hapi"),
                          *hapi::MakeDesignSearch("random"), *hapi::MakeDesignSearch("annealing")};

  std::string md = StartTable(base, range);
  SweepTotals totals;
  for (int b = 0; b < budgets; ++b) {
    const double budget_s =
        range.fastest_s + (range.slowest_s - range.fastest_s) * b / (budgets - 1);
    HAPI_ASSIGN_OR_RETURN(BudgetRow row, RunBudget(base, searches, budget_s, b, o.per_exit));
    ReportBudget(row, &totals, &md);
  }
  const std::string summary = Summary(totals);
  std::printf("%s", summary.c_str());
  md += summary;
  if (o.markdown_out.empty()) return absl::OkStatus();
  return hapi::WriteGeneratedSection(o.markdown_out, md);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  SearchBenchOptions options;
  options.repository = absl::GetFlag(FLAGS_repository);
  options.model = absl::GetFlag(FLAGS_model);
  options.profile = absl::GetFlag(FLAGS_profile);
  options.statistic = absl::GetFlag(FLAGS_statistic);
  options.budgets = absl::GetFlag(FLAGS_budgets);
  options.grid = absl::GetFlag(FLAGS_grid);
  options.per_exit = absl::GetFlag(FLAGS_per_exit);
  options.markdown_out = absl::GetFlag(FLAGS_markdown_out);
  if (absl::Status st = BenchSearch(options); !st.ok()) return Fail(st);
  return 0;
}
