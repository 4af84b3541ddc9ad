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

namespace {

absl::Status JobCancelled() { return absl::CancelledError("job cancelled"); }

// The Pareto front of the shared-threshold space (cheap with bitsets): what
// the plot beside the variant shows.
struct ParetoDesigns {
  std::vector<LatencyPrediction> predictions;
  std::vector<Design> designs;
};

ParetoDesigns SharedThresholdFront(const CalibrationTable& table, const LatencyModel& latency,
                                   const SearchSpace& space, LatencyStatistic statistic) {
  DesignEvaluator evaluator(table, latency, space);
  ParetoDesigns all;
  const auto& candidates = space.candidate_exits;
  const int k = static_cast<int>(candidates.size());
  for (int64_t mask = 0; mask < (int64_t{1} << std::min(k, 16)); ++mask) {
    std::vector<int> exits;
    for (int i = 0; i < k; ++i) {
      if (mask & (int64_t{1} << i)) exits.push_back(candidates[i]);
    }
    for (int t = 0; t < evaluator.grid_size(); ++t) {
      std::vector<int> th(exits.size(), t);
      all.predictions.push_back(evaluator.Evaluate(exits, th));
      all.designs.push_back(evaluator.ToDesign(exits, th));
      if (exits.empty()) break;
    }
  }
  ParetoDesigns front;
  for (int i : ParetoFront(all.predictions, statistic)) {
    front.predictions.push_back(all.predictions[i]);
    front.designs.push_back(all.designs[i]);
  }
  return front;
}

void SetSearchStatistics(const SearchProblem& problem, const SearchResult& result,
                         v1::SearchStatistics* stats) {
  stats->set_algorithm(result.stats.algorithm);
  stats->set_designs_evaluated(result.stats.designs_evaluated);
  stats->set_seconds(result.stats.seconds);
  stats->set_candidate_exits(static_cast<int>(problem.space.candidate_exits.size()));
  stats->set_threshold_grid(static_cast<int>(problem.space.thresholds.size()));
  stats->set_per_exit_thresholds(problem.space.per_exit_thresholds);
}

v1::Certification CertificationToProto(const CertifiedSearchResult& r, const Sla& sla,
                                       const CertifyOptions& options) {
  const Certificate& c = r.certificate;
  v1::Certification out;
  out.set_certified(r.certified);
  out.set_confidence(c.confidence);
  out.set_method(std::string(MultiplicityName(options.multiplicity)));
  out.set_selection_samples(r.selection_samples);
  out.set_certification_samples(r.certification_samples);
  out.set_candidates(r.candidates_searched);
  out.set_candidate(r.candidate);
  out.set_accuracy(c.accuracy);
  out.set_accuracy_lower(c.accuracy_lower);
  out.set_accuracy_drop(c.accuracy_drop);
  out.set_accuracy_drop_upper(c.accuracy_drop_upper);
  out.set_statistic(LatencyStatisticToProto(sla.statistic));
  out.set_latency_ms(c.latency_s * 1e3);
  out.set_latency_upper_ms(c.latency_upper_s * 1e3);
  out.set_throughput_lower_rps(c.throughput_lower_rps);
  out.set_note(r.note);
  return out;
}

// On a live table the labels are the full network's answers, so a design's
// accuracy there is its agreement with the full network. The manifest states
// it in the SLA's currency: the full network's validation accuracy minus the
// disagreement (docs/certified-slas.md, "Planning on live traffic").
double EstimatedAccuracy(double agreement, double final_validation_accuracy) {
  return std::max(0.0, final_validation_accuracy - (1.0 - agreement));
}

// The SLA the search runs under on a live table. Its final exit is right on
// every sample by construction, so an absolute floor means nothing there: it
// becomes a drop below the full network's validation accuracy. A drop SLA
// applies as is (the drop is the disagreement rate). Sets *full_network_only
// when the drop allowed is 0: only the full network never disagrees with
// itself.
Sla LiveSla(const Sla& sla, double final_validation_accuracy, bool* full_network_only) {
  Sla out = sla;
  if (sla.objective == SlaObjective::kMinLatency && sla.max_accuracy_drop < 0 &&
      sla.min_accuracy > 0) {
    out.max_accuracy_drop = std::max(0.0, final_validation_accuracy - sla.min_accuracy);
    out.min_accuracy = 0;
  }
  *full_network_only = out.objective == SlaObjective::kMinLatency && out.max_accuracy_drop == 0;
  return out;
}

// What the certification note adds for a live plan.
std::string DescribeLivePlan(const VariantSpec& spec, double final_validation_accuracy) {
  std::string out = absl::StrFormat(
      "planned on %d live samples (%s%s): the accuracy above is agreement with the full "
      "network; the manifest's accuracies are its validation accuracy %.2f%% minus the "
      "disagreement",
      spec.live_table->num_samples(), spec.live_reason,
      spec.live_from_variant.empty() ? "" : absl::StrCat(", from ", spec.live_from_variant),
      100 * final_validation_accuracy);
  if (spec.sla.objective == SlaObjective::kMinLatency && spec.sla.max_accuracy_drop < 0 &&
      spec.sla.min_accuracy > 0) {
    absl::StrAppendFormat(&out, "; the floor %.2f%% was read as a drop of at most %.2f points",
                          100 * spec.sla.min_accuracy,
                          100 * std::max(0.0, final_validation_accuracy - spec.sla.min_accuracy));
  }
  return out;
}

// The manifest of the variant `certified` chose, with what it is compared
// with: the final exit alone, and the chosen design on the test split.
absl::StatusOr<v1::VariantManifest> DescribeVariant(const VariantSpec& spec,
                                                    const std::string& job_id,
                                                    const ModelMetadata& model,
                                                    const SearchProblem& problem,
                                                    const CertifiedSearchResult& certified,
                                                    const CertifyOptions& options) {
  const SearchResult& result = certified.result;
  const LatencyModel& latency = *problem.latency;
  HAPI_ASSIGN_OR_RETURN(LatencyPrediction full,
                        latency.Predict(Design::FinalOnly(), model.validation));
  HAPI_ASSIGN_OR_RETURN(LatencyPrediction on_test, latency.Predict(result.design, model.test));
  v1::VariantManifest v;
  v.set_id(spec.variant_id);
  v.set_model(spec.model);
  v.set_device(spec.device);
  *v.mutable_sla() = spec.request.sla();
  // Record the confidences SlaFromProto resolved (defaults included).
  if (spec.sla.accuracy_confidence > 0.5) {
    v.mutable_sla()->set_accuracy_confidence(spec.sla.accuracy_confidence);
  }
  if (spec.sla.latency_confidence > 0.5) {
    v.mutable_sla()->set_latency_confidence(spec.sla.latency_confidence);
  }
  v.set_exit_policy(std::string(ExitPolicyName(result.design.policy)));
  for (int e : result.design.exits) v.add_enabled_exits(e);
  for (float t : result.design.thresholds) v.add_thresholds(t);
  v.set_predicted_accuracy(result.prediction.accuracy);
  *v.mutable_predicted_latency() = LatencyToProto(result.prediction);
  for (double r : result.prediction.exit_ratio) v.add_predicted_exit_ratios(r);
  SetSearchStatistics(problem, result, v.mutable_search());
  v.set_created_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));
  const double final_accuracy = model.validation.Accuracy(model.manifest.exits_size() - 1);
  v.set_final_exit_accuracy(final_accuracy);
  *v.mutable_full_network_latency() = LatencyToProto(full);
  v.set_test_accuracy(on_test.accuracy);
  v.set_job_id(job_id);
  if (certified.certification_samples > 0) {
    *v.mutable_certification() = CertificationToProto(certified, problem.sla, options);
  }
  if (spec.live_table) {
    v.set_predicted_accuracy(EstimatedAccuracy(result.prediction.accuracy, final_accuracy));
    if (v.has_certification()) {
      v1::Certification* c = v.mutable_certification();
      // The full network never loses to itself on this table, so the drop is
      // the disagreement, and its upper bound is what was certified.
      c->set_accuracy(std::max(0.0, final_accuracy - c->accuracy_drop()));
      c->set_accuracy_lower(std::max(0.0, final_accuracy - c->accuracy_drop_upper()));
      c->set_note(absl::StrCat(c->note(), "; ", DescribeLivePlan(spec, final_accuracy)));
    }
    v1::LivePlan* plan = v.mutable_live_plan();
    plan->set_from_variant(spec.live_from_variant);
    plan->set_samples(spec.live_table->num_samples());
    plan->set_reason(spec.live_reason);
    plan->set_table_file(kLiveCalibrationFile);
  }
  return v;
}

}  // namespace

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

absl::StatusOr<std::shared_ptr<const ModelMetadata>> VariantBuilder::Model(
    const std::string& name) {
  {
    absl::MutexLock lock(&mu_);
    auto it = models_.find(name);
    if (it != models_.end()) return it->second;
  }
  absl::StatusOr<ModelMetadata> loaded = LoadModelMetadata(layout_.ModelDir(name));
  if (absl::IsNotFound(loaded.status())) {
    return absl::NotFoundError(absl::StrCat("unknown model '", name, "'"));
  }
  HAPI_RETURN_IF_ERROR(loaded.status());
  auto shared = std::make_shared<const ModelMetadata>(*std::move(loaded));
  absl::MutexLock lock(&mu_);
  models_[name] = shared;
  return shared;
}

absl::Status VariantBuilder::CheckModelAndDevice(const VariantSpec& spec,
                                                 const v1::DeviceProfile& profile) {
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const ModelMetadata> model, Model(spec.model));
  HAPI_RETURN_IF_ERROR(ValidateDeviceProfile(profile, model->manifest));
  if (spec.live_table) HAPI_RETURN_IF_ERROR(CheckLiveTable(*spec.live_table, model->validation));
  return absl::OkStatus();
}

absl::StatusOr<v1::VariantManifest> VariantBuilder::Build(const VariantSpec& spec,
                                                          const v1::DeviceProfile& profile,
                                                          const std::string& job_id,
                                                          const Progress& progress) {
  if (!progress("loading", 0, 0)) return JobCancelled();
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const ModelMetadata> model, Model(spec.model));
  // Validates the profile against the model again: the device may have been
  // registered anew since the job was accepted.
  HAPI_ASSIGN_OR_RETURN(LatencyModel latency, LatencyModel::Create(profile, model->manifest));
  // A live table replaces the validation split as what the search selects
  // and certifies on; the test split stays for reporting.
  const CalibrationTable& table = spec.live_table ? *spec.live_table : model->validation;
  if (spec.live_table) HAPI_RETURN_IF_ERROR(CheckLiveTable(table, model->validation));
  const double final_accuracy = model->validation.Accuracy(model->manifest.exits_size() - 1);
  bool full_network_only = false;
  SearchProblem problem;
  problem.table = &table;
  problem.latency = &latency;
  problem.space =
      DefaultSearchSpace(table, spec.policy, options_.threshold_grid, spec.per_exit_thresholds);
  problem.sla = spec.live_table ? LiveSla(spec.sla, final_accuracy, &full_network_only) : spec.sla;
  if (full_network_only) problem.space.candidate_exits.clear();
  problem.progress = [&](double fraction, int64_t evaluated) {
    return progress("searching", 5 + 85 * fraction, evaluated);
  };
  absl::StatusOr<CertifiedSearchResult> searched =
      SearchAndCertify(*spec.search, problem, options_.certify);
  if (full_network_only && absl::IsFailedPrecondition(searched.status())) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "planning on live traffic allows no disagreement with the full network (%s), so only the "
        "full network qualifies, and it does not meet the SLA: %s",
        spec.sla.max_accuracy_drop >= 0
            ? "a drop of 0"
            : absl::StrFormat("the floor %.2f%% is at or above its validation accuracy %.2f%%",
                              100 * spec.sla.min_accuracy, 100 * final_accuracy),
        searched.status().message()));
  }
  HAPI_ASSIGN_OR_RETURN(CertifiedSearchResult result, std::move(searched));
  const int64_t evaluated = result.result.stats.designs_evaluated;
  if (!progress("writing", 90, evaluated)) return JobCancelled();
  HAPI_ASSIGN_OR_RETURN(v1::VariantManifest v,
                        DescribeVariant(spec, job_id, *model, problem, result, options_.certify));
  HAPI_RETURN_IF_ERROR(Publish(spec, v, problem, result));
  progress("writing", 99, evaluated);
  return v;
}

// The variant directory appears in one rename, complete.
absl::Status VariantBuilder::Publish(const VariantSpec& spec, const v1::VariantManifest& variant,
                                     const SearchProblem& problem,
                                     const CertifiedSearchResult& result) const {
  ParetoDesigns front =
      SharedThresholdFront(*problem.table, *problem.latency, problem.space, spec.sla.statistic);
  LatencyPrediction chosen = result.result.prediction;
  Certificate certificate = result.certificate;
  std::string title =
      absl::StrFormat("%s on %s: %s", spec.model, spec.device, DescribeSla(spec.sla));
  if (spec.live_table) {  // the manifest's accuracies, in the same currency
    const double final_accuracy = variant.final_exit_accuracy();
    for (LatencyPrediction& p : front.predictions) {
      p.accuracy = EstimatedAccuracy(p.accuracy, final_accuracy);
    }
    chosen.accuracy = EstimatedAccuracy(chosen.accuracy, final_accuracy);
    certificate.accuracy_lower = variant.certification().accuracy_lower();
    absl::StrAppend(&title, " (live, ", spec.live_table->num_samples(), " samples)");
  }
  const std::string final_dir = layout_.VariantDir(spec.variant_id);
  if (std::filesystem::exists(final_dir)) {
    return absl::AlreadyExistsError(absl::StrCat("variant '", spec.variant_id, "' already exists"));
  }
  HAPI_ASSIGN_OR_RETURN(std::string staging, MakeStagingDirectory(final_dir));
  absl::Status written = [&]() -> absl::Status {
    HAPI_RETURN_IF_ERROR(
        WriteTextProtoAtomically(absl::StrCat(staging, "/", kVariantFile), variant));
    if (spec.live_table) {
      HAPI_RETURN_IF_ERROR(WriteFileAtomically(absl::StrCat(staging, "/", kLiveCalibrationFile),
                                               spec.live_table->Serialize()));
    }
    WriteParetoFront(staging, front.predictions, front.designs, chosen,
                     result.certification_samples > 0 ? &certificate : nullptr, spec.sla.statistic,
                     options_.gnuplot, title);
    return PublishDirectory(staging, final_dir);
  }();
  if (!written.ok()) {
    std::error_code ec;
    std::filesystem::remove_all(staging, ec);
  }
  return written;
}

bool WriteParetoFront(const std::string& dir, const std::vector<LatencyPrediction>& front,
                      const std::vector<Design>& designs, const LatencyPrediction& chosen,
                      const Certificate* certificate, LatencyStatistic statistic,
                      const std::string& gnuplot, const std::string& title) {
  std::string csv =
      absl::StrFormat("%s_latency_ms,accuracy,exits,thresholds\n", LatencyStatisticName(statistic));
  for (size_t i = 0; i < front.size(); ++i) {
    absl::StrAppendFormat(&csv, "%.6f,%.6f,%s,%s\n", StatisticOf(front[i], statistic) * 1e3,
                          front[i].accuracy, absl::StrJoin(designs[i].exits, " "),
                          absl::StrJoin(designs[i].thresholds, " ", [](std::string* o, float t) {
                            absl::StrAppendFormat(o, "%.4f", t);
                          }));
  }
  const absl::string_view name = LatencyStatisticName(statistic);
  std::string chosen_csv =
      absl::StrFormat("%s_latency_ms,accuracy", name) +
      (certificate ? absl::StrFormat(",certified_%s_latency_ms,certified_accuracy\n", name)
                   : "\n") +
      absl::StrFormat("%.6f,%.6f", StatisticOf(chosen, statistic) * 1e3, chosen.accuracy) +
      (certificate ? absl::StrFormat(",%.6f,%.6f\n", certificate->latency_upper_s * 1e3,
                                     certificate->accuracy_lower)
                   : "\n");
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
      "plot '%s/pareto.csv' every ::1 using 1:($2*100) with linespoints pt 7 ps 0.5 title 'Pareto "
      "front', "
      "'%s/chosen.csv' every ::1 using 1:($2*100) with points pt 9 ps 2 lc rgb 'red' title 'chosen "
      "design'%s\n",
      dir, title, name, dir, dir,
      certificate ? absl::StrFormat(", '%s/chosen.csv' every ::1 using 3:($4*100) with points pt "
                                    "8 ps 2 lc rgb 'dark-green' title 'certified bounds'",
                                    dir)
                  : "");
  if (!WriteFileAtomically(absl::StrCat(dir, "/pareto.gp"), script).ok()) return false;
  if (gnuplot.empty()) return false;
  std::string cmd = absl::StrCat(gnuplot, " '", dir, "/pareto.gp' 2>/dev/null");
  return std::system(cmd.c_str()) == 0;
}

}  // namespace hapi
