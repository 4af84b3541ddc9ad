#include "optimizer/variant_builder.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>

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

// One precision's search: its tables, latency model and result.
struct PrecisionPlan {
  v1::Precision precision = v1::FP32;
  const CalibrationTable* table = nullptr;  // what the search selects on
  const CalibrationTable* test = nullptr;
  std::optional<LatencyModel> latency;
  SearchProblem problem;
  absl::StatusOr<CertifiedSearchResult> result = absl::UnknownError("not searched");
  std::string skipped;  // why this precision was not searched
};

// Why `precision` cannot be planned for (empty: it can): the model's tables
// or the device's latencies are missing.
std::string MissingPrecision(const VariantSpec& spec, const ModelMetadata& model,
                             const v1::DeviceProfile& profile, v1::Precision precision) {
  if (model.Test(precision) == nullptr) {
    return absl::StrCat("model '", spec.model, "' has no ", PrecisionName(precision),
                        " calibration tables (hapi-quantize writes them)");
  }
  if (!HasPrecision(profile, precision)) {
    return absl::StrCat("device '", spec.device, "' has no ", PrecisionName(precision),
                        " latencies (hapi-profile --precisions=", PrecisionName(precision), ")");
  }
  return "";
}

// The Pareto front of the shared-threshold space (cheap with bitsets) of one
// precision's plan.
std::vector<ParetoPoint> SharedThresholdFront(const PrecisionPlan& plan,
                                              LatencyStatistic statistic) {
  const SearchSpace& space = plan.problem.space;
  DesignEvaluator evaluator(*plan.table, *plan.latency, space);
  std::vector<LatencyPrediction> predictions;
  std::vector<Design> designs;
  const auto& candidates = space.candidate_exits;
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
  std::vector<ParetoPoint> front;
  for (int i : ParetoFront(predictions, statistic)) {
    front.push_back({predictions[i], designs[i], PrecisionName(plan.precision)});
  }
  return front;
}

// Each searched precision's front, and the front of their union: what the
// plot beside the variant shows.
std::vector<ParetoPoint> CombinedFront(const std::vector<PrecisionPlan>& plans,
                                       LatencyStatistic statistic,
                                       std::vector<std::vector<ParetoPoint>>* each) {
  std::vector<ParetoPoint> all;
  for (const PrecisionPlan& plan : plans) {
    if (!plan.skipped.empty()) continue;
    each->push_back(SharedThresholdFront(plan, statistic));
    all.insert(all.end(), each->back().begin(), each->back().end());
  }
  std::vector<LatencyPrediction> predictions;
  for (const ParetoPoint& p : all) predictions.push_back(p.prediction);
  std::vector<ParetoPoint> front;
  for (int i : ParetoFront(predictions, statistic)) front.push_back(all[i]);
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
absl::StatusOr<v1::VariantManifest> DescribeVariant(
    const VariantSpec& spec, const std::string& job_id, const ModelMetadata& model,
    const LatencyModel& fp32_latency, const PrecisionPlan& plan,
    const CertifiedSearchResult& certified, const CertifyOptions& options) {
  const SearchResult& result = certified.result;
  const SearchProblem& problem = plan.problem;
  // The baseline is the fp32 full network, whatever the design's precision.
  HAPI_ASSIGN_OR_RETURN(LatencyPrediction full,
                        fp32_latency.Predict(Design::FinalOnly(), model.validation));
  HAPI_ASSIGN_OR_RETURN(LatencyPrediction on_test,
                        plan.latency->Predict(result.design, *plan.test));
  v1::VariantManifest v;
  v.set_id(spec.variant_id);
  v.set_model(spec.model);
  v.set_device(spec.device);
  v.set_precision(plan.precision);
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
  // The fp32 full network is every design's baseline.
  if (!HasPrecision(profile, v1::FP32)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device '", spec.device, "' has no fp32 latencies, the baseline of every design"));
  }
  for (v1::Precision precision : spec.precisions) {
    std::string missing = MissingPrecision(spec, *model, profile, precision);
    if (!missing.empty()) return absl::FailedPreconditionError(missing);
  }
  return absl::OkStatus();
}

namespace {

// The precisions a job searches: the request's, else every one the model
// and the device both have tables for. A precision the request names that
// either lacks is an error; one merely available is skipped with a reason.
absl::StatusOr<std::vector<PrecisionPlan>> PlanPrecisions(const VariantSpec& spec,
                                                          const ModelMetadata& model,
                                                          const v1::DeviceProfile& profile) {
  const bool named = !spec.precisions.empty();
  std::vector<v1::Precision> wanted = spec.precisions;
  if (!named) wanted = spec.live_table ? std::vector{v1::FP32} : std::vector{v1::FP32, v1::INT8};
  std::vector<PrecisionPlan> plans;
  for (v1::Precision precision : wanted) {
    PrecisionPlan plan;
    plan.precision = precision;
    plan.table = spec.live_table ? spec.live_table.get() : model.Validation(precision);
    plan.test = model.Test(precision);
    plan.skipped = MissingPrecision(spec, model, profile, precision);
    if (!plan.skipped.empty() && named) return absl::FailedPreconditionError(plan.skipped);
    if (plan.skipped.empty()) {
      HAPI_ASSIGN_OR_RETURN(plan.latency, LatencyModel::Create(profile, model.manifest, precision));
    }
    plans.push_back(std::move(plan));
  }
  return plans;
}

// With k precisions searched, each is certified at 1 - (1 - c) / k
// (Bonferroni): the chosen one then holds at c whichever it is.
Sla SplitConfidence(Sla sla, int searched) {
  if (searched <= 1) return sla;
  auto split = [&](double c) { return c > 0.5 ? 1 - (1 - c) / searched : c; };
  sla.accuracy_confidence = split(sla.accuracy_confidence);
  sla.latency_confidence = split(sla.latency_confidence);
  return sla;
}

// Whether `a` is a better choice than `b`: certified first, then the SLA's
// objective on the whole validation split.
bool BetterPlan(const PrecisionPlan& a, const PrecisionPlan& b, const SlaJudge& judge) {
  if (a.result->certified != b.result->certified) return a.result->certified;
  return judge.Better(a.result->result.prediction, b.result->result.prediction);
}

// Searches and certifies each plan not skipped, in turn; the best one
// (nullptr when none met the SLA). Errors other than an unmet SLA end it.
absl::StatusOr<PrecisionPlan*> SearchPrecisions(const VariantSpec& spec, const Sla& sla,
                                                const SlaJudge& judge, bool full_network_only,
                                                int threshold_grid, const CertifyOptions& certify,
                                                const VariantBuilder::Progress& progress,
                                                std::vector<PrecisionPlan>* plans) {
  const int searched = static_cast<int>(
      std::count_if(plans->begin(), plans->end(), [](const auto& p) { return p.skipped.empty(); }));
  int done = 0;
  PrecisionPlan* best = nullptr;
  for (PrecisionPlan& plan : *plans) {
    if (!plan.skipped.empty()) continue;
    SearchProblem& problem = plan.problem;
    problem.table = plan.table;
    problem.latency = &*plan.latency;
    problem.space =
        DefaultSearchSpace(*plan.table, spec.policy, threshold_grid, spec.per_exit_thresholds);
    problem.sla = sla;
    if (full_network_only) problem.space.candidate_exits.clear();
    problem.progress = [&](double fraction, int64_t evaluated) {
      return progress("searching", 5 + 85 * (done + fraction) / searched, evaluated);
    };
    plan.result = SearchAndCertify(*spec.search, problem, certify);
    ++done;
    if (!plan.result.ok() && !absl::IsFailedPrecondition(plan.result.status())) {
      return plan.result.status();  // cancelled, or a real error
    }
    if (plan.result.ok() && (best == nullptr || BetterPlan(plan, *best, judge))) best = &plan;
  }
  return best;
}

v1::PrecisionCandidate DescribeCandidate(const PrecisionPlan& plan) {
  v1::PrecisionCandidate c;
  c.set_precision(plan.precision);
  if (!plan.skipped.empty()) {
    c.set_note(plan.skipped);
    return c;
  }
  if (!plan.result.ok()) {
    c.set_note(std::string(plan.result.status().message()));
    return c;
  }
  const SearchResult& r = plan.result->result;
  c.set_meets_sla(true);
  c.set_note(plan.result->note);
  c.set_predicted_accuracy(r.prediction.accuracy);
  *c.mutable_predicted_latency() = LatencyToProto(r.prediction);
  for (int e : r.design.exits) c.add_enabled_exits(e);
  for (float t : r.design.thresholds) c.add_thresholds(t);
  return c;
}

// The variant directory appears in one rename, complete.
absl::Status Publish(const RepositoryLayout& layout, const std::string& gnuplot,
                     const VariantSpec& spec, const v1::VariantManifest& variant,
                     const std::vector<PrecisionPlan>& plans, const CertifiedSearchResult& result) {
  std::vector<std::vector<ParetoPoint>> each;
  std::vector<ParetoPoint> front = CombinedFront(plans, spec.sla.statistic, &each);
  LatencyPrediction chosen = result.result.prediction;
  Certificate certificate = result.certificate;
  std::string title =
      absl::StrFormat("%s on %s: %s", spec.model, spec.device, DescribeSla(spec.sla));
  if (spec.live_table) {  // the manifest's accuracies, in the same currency
    const double final_accuracy = variant.final_exit_accuracy();
    auto estimate = [&](std::vector<ParetoPoint>& points) {
      for (ParetoPoint& p : points) {
        p.prediction.accuracy = EstimatedAccuracy(p.prediction.accuracy, final_accuracy);
      }
    };
    estimate(front);
    for (std::vector<ParetoPoint>& points : each) estimate(points);
    chosen.accuracy = EstimatedAccuracy(chosen.accuracy, final_accuracy);
    certificate.accuracy_lower = variant.certification().accuracy_lower();
    absl::StrAppend(&title, " (live, ", spec.live_table->num_samples(), " samples)");
  }
  const std::string final_dir = layout.VariantDir(spec.variant_id);
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
    WriteParetoFront(staging, front, each.size() > 1 ? each : decltype(each){}, chosen,
                     result.certification_samples > 0 ? &certificate : nullptr, spec.sla.statistic,
                     gnuplot, title);
    return PublishDirectory(staging, final_dir);
  }();
  if (!written.ok()) {
    std::error_code ec;
    std::filesystem::remove_all(staging, ec);
  }
  return written;
}

}  // namespace

absl::StatusOr<v1::VariantManifest> VariantBuilder::Build(const VariantSpec& spec,
                                                          const v1::DeviceProfile& profile,
                                                          const std::string& job_id,
                                                          const Progress& progress) {
  if (!progress("loading", 0, 0)) return JobCancelled();
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const ModelMetadata> model, Model(spec.model));
  // Validates the profile against the model again: the device may have been
  // registered anew since the job was accepted.
  HAPI_ASSIGN_OR_RETURN(LatencyModel fp32_latency, LatencyModel::Create(profile, model->manifest));
  // A live table replaces the validation split as what the search selects
  // and certifies on; the test split stays for reporting.
  if (spec.live_table) HAPI_RETURN_IF_ERROR(CheckLiveTable(*spec.live_table, model->validation));
  HAPI_ASSIGN_OR_RETURN(std::vector<PrecisionPlan> plans, PlanPrecisions(spec, *model, profile));
  const int searched = static_cast<int>(
      std::count_if(plans.begin(), plans.end(), [](const auto& p) { return p.skipped.empty(); }));
  // Every accuracy drop, whatever the precision, is below the fp32 full
  // network's validation accuracy.
  const double final_accuracy = model->validation.Accuracy(model->manifest.exits_size() - 1);
  bool full_network_only = false;
  const Sla sla = SplitConfidence(
      spec.live_table ? LiveSla(spec.sla, final_accuracy, &full_network_only) : spec.sla, searched);
  HAPI_ASSIGN_OR_RETURN(
      PrecisionPlan * best,
      SearchPrecisions(spec, sla, SlaJudge(sla, final_accuracy), full_network_only,
                       options_.threshold_grid, options_.certify, progress, &plans));
  if (best == nullptr) {
    // Every precision failed: the first searched one says what is achievable.
    const PrecisionPlan& first =
        *std::find_if(plans.begin(), plans.end(), [](const auto& p) { return p.skipped.empty(); });
    absl::Status failed = first.result.status();
    if (full_network_only) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "planning on live traffic allows no disagreement with the full network (%s), so only "
          "the full network qualifies, and it does not meet the SLA: %s",
          spec.sla.max_accuracy_drop >= 0
              ? "a drop of 0"
              : absl::StrFormat("the floor %.2f%% is at or above its validation accuracy %.2f%%",
                                100 * spec.sla.min_accuracy, 100 * final_accuracy),
          failed.message()));
    }
    return failed;
  }
  const CertifiedSearchResult& result = *best->result;
  int64_t evaluated = 0;
  for (const PrecisionPlan& p : plans) {
    if (p.result.ok()) evaluated += p.result->result.stats.designs_evaluated;
  }
  if (!progress("writing", 90, evaluated)) return JobCancelled();
  HAPI_ASSIGN_OR_RETURN(v1::VariantManifest v, DescribeVariant(spec, job_id, *model, fp32_latency,
                                                               *best, result, options_.certify));
  v.mutable_search()->set_designs_evaluated(evaluated);
  for (const PrecisionPlan& p : plans) *v.add_precision_candidates() = DescribeCandidate(p);
  HAPI_RETURN_IF_ERROR(Publish(layout_, options_.gnuplot, spec, v, plans, result));
  progress("writing", 99, evaluated);
  return v;
}

namespace {

std::string FrontCsv(const std::vector<ParetoPoint>& front, LatencyStatistic statistic) {
  std::string csv = absl::StrFormat("%s_latency_ms,accuracy,exits,thresholds,precision\n",
                                    LatencyStatisticName(statistic));
  for (const ParetoPoint& p : front) {
    absl::StrAppendFormat(
        &csv, "%.6f,%.6f,%s,%s,%s\n", StatisticOf(p.prediction, statistic) * 1e3,
        p.prediction.accuracy, absl::StrJoin(p.design.exits, " "),
        absl::StrJoin(p.design.thresholds, " ",
                      [](std::string* o, float t) { absl::StrAppendFormat(o, "%.4f", t); }),
        p.precision);
  }
  return csv;
}

}  // namespace

bool WriteParetoFront(const std::string& dir, const std::vector<ParetoPoint>& front,
                      const std::vector<std::vector<ParetoPoint>>& per_precision,
                      const LatencyPrediction& chosen, const Certificate* certificate,
                      LatencyStatistic statistic, const std::string& gnuplot,
                      const std::string& title) {
  const absl::string_view name = LatencyStatisticName(statistic);
  std::string chosen_csv =
      absl::StrFormat("%s_latency_ms,accuracy", name) +
      (certificate ? absl::StrFormat(",certified_%s_latency_ms,certified_accuracy\n", name)
                   : "\n") +
      absl::StrFormat("%.6f,%.6f", StatisticOf(chosen, statistic) * 1e3, chosen.accuracy) +
      (certificate ? absl::StrFormat(",%.6f,%.6f\n", certificate->latency_upper_s * 1e3,
                                     certificate->accuracy_lower)
                   : "\n");
  if (!WriteFileAtomically(absl::StrCat(dir, "/pareto.csv"), FrontCsv(front, statistic)).ok() ||
      !WriteFileAtomically(absl::StrCat(dir, "/chosen.csv"), chosen_csv).ok()) {
    return false;
  }
  // One series per precision (their own fronts), then the combined front.
  std::string series;
  const char* colours[] = {"dark-orange", "dark-violet", "dark-cyan"};
  for (size_t i = 0; i < per_precision.size(); ++i) {
    if (per_precision[i].empty()) continue;
    const std::string& precision = per_precision[i].front().precision;
    const std::string file = absl::StrCat("pareto-", precision, ".csv");
    if (!WriteFileAtomically(absl::StrCat(dir, "/", file), FrontCsv(per_precision[i], statistic))
             .ok()) {
      return false;
    }
    absl::StrAppendFormat(&series,
                          "'%s' every ::1 using 1:($2*100) with points pt 6 ps 0.6 lc rgb '%s' "
                          "title '%s front', ",
                          file, colours[i % 3], precision);
  }
  // Paths relative to the variant directory, where gnuplot runs: the script
  // stays valid after the directory is published (renamed) or copied.
  std::string script = absl::StrFormat(
      "set terminal svg size 800,500 dynamic background rgb 'white'\n"
      "set output 'pareto.svg'\n"
      "set datafile separator ','\n"
      "set title \"%s\" noenhanced\n"
      "set xlabel '%s latency (ms)'\nset ylabel 'validation accuracy (%%)'\n"
      "set key bottom right\nset grid\n"
      "plot %s'pareto.csv' every ::1 using 1:($2*100) with linespoints pt 7 ps 0.5 title '%s', "
      "'chosen.csv' every ::1 using 1:($2*100) with points pt 9 ps 2 lc rgb 'red' title 'chosen "
      "design'%s\n",
      title, name, series, per_precision.empty() ? "Pareto front" : "combined front",
      certificate ? ", 'chosen.csv' every ::1 using 3:($4*100) with points pt 8 ps 2 lc rgb "
                    "'dark-green' title 'certified bounds'"
                  : "");
  if (!WriteFileAtomically(absl::StrCat(dir, "/pareto.gp"), script).ok()) return false;
  if (gnuplot.empty()) return false;
  const std::string binary = gnuplot.find('/') == std::string::npos
                                 ? gnuplot
                                 : std::filesystem::absolute(gnuplot).string();
  std::string cmd = absl::StrCat("cd '", dir, "' && '", binary, "' pareto.gp 2>/dev/null");
  return std::system(cmd.c_str()) == 0;
}

}  // namespace hapi
