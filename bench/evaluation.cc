// hapi-evaluate: HAPI against other early-exit schemes and search mechanisms
// on this machine. Designs are chosen on the validation split with the
// latency model of this machine's measured profile; accuracy is reported on
// the test split (exactly, from the test calibration table, which the
// executor reproduces) and latency is MEASURED with the real executor at
// batch 1 on test images. Writes CSV tables, gnuplot figures and a markdown
// summary into --out.
#include <cstdio>
#include <map>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/common.h"
#include "core/design_search.h"
#include "core/files.h"
#include "core/executor.h"
#include "model/torch_model.h"
#include "model/profiler.h"
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
ABSL_FLAG(std::string, plot_script, "bench/plot_evaluation.py", "Figure script (empty: no figures)");

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "hapi-evaluate: %s\n", std::string(s.message()).c_str());
  return 1;
}

struct Measured {
  double mean_ms = 0, p95_ms = 0;
};

struct Scheme {
  std::string name;
  // Returns the chosen design for a problem, or an error when none fits.
  std::function<absl::StatusOr<hapi::SearchResult>(const hapi::SearchProblem&, int64_t evals)> choose;
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

std::vector<hapi::Design> ThresholdScan(const std::vector<int>& exits, const std::vector<float>& grid,
                                        hapi::ExitPolicy policy) {
  std::vector<hapi::Design> out = {hapi::Design::FinalOnly()};
  for (float t : grid) out.push_back(hapi::Design::Shared(exits, t, policy));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (auto st = hapi::MakeDirectories(out); !st.ok()) return Fail(st);
  hapi::SetIntraOpThreads(1);
  auto loaded = hapi::EarlyExitModel::Load(
      absl::StrCat(absl::GetFlag(FLAGS_repository), "/models/", absl::GetFlag(FLAGS_model)));
  if (!loaded.ok()) return Fail(loaded.status());
  std::shared_ptr<hapi::EarlyExitModel> model = *std::move(loaded);
  auto served_or = hapi::MakeTorchModel(*model);
  if (!served_or.ok()) return Fail(served_or.status());
  std::shared_ptr<const hapi::Model> served = *std::move(served_or);
  auto data = hapi::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir));
  if (!data.ok()) return Fail(data.status());

  // 1. This machine's profile, measured now.
  hapi::ProfilerOptions popts;
  popts.iterations = absl::GetFlag(FLAGS_profile_iterations);
  auto profile = hapi::ProfileDevice(served, "this-machine", data->validation, popts);
  if (!profile.ok()) return Fail(profile.status());
  (void)hapi::WriteTextProtoAtomically(out + "/this-machine.profile.pbtxt", *profile);
  auto latency = hapi::LatencyModel::Create(*profile, model->manifest());
  if (!latency.ok()) return Fail(latency.status());

  const hapi::CalibrationTable& val = model->validation_table();
  const hapi::CalibrationTable& test = model->test_table();
  const int final_exit = val.num_exits() - 1;
  std::vector<int> all, every_second, branchy;
  for (int e = 0; e < final_exit; ++e) {
    all.push_back(e);
    if (e % 2 == 0) every_second.push_back(e);
  }
  // BranchyNet-style: a fixed, evenly spaced set of three exits.
  for (int k = 1; k <= 3; ++k) branchy.push_back(k * final_exit / 4);
  hapi::SearchSpace space = hapi::DefaultSearchSpace(val, hapi::ExitPolicy::kMaxSoftmax, absl::GetFlag(FLAGS_grid));
  hapi::SearchSpace entropy_space = hapi::DefaultSearchSpace(val, hapi::ExitPolicy::kEntropy, absl::GetFlag(FLAGS_grid));

  auto search = [](const std::string& algorithm, bool per_exit) {
    return [algorithm, per_exit](const hapi::SearchProblem& p, int64_t evals) {
      hapi::SearchProblem q = p;
      q.space.per_exit_thresholds = per_exit;
      q.evaluation_budget = std::max<int64_t>(evals, 100);
      return (*hapi::MakeDesignSearch(algorithm))->Search(q);
    };
  };
  const std::vector<Scheme> schemes = {
      {"hapi", search("hapi", false)},
      {"hapi-per-exit", search("hapi", true)},
      {"final-only", [](const hapi::SearchProblem& p, int64_t) { return BestOf(p, {hapi::Design::FinalOnly()}); }},
      {"all-exits (SDN)", [&](const hapi::SearchProblem& p, int64_t) { return BestOf(p, ThresholdScan(all, space.thresholds, hapi::ExitPolicy::kMaxSoftmax)); }},
      {"branchynet-entropy", [&](const hapi::SearchProblem& p, int64_t) { return BestOf(p, ThresholdScan(branchy, entropy_space.thresholds, hapi::ExitPolicy::kEntropy)); }},
      {"fixed-every-2nd", [&](const hapi::SearchProblem& p, int64_t) { return BestOf(p, ThresholdScan(every_second, space.thresholds, hapi::ExitPolicy::kMaxSoftmax)); }},
      {"random", search("random", false)},
      {"annealing", search("annealing", false)},
  };

  // Measured latency, cached per design.
  const int timed = std::min(absl::GetFlag(FLAGS_measure_samples), data->test.size());
  std::vector<float> pixels = hapi::bench::ToFloatPixels(data->test);
  std::map<std::string, Measured> cache;
  auto measure = [&](const hapi::Design& d) -> absl::StatusOr<Measured> {
    std::string key = hapi::DescribeDesign(d);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    auto executor = hapi::EarlyExitExecutor::Create(served, d);
    if (!executor.ok()) return executor.status();
    for (int i = 0; i < 30; ++i) (void)(*executor)->Run(pixels.data() + i * 784, 1);
    std::vector<double> times;
    for (int s = 0; s < timed; ++s) {
      double t0 = hapi::bench::Now();
      auto r = (*executor)->Run(pixels.data() + static_cast<size_t>(s) * 784, 1);
      times.push_back(hapi::bench::Now() - t0);
      if (!r.ok()) return r.status();
    }
    hapi::bench::Stats st = hapi::bench::Summarise(times);
    Measured m{st.mean * 1e3, st.p95 * 1e3};
    cache[key] = m;
    return m;
  };

  // Budgets: from the fastest shared-threshold design to the full network.
  hapi::DesignEvaluator probe(val, *latency, space);
  std::string md = "# Evaluation tables\n\n";
  for (hapi::LatencyStatistic stat : {hapi::LatencyStatistic::kMean, hapi::LatencyStatistic::kP95}) {
    const std::string stat_name(hapi::LatencyStatisticName(stat));
    double fastest = 1e9;
    for (int mask = 0; mask < (1 << static_cast<int>(all.size())); ++mask) {
      std::vector<int> ex;
      for (size_t i = 0; i < all.size(); ++i) if (mask & (1 << i)) ex.push_back(all[i]);
      for (int t = 0; t < probe.grid_size(); ++t) {
        fastest = std::min(fastest, hapi::StatisticOf(probe.Evaluate(ex, std::vector<int>(ex.size(), t)), stat));
        if (ex.empty()) break;
      }
    }
    const double slowest = hapi::StatisticOf(probe.Evaluate({}, {}), stat);
    const int n = absl::GetFlag(FLAGS_budgets);
    std::string csv = "budget_ms,scheme,val_accuracy,test_accuracy,predicted_ms,measured_mean_ms,measured_p95_ms,exits,thresholds,designs_evaluated,test_exit_ratios\n";
    md += absl::StrCat("## ", stat_name, "-latency budgets\n\n| budget ms |");
    for (const Scheme& sc : schemes) md += absl::StrCat(" ", sc.name, " |");
    md += "\n|---|";
    for (size_t i = 0; i < schemes.size(); ++i) md += "---|";
    md += "\n";
    for (int b = 0; b < n; ++b) {
      hapi::SearchProblem p;
      p.table = &val;
      p.latency = &*latency;
      p.space = space;
      p.sla.statistic = stat;
      p.sla.objective = hapi::SlaObjective::kMaxAccuracy;
      p.sla.latency_budget_s = fastest + (slowest - fastest) * (b + 1) / n;
      // As the optimizer service does: percentile budgets hold at 90% confidence.
      p.sla.latency_confidence = hapi::IsPercentile(stat) ? hapi::kDefaultSlaConfidence : 0.5;
      p.seed = 77 + b;
      int64_t hapi_evals = 0;
      absl::StrAppendFormat(&md, "| %.3f |", p.sla.latency_budget_s * 1e3);
      for (const Scheme& s : schemes) {
        auto r = s.choose(p, hapi_evals);
        if (s.name == "hapi" && r.ok()) hapi_evals = r->stats.designs_evaluated;
        if (!r.ok()) {
          absl::StrAppendFormat(&csv, "%.4f,%s,,,,,,,,,\n", p.sla.latency_budget_s * 1e3, s.name);
          md += " - |";
          continue;
        }
        auto on_test = latency->Predict(r->design, test);
        auto m = measure(r->design);
        if (!on_test.ok() || !m.ok()) return Fail(!on_test.ok() ? on_test.status() : m.status());
        const double predicted = hapi::StatisticOf(r->prediction, stat) * 1e3;
        const double measured = stat == hapi::LatencyStatistic::kMean ? m->mean_ms : m->p95_ms;
        absl::StrAppendFormat(&csv, "%.4f,%s,%.5f,%.5f,%.4f,%.4f,%.4f,%s,%s,%d,%s\n",
                              p.sla.latency_budget_s * 1e3, s.name, r->prediction.accuracy,
                              on_test->accuracy, predicted, m->mean_ms, m->p95_ms,
                              absl::StrJoin(r->design.exits, " "),
                              absl::StrJoin(r->design.thresholds, " ", [](std::string* o, float t) { absl::StrAppendFormat(o, "%.4f", t); }),
                              r->stats.designs_evaluated,
                              absl::StrJoin(on_test->exit_ratio, " ", [](std::string* o, double v) { absl::StrAppendFormat(o, "%.4f", v); }));
        absl::StrAppendFormat(&md, " %.2f%% @ %.3f |", 100 * on_test->accuracy, measured);
      }
      md += "\n";
      std::fprintf(stderr, "%s budget %d/%d done\n", stat_name.c_str(), b + 1, n);
    }
    md += "\n(cells: test accuracy @ measured " + stat_name + " latency in ms; '-': no design of the scheme meets the budget)\n\n";
    if (auto st = hapi::WriteFileAtomically(absl::StrCat(out, "/sweep-", stat_name, ".csv"), csv); !st.ok()) return Fail(st);
  }

  // 2. Lightweight models without exits, trained with the same trainer.
  std::string light_csv = "model,macs,test_accuracy,measured_mean_ms,measured_p95_ms\n";
  if (absl::GetFlag(FLAGS_light_epochs) > 0) {
    struct Light { std::string name; int stem; std::vector<int> widths, blocks; };
    for (const Light& l : {Light{"light-narrow", 8, {8, 16, 32}, {1, 1, 1}},
                           Light{"light-shallow", 16, {16, 32, 64}, {1, 1, 1}}}) {
      const std::string dir = absl::StrCat(absl::GetFlag(FLAGS_repository), "/models/", l.name);
      auto light = hapi::EarlyExitModel::Load(dir);
      if (!light.ok()) {
        hapi::v1::BackboneConfig c = model->manifest().backbone();
        c.set_stem_channels(l.stem);
        c.clear_widths();
        c.clear_blocks_per_group();
        for (int w : l.widths) c.add_widths(w);
        for (int b : l.blocks) c.add_blocks_per_group(b);
        hapi::v1::TrainingConfig t = hapi::DefaultTrainingConfig();
        t.set_backbone_epochs(absl::GetFlag(FLAGS_light_epochs));
        t.set_exit_epochs(0);
        t.set_train_limit(absl::GetFlag(FLAGS_train_limit));
        auto trained = hapi::TrainEarlyExitModel(l.name, c, t, *data, hapi::TrainerOptions{});
        if (!trained.ok()) return Fail(trained.status());
        if (auto st = (*trained)->Save(dir); !st.ok()) return Fail(st);
        light = hapi::EarlyExitModel::Load(dir);
        if (!light.ok()) return Fail(light.status());
      }
      hapi::SetIntraOpThreads(1);
      std::shared_ptr<hapi::EarlyExitModel> lm = *std::move(light);
      auto light_served = hapi::MakeTorchModel(*lm);
      if (!light_served.ok()) return Fail(light_served.status());
      auto ex = hapi::EarlyExitExecutor::Create(*light_served, hapi::Design::FinalOnly());
      if (!ex.ok()) return Fail(ex.status());
      for (int i = 0; i < 30; ++i) (void)(*ex)->Run(pixels.data() + i * 784, 1);
      std::vector<double> times;
      for (int s = 0; s < timed; ++s) {
        double t0 = hapi::bench::Now();
        (void)(*ex)->Run(pixels.data() + static_cast<size_t>(s) * 784, 1);
        times.push_back(hapi::bench::Now() - t0);
      }
      hapi::bench::Stats st = hapi::bench::Summarise(times);
      absl::StrAppendFormat(&light_csv, "%s,%d,%.5f,%.4f,%.4f\n", l.name, lm->manifest().full_network_macs(),
                            lm->test_table().Accuracy(lm->test_table().num_exits() - 1), st.mean * 1e3, st.p95 * 1e3);
    }
  }
  if (auto st = hapi::WriteFileAtomically(out + "/lightweight.csv", light_csv); !st.ok()) return Fail(st);
  if (auto st = hapi::WriteFileAtomically(out + "/tables.md", md); !st.ok()) return Fail(st);
  std::printf("%s\nlightweight models:\n%s", md.c_str(), light_csv.c_str());
  // Figures: bench/plot_evaluation.py turns the CSVs into gnuplot input and
  // runs gnuplot (accuracy vs budget, exit distributions, Pareto front).
  if (!absl::GetFlag(FLAGS_plot_script).empty()) {
    std::string cmd = absl::StrCat("python3 '", absl::GetFlag(FLAGS_plot_script), "' '", out, "'");
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "hapi-evaluate: plotting failed (%s)\n", cmd.c_str());
      return 1;
    }
  }
  return 0;
}
