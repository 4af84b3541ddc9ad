// hapi-evaluate: HAPI against other early-exit schemes and search mechanisms
// on this machine. Designs are chosen on the validation split with the
// latency model of this machine's measured profile; accuracy is reported on
// the test split (exactly, from the test calibration table, which the
// executor reproduces) and latency is MEASURED with the real executor at
// batch 1 on test images. Writes CSV tables, gnuplot figures and a markdown
// summary into --out.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/bench_model.h"
#include "bench/common.h"
#include "core/design_search.h"
#include "core/executor.h"
#include "core/files.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "model/profiler.h"
#include "model/torch_model.h"
#include "model/trainer.h"

ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, model, "fmnist-resnet", "Model");
ABSL_FLAG(std::string, data_dir, hapi::kDefaultFashionMnistDir, "Fashion-MNIST directory");
ABSL_FLAG(std::string, out, "docs/evaluation", "Output directory (CSV, SVG, markdown)");
ABSL_FLAG(int32_t, budgets, 20, "Budgets per sweep");
ABSL_FLAG(int32_t, measure_samples, 2000, "Test images timed per design");
ABSL_FLAG(int32_t, profile_iterations, 300, "Profiler passes");
ABSL_FLAG(int32_t, light_epochs, 10, "Epochs for the lightweight baselines (0: skip them)");
ABSL_FLAG(int32_t, train_limit, 0, "Training samples for the lightweight baselines (0: all)");
ABSL_FLAG(int32_t, grid, 64, "Threshold grid size");
ABSL_FLAG(std::string, plot_script, "bench/plot_evaluation.py",
          "Figure script (empty: no figures)");

namespace {

// The flags, read once in main.
struct EvaluationOptions {
  hapi::bench::ModelSource source;
  std::string out;
  int budgets = 20;
  int measure_samples = 2000;
  int profile_iterations = 300;
  int light_epochs = 10;  // 0: no lightweight models
  int train_limit = 0;    // 0: the whole training split
  int grid = 64;
  std::string plot_script;  // empty: no figures
};

// Untimed requests before each measurement.
constexpr int kWarmupRequests = 30;

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "hapi-evaluate: %s\n", std::string(s.message()).c_str());
  return 1;
}

struct Measured {
  double mean_ms = 0, p95_ms = 0;
};

// Batch-1 latency on the first `samples` test images, measured with the real
// executor.
class LatencyMeter {
 public:
  LatencyMeter(const std::vector<float>& pixels, const std::vector<uint8_t>& labels, int samples)
      : pixels_(pixels), labels_(labels), samples_(samples) {}

  absl::StatusOr<Measured> Measure(std::shared_ptr<const hapi::Model> model,
                                   const hapi::Design& design) const {
    HAPI_ASSIGN_OR_RETURN(auto executor, hapi::EarlyExitExecutor::Create(std::move(model), design));
    HAPI_ASSIGN_OR_RETURN(
        hapi::bench::BatchOneTimes t,
        hapi::bench::TimeBatchOne(*executor, pixels_, labels_, samples_, kWarmupRequests));
    return Measured{t.seconds.mean * 1e3, t.seconds.p95 * 1e3};
  }

 private:
  const std::vector<float>& pixels_;
  const std::vector<uint8_t>& labels_;
  const int samples_;
};

// The evaluated model's designs, each measured once: schemes often choose the
// same design.
class DesignLatencies {
 public:
  DesignLatencies(std::shared_ptr<const hapi::Model> model, const LatencyMeter& meter)
      : model_(std::move(model)), meter_(meter) {}

  absl::StatusOr<Measured> Of(const hapi::Design& design) {
    const std::string key = hapi::DescribeDesign(design);
    if (auto it = cache_.find(key); it != cache_.end()) return it->second;
    HAPI_ASSIGN_OR_RETURN(Measured m, meter_.Measure(model_, design));
    cache_[key] = m;
    return m;
  }

 private:
  const std::shared_ptr<const hapi::Model> model_;
  const LatencyMeter& meter_;
  std::map<std::string, Measured> cache_;  // by DescribeDesign
};

struct Scheme {
  std::string name;
  // Returns the chosen design for a problem, or an error when none fits.
  std::function<absl::StatusOr<hapi::SearchResult>(const hapi::SearchProblem&, int64_t evals)>
      choose;
};

// Best design (by the SLA judge) among a fixed list of designs, scored on
// validation: the "tune the threshold for the budget" baselines.
absl::StatusOr<hapi::SearchResult> BestOf(const hapi::SearchProblem& p,
                                          const std::vector<hapi::Design>& designs) {
  hapi::SlaJudge judge(p.sla, p.table->Accuracy(p.table->num_exits() - 1));
  hapi::SearchResult best;
  bool found = false;
  for (const hapi::Design& d : designs) {
    absl::StatusOr<hapi::LatencyPrediction> pred = p.latency->Predict(d, *p.table);
    if (!pred.ok()) return pred.status();
    ++best.stats.designs_evaluated;
    if (!judge.Feasible(*pred)) continue;
    if (!found || judge.Better(*pred, best.prediction)) {
      best.design = d;
      best.prediction = *pred;
      found = true;
    }
  }
  if (!found) return absl::FailedPreconditionError("no design of this scheme meets the budget");
  return best;
}

std::vector<hapi::Design> ThresholdScan(const std::vector<int>& exits,
                                        const std::vector<float>& grid, hapi::ExitPolicy policy) {
  std::vector<hapi::Design> out = {hapi::Design::FinalOnly()};
  for (float t : grid) out.push_back(hapi::Design::Shared(exits, t, policy));
  return out;
}

// A baseline that picks the best of a fixed list of designs for each budget.
Scheme FixedDesignsScheme(std::string name, std::vector<hapi::Design> designs) {
  return {std::move(name), [designs = std::move(designs)](const hapi::SearchProblem& p, int64_t) {
            return BestOf(p, designs);
          }};
}

// A search mechanism; random search and annealing get as many evaluations as
// HAPI used (`evals`), at least 100.
Scheme SearchScheme(std::string name, const std::string& algorithm, bool per_exit) {
  return {std::move(name), [algorithm, per_exit](const hapi::SearchProblem& p, int64_t evals) {
            hapi::SearchProblem q = p;
            q.space.per_exit_thresholds = per_exit;
            q.evaluation_budget = std::max<int64_t>(evals, 100);
            return (*hapi::MakeDesignSearch(algorithm))->Search(q);
          }};
}

// What the budget sweeps read, for both latency statistics.
struct SweepInputs {
  const hapi::CalibrationTable* validation = nullptr;
  const hapi::CalibrationTable* test = nullptr;
  const hapi::LatencyModel* latency = nullptr;
  hapi::SearchSpace space;      // max-softmax, shared threshold
  std::vector<int> all_exits;   // every early exit
  std::vector<Scheme> schemes;  // HAPI first: the later searches read its evaluation count
};

SweepInputs MakeSweepInputs(const hapi::EarlyExitModel& model, const hapi::LatencyModel& latency,
                            int grid) {
  SweepInputs in;
  in.validation = &model.validation_table();
  in.test = &model.test_table();
  in.latency = &latency;
  const int final_exit = in.validation->num_exits() - 1;
  std::vector<int> every_second, branchy;
  for (int e = 0; e < final_exit; ++e) {
    in.all_exits.push_back(e);
    if (e % 2 == 0) every_second.push_back(e);
  }
  // BranchyNet-style: a fixed, evenly spaced set of three exits.
  for (int k = 1; k <= 3; ++k) branchy.push_back(k * final_exit / 4);
  in.space = hapi::DefaultSearchSpace(*in.validation, hapi::ExitPolicy::kMaxSoftmax, grid);
  const hapi::SearchSpace entropy_space =
      hapi::DefaultSearchSpace(*in.validation, hapi::ExitPolicy::kEntropy, grid);
  in.schemes = {
      SearchScheme("hapi", "hapi", false),
      SearchScheme("hapi-per-exit", "hapi", true),
      FixedDesignsScheme("final-only", {hapi::Design::FinalOnly()}),
      FixedDesignsScheme("all-exits (SDN)", ThresholdScan(in.all_exits, in.space.thresholds,
                                                          hapi::ExitPolicy::kMaxSoftmax)),
      FixedDesignsScheme("branchynet-entropy", ThresholdScan(branchy, entropy_space.thresholds,
                                                             hapi::ExitPolicy::kEntropy)),
      FixedDesignsScheme("fixed-every-2nd", ThresholdScan(every_second, in.space.thresholds,
                                                          hapi::ExitPolicy::kMaxSoftmax)),
      SearchScheme("random", "random", false),
      SearchScheme("annealing", "annealing", false),
  };
  return in;
}

// Budgets span from the fastest shared-threshold design to the full network.
std::pair<double, double> BudgetRange(const SweepInputs& in, hapi::LatencyStatistic stat) {
  hapi::DesignEvaluator probe(*in.validation, *in.latency, in.space);
  const std::vector<int>& all = in.all_exits;
  double fastest = 1e9;
  for (int mask = 0; mask < (1 << static_cast<int>(all.size())); ++mask) {
    std::vector<int> ex;
    for (size_t i = 0; i < all.size(); ++i) {
      if (mask & (1 << i)) ex.push_back(all[i]);
    }
    for (int t = 0; t < probe.grid_size(); ++t) {
      fastest = std::min(
          fastest, hapi::StatisticOf(probe.Evaluate(ex, std::vector<int>(ex.size(), t)), stat));
      if (ex.empty()) break;
    }
  }
  return {fastest, hapi::StatisticOf(probe.Evaluate({}, {}), stat)};
}

hapi::SearchProblem BudgetProblem(const SweepInputs& in, hapi::LatencyStatistic stat,
                                  double budget_s, int budget_index) {
  hapi::SearchProblem p;
  p.table = in.validation;
  p.latency = in.latency;
  p.space = in.space;
  p.sla.statistic = stat;
  p.sla.objective = hapi::SlaObjective::kMaxAccuracy;
  p.sla.latency_budget_s = budget_s;
  // As the optimizer service does: percentile budgets hold at 90% confidence.
  p.sla.latency_confidence = hapi::IsPercentile(stat) ? hapi::kDefaultSlaConfidence : 0.5;
  p.seed = 77 + budget_index;
  return p;
}

std::string SweepCsvRow(double budget_ms, const std::string& scheme, const hapi::SearchResult& r,
                        const hapi::LatencyPrediction& on_test, double predicted_ms,
                        const Measured& m) {
  return absl::StrFormat(
      "%.4f,%s,%.5f,%.5f,%.4f,%.4f,%.4f,%s,%s,%d,%s\n", budget_ms, scheme, r.prediction.accuracy,
      on_test.accuracy, predicted_ms, m.mean_ms, m.p95_ms, absl::StrJoin(r.design.exits, " "),
      absl::StrJoin(r.design.thresholds, " ",
                    [](std::string* o, float t) { absl::StrAppendFormat(o, "%.4f", t); }),
      r.stats.designs_evaluated,
      absl::StrJoin(on_test.exit_ratio, " ",
                    [](std::string* o, double v) { absl::StrAppendFormat(o, "%.4f", v); }));
}

// One budget: every scheme's choice, its test accuracy and measured latency,
// as a CSV row each and one markdown table row.
absl::Status SweepBudget(const SweepInputs& in, const hapi::SearchProblem& p,
                         DesignLatencies& measured, std::string* csv, std::string* md) {
  const hapi::LatencyStatistic stat = p.sla.statistic;
  const double budget_ms = p.sla.latency_budget_s * 1e3;
  int64_t hapi_evals = 0;
  absl::StrAppendFormat(md, "| %.3f |", budget_ms);
  for (const Scheme& s : in.schemes) {
    auto r = s.choose(p, hapi_evals);
    if (s.name == "hapi" && r.ok()) hapi_evals = r->stats.designs_evaluated;
    if (!r.ok()) {
      absl::StrAppendFormat(csv, "%.4f,%s,,,,,,,,,\n", budget_ms, s.name);
      *md += " - |";
      continue;
    }
    auto on_test = in.latency->Predict(r->design, *in.test);
    auto m = measured.Of(r->design);
    if (!on_test.ok() || !m.ok()) return !on_test.ok() ? on_test.status() : m.status();
    const double predicted = hapi::StatisticOf(r->prediction, stat) * 1e3;
    *csv += SweepCsvRow(budget_ms, s.name, *r, *on_test, predicted, *m);
    const double shown = stat == hapi::LatencyStatistic::kMean ? m->mean_ms : m->p95_ms;
    absl::StrAppendFormat(md, " %.2f%% @ %.3f |", 100 * on_test->accuracy, shown);
  }
  *md += "\n";
  return absl::OkStatus();
}

// One statistic's sweep: sweep-<stat>.csv and a section of the markdown.
absl::Status SweepBudgets(const SweepInputs& in, hapi::LatencyStatistic stat, int budgets,
                          const std::string& out, DesignLatencies& measured, std::string* md) {
  const std::string stat_name(hapi::LatencyStatisticName(stat));
  const auto [fastest, slowest] = BudgetRange(in, stat);
  std::string csv =
      "budget_ms,scheme,val_accuracy,test_accuracy,predicted_ms,measured_mean_ms,measured_p95_ms,"
      "exits,thresholds,designs_evaluated,test_exit_ratios\n";
  *md += absl::StrCat("## ", stat_name, "-latency budgets\n\n| budget ms |");
  for (const Scheme& sc : in.schemes) *md += absl::StrCat(" ", sc.name, " |");
  *md += "\n|---|";
  for (size_t i = 0; i < in.schemes.size(); ++i) *md += "---|";
  *md += "\n";
  for (int b = 0; b < budgets; ++b) {
    const double budget_s = fastest + (slowest - fastest) * (b + 1) / budgets;
    HAPI_RETURN_IF_ERROR(SweepBudget(in, BudgetProblem(in, stat, budget_s, b), measured, &csv, md));
    std::fprintf(stderr, "%s budget %d/%d done\n", stat_name.c_str(), b + 1, budgets);
  }
  *md += "\n(cells: test accuracy @ measured " + stat_name +
         " latency in ms; '-': no design of the scheme meets the budget)\n\n";
  return hapi::WriteFileAtomically(absl::StrCat(out, "/sweep-", stat_name, ".csv"), csv);
}

struct LightModel {
  std::string name;
  int stem;
  std::vector<int> widths, blocks;
};

// The stored lightweight model, trained (backbone only, the same trainer) and
// stored first when the repository has none.
absl::StatusOr<std::shared_ptr<hapi::EarlyExitModel>> LoadOrTrainLightModel(
    const LightModel& l, const hapi::v1::BackboneConfig& base, const hapi::FashionMnist& data,
    const EvaluationOptions& o) {
  auto light = hapi::bench::LoadRepositoryModel(o.source.repository, l.name);
  if (light.ok()) return light;
  hapi::v1::BackboneConfig c = base;
  c.set_stem_channels(l.stem);
  c.clear_widths();
  c.clear_blocks_per_group();
  for (int w : l.widths) c.add_widths(w);
  for (int b : l.blocks) c.add_blocks_per_group(b);
  hapi::v1::TrainingConfig t = hapi::DefaultTrainingConfig();
  t.set_backbone_epochs(o.light_epochs);
  t.set_exit_epochs(0);
  t.set_train_limit(o.train_limit);
  HAPI_ASSIGN_OR_RETURN(auto trained,
                        hapi::TrainEarlyExitModel(l.name, c, t, data, hapi::TrainerOptions{}));
  HAPI_RETURN_IF_ERROR(trained->Save(hapi::RepositoryLayout(o.source.repository).ModelDir(l.name)));
  return hapi::bench::LoadRepositoryModel(o.source.repository, l.name);
}

// Lightweight models without exits: lightweight.csv (just its header when
// --light_epochs is 0).
absl::StatusOr<std::string> LightweightModels(const EvaluationOptions& o,
                                              const hapi::bench::BenchModel& bench,
                                              const LatencyMeter& meter) {
  std::string csv = "model,macs,test_accuracy,measured_mean_ms,measured_p95_ms\n";
  if (o.light_epochs <= 0) return csv;
  for (const LightModel& l : {LightModel{"light-narrow", 8, {8, 16, 32}, {1, 1, 1}},
                              LightModel{"light-shallow", 16, {16, 32, 64}, {1, 1, 1}}}) {
    HAPI_ASSIGN_OR_RETURN(
        std::shared_ptr<hapi::EarlyExitModel> lm,
        LoadOrTrainLightModel(l, bench.model->manifest().backbone(), bench.data, o));
    // Training uses every core; the measurement, like the rest, uses one.
    hapi::SetIntraOpThreads(1);
    HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const hapi::Model> served, hapi::MakeTorchModel(*lm));
    HAPI_ASSIGN_OR_RETURN(Measured m, meter.Measure(served, hapi::Design::FinalOnly()));
    absl::StrAppendFormat(
        &csv, "%s,%d,%.5f,%.4f,%.4f\n", l.name, lm->manifest().full_network_macs(),
        lm->test_table().Accuracy(lm->test_table().num_exits() - 1), m.mean_ms, m.p95_ms);
  }
  return csv;
}

// This machine's profile, measured now, and its latency model.
absl::StatusOr<hapi::LatencyModel> ProfileThisMachine(const hapi::bench::BenchModel& bench,
                                                      const EvaluationOptions& o) {
  hapi::ProfilerOptions popts;
  popts.iterations = o.profile_iterations;
  HAPI_ASSIGN_OR_RETURN(
      hapi::v1::DeviceProfile profile,
      hapi::ProfileDevice(bench.served, "this-machine", bench.data.validation, popts));
  // A copy for reference only: the evaluation goes on without it.
  (void)hapi::WriteTextProtoAtomically(o.out + "/this-machine.profile.pbtxt", profile);
  return hapi::LatencyModel::Create(profile, bench.model->manifest());
}

// Figures: bench/plot_evaluation.py turns the CSVs into gnuplot input and runs
// gnuplot (accuracy vs budget, exit distributions, Pareto front).
absl::Status Plot(const EvaluationOptions& o) {
  if (o.plot_script.empty()) return absl::OkStatus();
  std::string cmd = absl::StrCat("python3 '", o.plot_script, "' '", o.out, "'");
  if (std::system(cmd.c_str()) != 0) {
    return absl::InternalError(absl::StrFormat("plotting failed (%s)", cmd));
  }
  return absl::OkStatus();
}

absl::Status Evaluate(const EvaluationOptions& o) {
  HAPI_RETURN_IF_ERROR(hapi::MakeDirectories(o.out));
  hapi::SetIntraOpThreads(1);
  HAPI_ASSIGN_OR_RETURN(hapi::bench::BenchModel bench, hapi::bench::LoadBenchModel(o.source));
  HAPI_ASSIGN_OR_RETURN(hapi::LatencyModel latency, ProfileThisMachine(bench, o));
  const SweepInputs sweep = MakeSweepInputs(*bench.model, latency, o.grid);

  const std::vector<float> pixels = hapi::bench::ToFloatPixels(bench.data.test);
  const LatencyMeter meter(pixels, bench.data.test.labels,
                           std::min(o.measure_samples, bench.data.test.size()));
  DesignLatencies measured(bench.served, meter);
  std::string md = "# Evaluation tables\n\n";
  for (hapi::LatencyStatistic stat :
       {hapi::LatencyStatistic::kMean, hapi::LatencyStatistic::kP95}) {
    HAPI_RETURN_IF_ERROR(SweepBudgets(sweep, stat, o.budgets, o.out, measured, &md));
  }

  HAPI_ASSIGN_OR_RETURN(std::string light_csv, LightweightModels(o, bench, meter));
  HAPI_RETURN_IF_ERROR(hapi::WriteFileAtomically(o.out + "/lightweight.csv", light_csv));
  HAPI_RETURN_IF_ERROR(hapi::WriteFileAtomically(o.out + "/tables.md", md));
  std::printf("%s\nlightweight models:\n%s", md.c_str(), light_csv.c_str());
  return Plot(o);
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  EvaluationOptions options;
  options.source = {absl::GetFlag(FLAGS_repository), absl::GetFlag(FLAGS_model),
                    absl::GetFlag(FLAGS_data_dir)};
  options.out = absl::GetFlag(FLAGS_out);
  options.budgets = absl::GetFlag(FLAGS_budgets);
  options.measure_samples = absl::GetFlag(FLAGS_measure_samples);
  options.profile_iterations = absl::GetFlag(FLAGS_profile_iterations);
  options.light_epochs = absl::GetFlag(FLAGS_light_epochs);
  options.train_limit = absl::GetFlag(FLAGS_train_limit);
  options.grid = absl::GetFlag(FLAGS_grid);
  options.plot_script = absl::GetFlag(FLAGS_plot_script);
  if (absl::Status st = Evaluate(options); !st.ok()) return Fail(st);
  return 0;
}
