#include "core/certify.h"

#include <math.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status_macros.h"

namespace hapi {
namespace {

// log P(X = i) for X ~ Binomial(n, p), 0 < p < 1.
double LogBinomialPmf(int64_t i, int64_t n, double p) {
  return LogGamma(n + 1.0) - LogGamma(i + 1.0) - LogGamma(n - i + 1.0) + i * std::log(p) +
         (n - i) * std::log1p(-p);
}

// The p in [0, 1] where the decreasing function `f` crosses `target`, by
// bisection to double precision.
template <typename F>
double SolveDecreasing(F f, double target) {
  double lo = 0, hi = 1;
  for (int i = 0; i < 64; ++i) {
    const double mid = 0.5 * (lo + hi);
    (f(mid) > target ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

// The z of a one-sided confidence (0 at 0.5: the point estimate).
double ZOf(double confidence) { return confidence > 0.5 ? NormalQuantile(confidence) : 0.0; }

// `confidence` widened by `extra_z` standard errors, kept below 1.
double Widen(double confidence, double extra_z) {
  return std::min(NormalCdf(ZOf(confidence) + extra_z), 1 - 1e-12);
}

double LatencyUpperBound(const LatencyPrediction& p, LatencyStatistic statistic,
                         double confidence) {
  switch (statistic) {
    case LatencyStatistic::kMean:
      return p.mean_s + ZOf(confidence) * MeanLatencyStandardError(p);
    case LatencyStatistic::kWorst:
      return p.worst_s;
    default: {
      const int64_t rank =
          QuantileUpperRank(PercentileQuantile(statistic), p.num_samples, confidence);
      return rank > p.num_samples ? p.worst_s : PredictedAtRank(p, rank);
    }
  }
}

// What SearchAndCertify tests, in the order it tests them.
struct Candidate {
  Design design;
  int step = -1;  // margin step; -1 for the full network
  SearchStats stats;
};

// The selection part's candidates, loosest (step 0) first. Stops at the
// first step that finds nothing; fails only when step 0 does.
absl::StatusOr<std::vector<Candidate>> SearchCandidates(const DesignSearch& search,
                                                        const SearchProblem& problem,
                                                        const CalibrationTable& selection,
                                                        const CertifyOptions& options) {
  std::vector<Candidate> out;
  const int steps = std::max(1, options.candidates);
  for (int j = 0; j < steps; ++j) {
    SearchProblem p = problem;
    p.table = &selection;
    p.sla.accuracy_confidence = Widen(problem.sla.accuracy_confidence, j * options.margin_step);
    p.sla.latency_confidence = Widen(problem.sla.latency_confidence, j * options.margin_step);
    if (problem.progress) {
      p.progress = [&, j](double fraction, int64_t evaluated) {
        return problem.progress((j + fraction) / steps, evaluated);
      };
    }
    absl::StatusOr<SearchResult> r = search.Search(p);
    if (absl::IsFailedPrecondition(r.status()) && j > 0) break;
    HAPI_RETURN_IF_ERROR(r.status());
    out.push_back({r->design, j, r->stats});
  }
  return out;
}

// The order of the tests: the full network first when it is the safest
// design (an accuracy floor and no latency or throughput constraint), then
// the candidates strictest first, each distinct design once (labelled with
// the loosest step that found it).
std::vector<Candidate> TestOrder(const std::vector<Candidate>& candidates, const Sla& sla) {
  std::vector<Candidate> order;
  if (sla.objective == SlaObjective::kMinLatency && sla.latency_budget_s == 0 &&
      sla.min_throughput_rps == 0) {
    order.push_back({Design::FinalOnly(), -1, {}});
  }
  for (auto it = candidates.rbegin(); it != candidates.rend(); ++it) {
    auto seen = std::find_if(order.begin(), order.end(),
                             [&](const Candidate& c) { return c.design == it->design; });
    if (seen == order.end()) {
      order.push_back(*it);
    } else if (seen->step >= 0) {
      seen->step = it->step;
    }
  }
  return order;
}

std::string DescribeCertificate(const Certificate& c, const Sla& sla) {
  std::string out = absl::StrFormat("on %d held-out samples at %.1f%%: accuracy >= %.2f%%",
                                    c.num_samples, 100 * c.confidence, 100 * c.accuracy_lower);
  if (sla.objective == SlaObjective::kMinLatency && sla.max_accuracy_drop >= 0) {
    absl::StrAppendFormat(&out, ", drop <= %.2f points", 100 * c.accuracy_drop_upper);
  }
  absl::StrAppendFormat(&out, ", %s <= %.3f ms", LatencyStatisticName(sla.statistic),
                        c.latency_upper_s * 1e3);
  return out;
}

}  // namespace

double LogGamma(double x) {
  // lgamma_r, not std::lgamma: std::lgamma writes the sign to the global
  // `signgam`, a data race between threads computing at once.
  int sign;
  return lgamma_r(x, &sign);
}

double BinomialCdf(int64_t k, int64_t n, double p) {
  if (k < 0) return 0;
  if (k >= n) return 1;
  if (p <= 0) return 1;
  if (p >= 1) return 0;
  double sum = 0;
  for (int64_t i = 0; i <= k; ++i) sum += std::exp(LogBinomialPmf(i, n, p));
  return std::min(1.0, sum);
}

double ClopperPearsonLower(int64_t successes, int64_t n, double confidence) {
  if (successes <= 0 || n <= 0) return 0;
  // The p at which seeing >= successes has probability 1 - confidence;
  // P(X >= x) = 1 - Cdf(x - 1) increases with p.
  return SolveDecreasing([&](double p) { return BinomialCdf(successes - 1, n, p); }, confidence);
}

double ClopperPearsonUpper(int64_t successes, int64_t n, double confidence) {
  if (n <= 0 || successes >= n) return 1;
  return SolveDecreasing([&](double p) { return BinomialCdf(successes, n, p); }, 1 - confidence);
}

int64_t QuantileUpperRank(double q, int64_t n, double confidence) {
  if (q >= 1) return n + 1;
  double cdf = 0;
  for (int64_t i = 0; i < n; ++i) {
    cdf += q <= 0 ? (i == 0 ? 1.0 : 0.0) : std::exp(LogBinomialPmf(i, n, q));
    if (cdf >= confidence) return i + 1;
  }
  return n + 1;
}

absl::StatusOr<Certificate> CertifyDesign(const Design& design, const CalibrationTable& table,
                                          const LatencyModel& latency, const Sla& sla,
                                          double accuracy_confidence, double latency_confidence) {
  HAPI_ASSIGN_OR_RETURN(LatencyPrediction p, latency.Predict(design, table));
  Certificate c;
  const int n = p.num_samples;
  c.num_samples = n;
  // The confidence of the SLA's weakest constraint.
  c.confidence = 1;
  if (sla.objective == SlaObjective::kMinLatency) c.confidence = accuracy_confidence;
  if (sla.latency_budget_s > 0 || sla.min_throughput_rps > 0) {
    c.confidence = std::min(c.confidence, latency_confidence);
  }
  c.accuracy = p.accuracy;
  c.accuracy_lower = ClopperPearsonLower(p.correct, n, accuracy_confidence);
  c.accuracy_drop = n > 0 ? static_cast<double>(p.lost - p.gained) / n : 0;
  c.accuracy_drop_upper =
      (design.exits.empty() && !table.has_reference()) || n == 0
          ? 0
          : c.accuracy_drop + ZOf(accuracy_confidence) * p.accuracy_drop_se + 1.0 / n;
  c.latency_s = StatisticOf(p, sla.statistic);
  c.latency_upper_s = LatencyUpperBound(p, sla.statistic, latency_confidence);
  const double mean_upper = LatencyUpperBound(p, LatencyStatistic::kMean, latency_confidence);
  c.throughput_lower_rps = mean_upper > 0 ? 1.0 / mean_upper : 0;
  c.meets = true;
  if (sla.objective == SlaObjective::kMinLatency) {
    c.meets = sla.max_accuracy_drop >= 0 ? c.accuracy_drop_upper <= sla.max_accuracy_drop
                                         : c.accuracy_lower >= sla.min_accuracy;
  }
  if (sla.latency_budget_s > 0 && c.latency_upper_s > sla.latency_budget_s) c.meets = false;
  if (sla.min_throughput_rps > 0 && c.throughput_lower_rps < sla.min_throughput_rps) {
    c.meets = false;
  }
  return c;
}

absl::string_view MultiplicityName(Multiplicity m) {
  return m == Multiplicity::kBonferroni ? "bonferroni" : "fixed-sequence";
}

absl::StatusOr<Multiplicity> ParseMultiplicity(absl::string_view name) {
  if (name == "fixed-sequence") return Multiplicity::kFixedSequence;
  if (name == "bonferroni") return Multiplicity::kBonferroni;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown multiplicity '", name, "' (fixed-sequence, bonferroni)"));
}

namespace {

// The tests' outcome: the chosen entry of the test order (-1: none) and the
// certificate of every entry tested.
struct Certification {
  int chosen = -1;
  std::vector<Certificate> certificates;
};

// The per-test confidences: the SLA's, or Bonferroni's share of them over
// the tests planned before looking (not over what the searches found).
std::pair<double, double> TestConfidences(const Sla& sla, const CertifyOptions& options,
                                          int planned_tests) {
  if (options.multiplicity != Multiplicity::kBonferroni) {
    return {sla.accuracy_confidence, sla.latency_confidence};
  }
  return {1 - (1 - sla.accuracy_confidence) / planned_tests,
          1 - (1 - sla.latency_confidence) / planned_tests};
}

absl::StatusOr<Certification> CertifyInOrder(const std::vector<Candidate>& order,
                                             const CalibrationTable& table,
                                             const LatencyModel& latency, const Sla& sla,
                                             const CertifyOptions& options,
                                             std::pair<double, double> confidences) {
  const auto [accuracy_confidence, latency_confidence] = confidences;
  Certification out;
  for (size_t i = 0; i < order.size(); ++i) {
    HAPI_ASSIGN_OR_RETURN(Certificate c, CertifyDesign(order[i].design, table, latency, sla,
                                                       accuracy_confidence, latency_confidence));
    out.certificates.push_back(c);
    if (c.meets) {
      out.chosen = static_cast<int>(i);
    } else if (options.multiplicity == Multiplicity::kFixedSequence) {
      break;  // the sequence stops at its first failure
    }
  }
  return out;
}

// Certification off: the search on the whole split, as the search sees it.
absl::StatusOr<CertifiedSearchResult> SearchWithoutCertifying(const DesignSearch& search,
                                                              const SearchProblem& problem) {
  CertifiedSearchResult out;
  HAPI_ASSIGN_OR_RETURN(out.result, search.Search(problem));
  out.candidate = 0;
  out.candidates_searched = 1;
  out.selection_samples = problem.table->num_samples();
  out.note = "not certified: selected on the whole validation split (certification off)";
  return out;
}

SearchStats SumStats(const std::vector<Candidate>& candidates) {
  SearchStats sum;
  for (const Candidate& c : candidates) {
    sum.algorithm = c.stats.algorithm;
    sum.designs_evaluated += c.stats.designs_evaluated;
    sum.seconds += c.stats.seconds;
  }
  return sum;
}

}  // namespace

absl::StatusOr<CertifiedSearchResult> SearchAndCertify(const DesignSearch& search,
                                                       const SearchProblem& problem,
                                                       const CertifyOptions& options) {
  if (problem.table == nullptr || problem.latency == nullptr) {
    return absl::InvalidArgumentError("search needs a calibration table and a latency model");
  }
  if (!(options.certify_fraction >= 0 && options.certify_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("certify fraction ", options.certify_fraction, " must be in [0, 1)"));
  }
  if (options.certify_fraction == 0) return SearchWithoutCertifying(search, problem);
  const SampleSplit split =
      SplitSamples(problem.table->num_samples(), options.certify_fraction, options.split_seed);
  const CalibrationTable selection = problem.table->Subset(split.first);
  const CalibrationTable certification = problem.table->Subset(split.second);
  HAPI_ASSIGN_OR_RETURN(std::vector<Candidate> candidates,
                        SearchCandidates(search, problem, selection, options));
  const std::vector<Candidate> order = TestOrder(candidates, problem.sla);
  const int planned = std::max(1, options.candidates) + (order.front().step < 0 ? 1 : 0);
  HAPI_ASSIGN_OR_RETURN(Certification certified,
                        CertifyInOrder(order, certification, *problem.latency, problem.sla, options,
                                       TestConfidences(problem.sla, options, planned)));
  CertifiedSearchResult out;
  out.candidates_searched = static_cast<int>(candidates.size());
  out.selection_samples = selection.num_samples();
  out.certification_samples = certification.num_samples();
  out.certified = certified.chosen >= 0;
  // Nothing certified: the first design of the order, the safest (the full
  // network for a floor, else the strictest candidate), flagged. It was
  // always tested.
  const int index = out.certified ? certified.chosen : 0;
  const Candidate& chosen = order[index];
  out.certificate = certified.certificates[index];
  out.candidate = chosen.step;
  out.result.design = chosen.design;
  HAPI_ASSIGN_OR_RETURN(out.result.prediction,
                        problem.latency->Predict(chosen.design, *problem.table));
  out.result.stats = SumStats(candidates);
  out.note = absl::StrCat(
      out.certified ? "certified "
                    : "NOT certified (no candidate met the SLA on the held-out "
                      "samples; the safest is served) ",
      chosen.step < 0 ? "the full network" : absl::StrCat("candidate at margin step ", chosen.step),
      " of ", out.candidates_searched, " (", MultiplicityName(options.multiplicity), "), ",
      DescribeCertificate(out.certificate, problem.sla));
  return out;
}

}  // namespace hapi
