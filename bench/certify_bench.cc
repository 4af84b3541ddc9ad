// hapi-bench-certify: do certified SLAs hold on data the optimizer never saw?
// Sweeps SLAs (max drops, absolute accuracy floors, mean and p95 budgets) at
// one confidence; for each, chooses a design with certified selection
// (core/certify.h) on the validation split and reports the point estimate
// on validation, the certified bound, and what the design does on the test
// split, exactly, from the test calibration table (latencies: the device's
// latency model over the test samples' exit paths). Next to it, the search
// without certification (margins on the whole validation split) and the
// Bonferroni variant. Torch-free: reads the model's manifest and calibration
// tables and a device profile.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/model_and_device.h"
#include "core/certify.h"
#include "core/design_search.h"
#include "core/files.h"
#include "core/latency_model.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/sla.h"
#include "core/status_macros.h"

ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, model, "fmnist-resnet", "Model");
ABSL_FLAG(std::string, profile, "", "Device profile (hapi-profile output); required");
ABSL_FLAG(double, confidence, 0.9, "Accuracy and latency confidence of every SLA");
ABSL_FLAG(double, certify_fraction, 0.4, "Share of the validation split held out to certify");
ABSL_FLAG(int32_t, candidates, 6, "Candidates certified in turn");
ABSL_FLAG(std::string, multiplicity, "bonferroni",
          "Multiplicity correction of the table: bonferroni or fixed-sequence");
ABSL_FLAG(uint64_t, split_seed, hapi::CertifyOptions().split_seed,
          "Seed of the selection/certification split");
ABSL_FLAG(int32_t, budgets, 8, "Mean and p95 budgets each");
ABSL_FLAG(int32_t, grid, 64, "Threshold grid size");
ABSL_FLAG(std::string, markdown_out, "",
          "Also write the table into this file's generated section (a new file holds just the "
          "table); the text around the section is kept");

namespace {

using hapi::LatencyStatistic;
using hapi::Sla;
using hapi::SlaObjective;

struct BenchOptions {
  std::string repository, model, profile, markdown_out;
  double confidence = 0.9;
  int budgets = 8;
  int grid = 64;
  hapi::CertifyOptions certify;
};

using Inputs = hapi::bench::ModelAndDevice;

// One variant as the optimizer would publish it, judged on test.
struct Judged {
  bool ok = false;
  std::string error;  // !ok: why no variant
  hapi::CertifiedSearchResult r;
  hapi::LatencyPrediction on_test;
  bool holds = false;
};

struct Row {
  Sla sla;
  Judged certified, other, uncertified;  // other: the other multiplicity correction
};

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "hapi-bench-certify: %s\n", std::string(s.message()).c_str());
  return 1;
}

absl::StatusOr<Inputs> LoadInputs(const BenchOptions& o) {
  return hapi::bench::LoadModelAndDevice(o.repository, o.model, o.profile);
}

Sla Floor(double min_accuracy, double max_drop, LatencyStatistic statistic, double confidence) {
  Sla sla;
  sla.objective = SlaObjective::kMinLatency;
  sla.statistic = statistic;
  sla.min_accuracy = min_accuracy;
  sla.max_accuracy_drop = max_drop;
  sla.accuracy_confidence = sla.latency_confidence = confidence;
  return sla;
}

Sla Budget(double budget_s, LatencyStatistic statistic, double confidence) {
  Sla sla;
  sla.objective = SlaObjective::kMaxAccuracy;
  sla.statistic = statistic;
  sla.latency_budget_s = budget_s;
  sla.accuracy_confidence = sla.latency_confidence = confidence;
  return sla;
}

// Max drops, absolute floors, and budgets from just above the fastest path
// (every sample out at the first exit) to just below the full network.
std::vector<Sla> SweepSlas(const Inputs& in, const BenchOptions& o) {
  const double c = o.confidence;
  std::vector<Sla> slas;
  for (double drop : {0.0025, 0.005, 0.01, 0.02}) {
    slas.push_back(Floor(0, drop, LatencyStatistic::kMean, c));
  }
  for (double drop : {0.005, 0.01}) slas.push_back(Floor(0, drop, LatencyStatistic::kP95, c));
  for (double floor : {0.90, 0.91, 0.92, 0.93, 0.935, 0.94}) {
    slas.push_back(Floor(floor, -1, LatencyStatistic::kMean, c));
  }
  const double fastest = in.latency.PathLatency(hapi::Design::Shared({0}, 0.0f), 0);
  const double slowest = in.latency.PathLatency(hapi::Design::FinalOnly(), 0);
  for (LatencyStatistic stat : {LatencyStatistic::kMean, LatencyStatistic::kP95}) {
    for (int b = 0; b < o.budgets; ++b) {
      const double budget = fastest + (slowest - fastest) * (b + 0.5) / o.budgets;
      slas.push_back(Budget(budget, stat, c));
    }
  }
  return slas;
}

// Whether `on_test` keeps every promise of `sla` on the test split.
bool Holds(const Sla& sla, const hapi::LatencyPrediction& on_test, double test_final_accuracy) {
  bool holds = true;
  if (sla.objective == SlaObjective::kMinLatency) {
    holds = sla.max_accuracy_drop >= 0
                ? test_final_accuracy - on_test.accuracy <= sla.max_accuracy_drop + 1e-12
                : on_test.accuracy >= sla.min_accuracy;
  }
  if (sla.latency_budget_s > 0) {
    holds = holds && hapi::StatisticOf(on_test, sla.statistic) <= sla.latency_budget_s;
  }
  return holds;
}

Judged Judge(const Inputs& in, const hapi::DesignSearch& search, const hapi::SearchProblem& base,
             const Sla& sla, const hapi::CertifyOptions& options) {
  hapi::SearchProblem problem = base;
  problem.sla = sla;
  Judged j;
  absl::StatusOr<hapi::CertifiedSearchResult> r = SearchAndCertify(search, problem, options);
  if (!r.ok()) {
    j.error = std::string(r.status().message());
    return j;
  }
  absl::StatusOr<hapi::LatencyPrediction> on_test =
      in.latency.Predict(r->result.design, in.meta.test);
  if (!on_test.ok()) {
    j.error = std::string(on_test.status().message());
    return j;
  }
  j.ok = true;
  j.r = *std::move(r);
  j.on_test = *std::move(on_test);
  j.holds = Holds(sla, j.on_test, in.meta.test.Accuracy(in.meta.test.num_exits() - 1));
  return j;
}

// The SLA in a table cell: "drop <= 0.50 pts", "acc >= 93.00%", "p95 <= 0.412 ms".
std::string SlaCell(const Sla& sla) {
  if (sla.objective == SlaObjective::kMaxAccuracy) {
    return absl::StrFormat("max acc, %s <= %.3f ms", hapi::LatencyStatisticName(sla.statistic),
                           sla.latency_budget_s * 1e3);
  }
  const std::string stat(hapi::LatencyStatisticName(sla.statistic));
  return sla.max_accuracy_drop >= 0
             ? absl::StrFormat("min %s, drop <= %.2f pts", stat, 100 * sla.max_accuracy_drop)
             : absl::StrFormat("min %s, acc >= %.2f%%", stat, 100 * sla.min_accuracy);
}

// The constrained quantity: point estimate on validation, certified bound,
// observed on test.
std::string PromiseCells(const Sla& sla, const Judged& j, double val_final, double test_final) {
  const hapi::LatencyPrediction& p = j.r.result.prediction;
  const hapi::Certificate& c = j.r.certificate;
  if (sla.objective == SlaObjective::kMaxAccuracy) {
    return absl::StrFormat("%.3f ms | %.3f ms | %.3f ms (acc %.2f%% val, %.2f%% test)",
                           hapi::StatisticOf(p, sla.statistic) * 1e3, c.latency_upper_s * 1e3,
                           hapi::StatisticOf(j.on_test, sla.statistic) * 1e3, 100 * p.accuracy,
                           100 * j.on_test.accuracy);
  }
  // What the floor bought: the design's statistic on validation.
  const std::string latency =
      absl::StrFormat(" (%s %.3f ms)", hapi::LatencyStatisticName(sla.statistic),
                      hapi::StatisticOf(p, sla.statistic) * 1e3);
  if (sla.max_accuracy_drop >= 0) {
    return absl::StrFormat("%.2f pts%s | %.2f pts | %.2f pts", 100 * (val_final - p.accuracy),
                           latency, 100 * c.accuracy_drop_upper,
                           100 * (test_final - j.on_test.accuracy));
  }
  return absl::StrFormat("%.2f%%%s | %.2f%% | %.2f%%", 100 * p.accuracy, latency,
                         100 * c.accuracy_lower, 100 * j.on_test.accuracy);
}

std::string Verdict(const Judged& j) {
  if (!j.ok) return "refused";
  return j.holds ? "yes" : "**no**";
}

std::string TableRow(int i, const Row& row, const Inputs& in) {
  const Judged& j = row.certified;
  const int last = in.meta.test.num_exits() - 1;
  if (!j.ok) {
    return absl::StrFormat("| %d | %s | - | - | - | - | - | refused: %s | %s |\n", i + 1,
                           SlaCell(row.sla), j.error, Verdict(row.uncertified));
  }
  const hapi::Design& d = j.r.result.design;
  return absl::StrFormat(
      "| %d | %s | [%s] @ %s | %s | %s | %s | %s |\n", i + 1, SlaCell(row.sla),
      absl::StrJoin(d.exits, " "),
      d.thresholds.empty() ? "-" : absl::StrFormat("%.3f", d.thresholds[0]),
      j.r.certified ? (j.r.candidate < 0 ? "full net" : absl::StrCat("yes (", j.r.candidate, ")"))
                    : "**no**",
      PromiseCells(row.sla, j, in.meta.validation.Accuracy(last), in.meta.test.Accuracy(last)),
      Verdict(j), Verdict(row.uncertified));
}

// Counts of variants made, certified and holding on test, per method, and
// what they give: the mean validation statistic of the min-latency SLAs'
// designs and the mean validation accuracy of the max-accuracy SLAs'.
struct Tally {
  int made = 0, certified = 0, holds = 0;
  int min_latency = 0, max_accuracy = 0;
  double latency_s = 0, accuracy = 0;
  void Add(const Sla& sla, const Judged& j) {
    made += j.ok;
    certified += j.ok && j.r.certified;
    holds += j.ok && j.holds;
    if (!j.ok) return;
    const hapi::LatencyPrediction& p = j.r.result.prediction;
    if (sla.objective == SlaObjective::kMinLatency) {
      ++min_latency;
      latency_s += hapi::StatisticOf(p, sla.statistic);
    } else {
      ++max_accuracy;
      accuracy += p.accuracy;
    }
  }
  std::string Describe(absl::string_view name, size_t slas) const {
    return absl::StrFormat(
        "%s: %d of %d SLAs hold on test (%d variants made, %d certified); min-latency SLAs: "
        "mean statistic %.3f ms; max-accuracy SLAs: mean accuracy %.2f%% (validation)",
        name, holds, slas, made, certified, 1e3 * latency_s / std::max(1, min_latency),
        100 * accuracy / std::max(1, max_accuracy));
  }
};

std::string Summary(const std::vector<Row>& rows, const BenchOptions& o) {
  Tally certified, other, uncertified;
  for (const Row& r : rows) {
    certified.Add(r.sla, r.certified);
    other.Add(r.sla, r.other);
    uncertified.Add(r.sla, r.uncertified);
  }
  const bool bonferroni = o.certify.multiplicity == hapi::Multiplicity::kBonferroni;
  return absl::StrCat(
      "\n* ",
      certified.Describe(bonferroni ? "Certified, Bonferroni" : "Certified, fixed-sequence",
                         rows.size()),
      ".\n* ",
      other.Describe(bonferroni ? "Certified, fixed-sequence" : "Certified, Bonferroni",
                     rows.size()),
      ".\n* ", uncertified.Describe("Uncertified (margins on all of validation)", rows.size()),
      ".\n");
}

std::string TableHeader(const Inputs& in, const BenchOptions& o) {
  const int last = in.meta.test.num_exits() - 1;
  return absl::StrFormat(
      "Confidence %.2f; %d validation samples, %.0f%% held out to certify (split seed %llu); %s "
      "over %d candidates. Full network: %.2f%% on validation, %.2f%% on test.\n\n"
      "| # | SLA | design (exits @ threshold) | certified (step) | predicted (val) | certified "
      "bound | observed (test) | holds | uncertified holds |\n"
      "|---|---|---|---|---|---|---|---|---|\n",
      o.confidence, in.meta.validation.num_samples(), 100 * o.certify.certify_fraction,
      static_cast<unsigned long long>(o.certify.split_seed),
      hapi::MultiplicityName(o.certify.multiplicity), o.certify.candidates,
      100 * in.meta.validation.Accuracy(last), 100 * in.meta.test.Accuracy(last));
}

absl::Status BenchCertify(const BenchOptions& o) {
  HAPI_ASSIGN_OR_RETURN(const Inputs in, LoadInputs(o));
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<hapi::DesignSearch> search, hapi::MakeDesignSearch("hapi"));
  hapi::SearchProblem base;
  base.table = &in.meta.validation;
  base.latency = &in.latency;
  base.space = hapi::DefaultSearchSpace(in.meta.validation, hapi::ExitPolicy::kMaxSoftmax, o.grid);
  hapi::CertifyOptions other = o.certify, off = o.certify;
  other.multiplicity = o.certify.multiplicity == hapi::Multiplicity::kBonferroni
                           ? hapi::Multiplicity::kFixedSequence
                           : hapi::Multiplicity::kBonferroni;
  off.certify_fraction = 0;
  std::vector<Row> rows;
  std::string md = TableHeader(in, o);
  for (const Sla& sla : SweepSlas(in, o)) {
    Row row{sla, Judge(in, *search, base, sla, o.certify), Judge(in, *search, base, sla, other),
            Judge(in, *search, base, sla, off)};
    md += TableRow(static_cast<int>(rows.size()), row, in);
    rows.push_back(std::move(row));
  }
  md += Summary(rows, o);
  std::printf("%s", md.c_str());
  if (o.markdown_out.empty()) return absl::OkStatus();
  return hapi::WriteGeneratedSection(o.markdown_out, md);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  BenchOptions o;
  o.repository = absl::GetFlag(FLAGS_repository);
  o.model = absl::GetFlag(FLAGS_model);
  o.profile = absl::GetFlag(FLAGS_profile);
  o.markdown_out = absl::GetFlag(FLAGS_markdown_out);
  o.confidence = absl::GetFlag(FLAGS_confidence);
  o.budgets = absl::GetFlag(FLAGS_budgets);
  o.grid = absl::GetFlag(FLAGS_grid);
  o.certify.certify_fraction = absl::GetFlag(FLAGS_certify_fraction);
  o.certify.candidates = absl::GetFlag(FLAGS_candidates);
  o.certify.split_seed = absl::GetFlag(FLAGS_split_seed);
  absl::StatusOr<hapi::Multiplicity> multiplicity =
      hapi::ParseMultiplicity(absl::GetFlag(FLAGS_multiplicity));
  if (!multiplicity.ok()) return Fail(multiplicity.status());
  o.certify.multiplicity = *multiplicity;
  if (absl::Status st = BenchCertify(o); !st.ok()) return Fail(st);
  return 0;
}
