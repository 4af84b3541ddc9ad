#include "optimizer/variant_builder.h"

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/device_profile.h"
#include "core/files.h"
#include "core/status_macros.h"

namespace hapi {

absl::StatusOr<Sla> SlaFromProto(const v1::Sla& p) {
  Sla sla;
  sla.latency_budget_s = p.latency_budget_ms() * 1e-3;
  switch (p.statistic()) {
    case v1::LATENCY_STATISTIC_UNSPECIFIED:
    case v1::MEAN: sla.statistic = LatencyStatistic::kMean; break;
    case v1::P50: sla.statistic = LatencyStatistic::kP50; break;
    case v1::P95: sla.statistic = LatencyStatistic::kP95; break;
    case v1::P99: sla.statistic = LatencyStatistic::kP99; break;
    case v1::WORST: sla.statistic = LatencyStatistic::kWorst; break;
    default: return absl::InvalidArgumentError("unknown latency statistic");
  }
  switch (p.objective()) {
    case v1::SLA_OBJECTIVE_UNSPECIFIED:
    case v1::MAX_ACCURACY: sla.objective = SlaObjective::kMaxAccuracy; break;
    case v1::MIN_LATENCY: sla.objective = SlaObjective::kMinLatency; break;
    default: return absl::InvalidArgumentError("unknown SLA objective");
  }
  sla.min_accuracy = p.min_accuracy();
  sla.max_accuracy_drop = p.use_accuracy_drop() ? p.max_accuracy_drop() : -1;
  if (p.use_accuracy_drop() && !(p.max_accuracy_drop() >= 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("accuracy drop ", p.max_accuracy_drop(), " must be in [0, 1]"));
  }
  sla.min_throughput_rps = p.min_throughput_rps();
  if (sla.objective == SlaObjective::kMinLatency) {  // the only SLAs with an accuracy floor
    sla.accuracy_confidence =
        p.accuracy_confidence() == 0 ? kDefaultSlaConfidence : p.accuracy_confidence();
  }
  if (IsPercentile(sla.statistic) && sla.latency_budget_s > 0) {  // percentile budgets only
    sla.latency_confidence =
        p.latency_confidence() == 0 ? kDefaultSlaConfidence : p.latency_confidence();
  }
  HAPI_RETURN_IF_ERROR(ValidateSla(sla));
  return sla;
}

v1::PredictedLatency LatencyToProto(const LatencyPrediction& p) {
  v1::PredictedLatency out;
  out.set_mean_ms(p.mean_s * 1e3);
  out.set_p50_ms(p.p50_s * 1e3);
  out.set_p95_ms(p.p95_s * 1e3);
  out.set_p99_ms(p.p99_s * 1e3);
  out.set_worst_ms(p.worst_s * 1e3);
  out.set_throughput_rps(p.throughput_rps);
  return out;
}

std::string VariantBuilder::ModelDir(const std::string& model) const {
  return absl::StrCat(options_.repository, "/models/", model);
}
std::string VariantBuilder::VariantDir(const std::string& id) const {
  return absl::StrCat(options_.repository, "/variants/", id);
}
std::string VariantBuilder::DeviceDir(const std::string& device) const {
  return absl::StrCat(options_.repository, "/devices/", device);
}

absl::StatusOr<std::shared_ptr<const ModelMetadata>> VariantBuilder::Model(const std::string& name) {
  HAPI_RETURN_IF_ERROR(ValidateName(name, "model name"));
  {
    absl::MutexLock lock(&mu_);
    auto it = models_.find(name);
    if (it != models_.end()) return it->second;
  }
  absl::StatusOr<ModelMetadata> loaded = LoadModelMetadata(ModelDir(name));
  if (absl::IsNotFound(loaded.status())) {
    return absl::NotFoundError(absl::StrCat("unknown model '", name, "'"));
  }
  HAPI_RETURN_IF_ERROR(loaded.status());
  auto shared = std::make_shared<const ModelMetadata>(*std::move(loaded));
  absl::MutexLock lock(&mu_);
  models_[name] = shared;
  return shared;
}

absl::Status VariantBuilder::Validate(const v1::CreateVariantRequest& request,
                                      const v1::DeviceProfile& profile) {
  HAPI_RETURN_IF_ERROR(ValidateName(request.model(), "model name"));
  HAPI_RETURN_IF_ERROR(ValidateName(request.device(), "device name"));
  if (!request.variant_id().empty()) {
    HAPI_RETURN_IF_ERROR(ValidateName(request.variant_id(), "variant id"));
  }
  HAPI_RETURN_IF_ERROR(SlaFromProto(request.sla()).status());
  HAPI_RETURN_IF_ERROR(MakeDesignSearch(request.algorithm().empty() ? "hapi" : request.algorithm()).status());
  if (!request.exit_policy().empty()) HAPI_RETURN_IF_ERROR(ParseExitPolicy(request.exit_policy()).status());
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const ModelMetadata> model, Model(request.model()));
  return ValidateDeviceProfile(profile, model->manifest);
}

absl::StatusOr<v1::VariantManifest> VariantBuilder::Build(const v1::CreateVariantRequest& request,
                                                          const v1::DeviceProfile& profile,
                                                          const std::string& variant_id,
                                                          const std::string& job_id,
                                                          const Progress& progress) {
  HAPI_RETURN_IF_ERROR(ValidateName(variant_id, "variant id"));
  if (!progress("loading", 0, 0)) return absl::CancelledError("job cancelled");
  HAPI_RETURN_IF_ERROR(Validate(request, profile));
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const ModelMetadata> model, Model(request.model()));
  HAPI_ASSIGN_OR_RETURN(LatencyModel latency, LatencyModel::Create(profile, model->manifest));
  HAPI_ASSIGN_OR_RETURN(Sla sla, SlaFromProto(request.sla()));
  ExitPolicy policy = ExitPolicy::kMaxSoftmax;
  if (!request.exit_policy().empty()) {
    HAPI_ASSIGN_OR_RETURN(policy, ParseExitPolicy(request.exit_policy()));
  }
  const std::string algorithm = request.algorithm().empty() ? "hapi" : request.algorithm();
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<DesignSearch> search, MakeDesignSearch(algorithm));

  SearchProblem problem;
  problem.table = &model->validation;
  problem.latency = &latency;
  problem.space = DefaultSearchSpace(model->validation, policy, options_.threshold_grid,
                                     request.per_exit_thresholds());
  problem.sla = sla;
  problem.progress = [&](double fraction, int64_t evaluated) {
    return progress("searching", 5 + 85 * fraction, evaluated);
  };
  HAPI_ASSIGN_OR_RETURN(SearchResult result, search->Search(problem));
  if (!progress("writing", 90, result.stats.designs_evaluated)) {
    return absl::CancelledError("job cancelled");
  }

  // Pareto front of the shared-threshold space (cheap with bitsets).
  DesignEvaluator evaluator(model->validation, latency, problem.space);
  std::vector<LatencyPrediction> predictions;
  std::vector<Design> designs;
  const auto& candidates = problem.space.candidate_exits;
  const int k = static_cast<int>(candidates.size());
  for (int64_t mask = 0; mask < (int64_t{1} << std::min(k, 16)); ++mask) {
    std::vector<int> exits;
    for (int i = 0; i < k; ++i) {
      if (mask & (int64_t{1} << i)) exits.push_back(candidates[i]);
    }
    for (int t = 0; t < evaluator.grid_size(); ++t) {
      std::vector<int> th(exits.size(), t);
      predictions.push_back(evaluator.Evaluate(exits, th));
      designs.push_back(evaluator.ToDesign(exits, th));
      if (exits.empty()) break;
    }
  }
  std::vector<int> front_idx = ParetoFront(predictions, sla.statistic);
  std::vector<LatencyPrediction> front;
  std::vector<Design> front_designs;
  for (int i : front_idx) {
    front.push_back(predictions[i]);
    front_designs.push_back(designs[i]);
  }

  const int final_exit = model->manifest.exits_size() - 1;
  HAPI_ASSIGN_OR_RETURN(LatencyPrediction full, latency.Predict(Design::FinalOnly(), model->validation));
  HAPI_ASSIGN_OR_RETURN(LatencyPrediction on_test, latency.Predict(result.design, model->test));

  v1::VariantManifest v;
  v.set_id(variant_id);
  v.set_model(request.model());
  v.set_device(request.device());
  *v.mutable_sla() = request.sla();
  // Record the confidences SlaFromProto resolved (defaults included).
  if (sla.accuracy_confidence > 0.5) v.mutable_sla()->set_accuracy_confidence(sla.accuracy_confidence);
  if (sla.latency_confidence > 0.5) v.mutable_sla()->set_latency_confidence(sla.latency_confidence);
  v.set_exit_policy(std::string(ExitPolicyName(result.design.policy)));
  for (int e : result.design.exits) v.add_enabled_exits(e);
  for (float t : result.design.thresholds) v.add_thresholds(t);
  v.set_predicted_accuracy(result.prediction.accuracy);
  *v.mutable_predicted_latency() = LatencyToProto(result.prediction);
  for (double r : result.prediction.exit_ratio) v.add_predicted_exit_ratios(r);
  v1::SearchStatistics* stats = v.mutable_search();
  stats->set_algorithm(result.stats.algorithm);
  stats->set_designs_evaluated(result.stats.designs_evaluated);
  stats->set_seconds(result.stats.seconds);
  stats->set_candidate_exits(k);
  stats->set_threshold_grid(evaluator.grid_size());
  stats->set_per_exit_thresholds(request.per_exit_thresholds());
  v.set_created_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
  v.set_final_exit_accuracy(model->validation.Accuracy(final_exit));
  *v.mutable_full_network_latency() = LatencyToProto(full);
  v.set_test_accuracy(on_test.accuracy);
  v.set_job_id(job_id);

  // The variant directory appears in one rename, complete.
  const std::string final_dir = VariantDir(variant_id);
  if (std::filesystem::exists(final_dir)) {
    return absl::AlreadyExistsError(absl::StrCat("variant '", variant_id, "' already exists"));
  }
  HAPI_ASSIGN_OR_RETURN(std::string staging, MakeStagingDirectory(final_dir));
  absl::Status written = [&]() -> absl::Status {
    HAPI_RETURN_IF_ERROR(WriteTextProtoAtomically(absl::StrCat(staging, "/", kVariantFile), v));
    WriteParetoFront(staging, front, front_designs, result.prediction, sla.statistic,
                     options_.gnuplot,
                     absl::StrFormat("%s on %s: %s", request.model(), request.device(), DescribeSla(sla)));
    return PublishDirectory(staging, final_dir);
  }();
  if (!written.ok()) {
    std::error_code ec;
    std::filesystem::remove_all(staging, ec);
    return written;
  }
  progress("writing", 99, result.stats.designs_evaluated);
  return v;
}

bool WriteParetoFront(const std::string& dir, const std::vector<LatencyPrediction>& front,
                      const std::vector<Design>& designs, const LatencyPrediction& chosen,
                      LatencyStatistic statistic, const std::string& gnuplot,
                      const std::string& title) {
  std::string csv = absl::StrFormat("%s_latency_ms,accuracy,exits,thresholds\n",
                                    LatencyStatisticName(statistic));
  for (size_t i = 0; i < front.size(); ++i) {
    absl::StrAppendFormat(&csv, "%.6f,%.6f,%s,%s\n", StatisticOf(front[i], statistic) * 1e3,
                          front[i].accuracy, absl::StrJoin(designs[i].exits, " "),
                          absl::StrJoin(designs[i].thresholds, " ", [](std::string* o, float t) {
                            absl::StrAppendFormat(o, "%.4f", t);
                          }));
  }
  std::string chosen_csv = absl::StrFormat("%s_latency_ms,accuracy\n%.6f,%.6f\n",
                                           LatencyStatisticName(statistic),
                                           StatisticOf(chosen, statistic) * 1e3, chosen.accuracy);
  if (!WriteFileAtomically(absl::StrCat(dir, "/pareto.csv"), csv).ok() ||
      !WriteFileAtomically(absl::StrCat(dir, "/chosen.csv"), chosen_csv).ok()) {
    return false;
  }
  std::string script = absl::StrFormat(
      "set terminal svg size 800,500 dynamic background rgb 'white'\n"
      "set output '%s/pareto.svg'\n"
      "set datafile separator ','\n"
      "set title \"%s\" noenhanced\n"
      "set xlabel '%s latency (ms)'\nset ylabel 'validation accuracy (%%)'\n"
      "set key bottom right\nset grid\n"
      "plot '%s/pareto.csv' every ::1 using 1:($2*100) with linespoints pt 7 ps 0.5 title 'Pareto front', "
      "'%s/chosen.csv' every ::1 using 1:($2*100) with points pt 9 ps 2 lc rgb 'red' title 'chosen design'\n",
      dir, title, LatencyStatisticName(statistic), dir, dir);
  if (!WriteFileAtomically(absl::StrCat(dir, "/pareto.gp"), script).ok()) return false;
  if (gnuplot.empty()) return false;
  std::string cmd = absl::StrCat(gnuplot, " '", dir, "/pareto.gp' 2>/dev/null");
  return std::system(cmd.c_str()) == 0;
}

}  // namespace hapi
