// Certified selection: a design chosen on one part of the validation split
// and certified on another part the choice never saw, so that the SLA's
// stated confidence holds for the design that is chosen, not only for a
// design fixed in advance. docs/certified-slas.md explains the method.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/calibration_table.h"
#include "core/design.h"
#include "core/design_search.h"
#include "core/latency_model.h"
#include "core/sla.h"

namespace hapi {

// log Gamma(x) for x > 0; safe to call from several threads at once.
double LogGamma(double x);

// P(X <= k) for X ~ Binomial(n, p); 0 for k < 0, 1 for k >= n.
double BinomialCdf(int64_t k, int64_t n, double p);

// Exact one-sided Clopper-Pearson bounds on a binomial proportion from
// `successes` of `n`: P(p >= lower) >= confidence, and likewise for upper.
// lower(0, n) = 0 and upper(n, n) = 1.
double ClopperPearsonLower(int64_t successes, int64_t n, double confidence);
double ClopperPearsonUpper(int64_t successes, int64_t n, double confidence);

// The distribution-free upper confidence rank of the q-quantile: the
// smallest rank r (1-based) such that the r-th smallest of n independent
// samples is at or above the q-quantile with probability >= confidence,
// i.e. the smallest r with BinomialCdf(r - 1, n, q) >= confidence. n + 1
// when no order statistic of n samples is (then only a guaranteed maximum
// bounds the quantile).
int64_t QuantileUpperRank(double q, int64_t n, double confidence);

// A design's bounds on the certification part, each one-sided at
// `confidence`; `meets` when all of them are within the SLA.
struct Certificate {
  int num_samples = 0;
  double confidence = 0;
  // Accuracy: point estimate and Clopper-Pearson lower bound.
  double accuracy = 0, accuracy_lower = 0;
  // Final exit's accuracy minus the design's on the same samples: point
  // estimate and upper bound on the paired difference (normal, McNemar
  // variance, continuity-corrected by 1/n; exactly 0 for the full network
  // unless the table's reference is another network: CalibrationTable::SetReference).
  double accuracy_drop = 0, accuracy_drop_upper = 0;
  // The SLA's latency statistic: point estimate and upper bound (mean: normal
  // bound from the paths' spread; p50/p95/p99: the path at QuantileUpperRank;
  // worst case: exact). Seconds.
  double latency_s = 0, latency_upper_s = 0;
  double throughput_lower_rps = 0;  // 1 / the mean's upper bound
  bool meets = false;
};

// Certifies `design` on `table` against every constraint of `sla`: the
// accuracy floor at `accuracy_confidence` and the latency budget and
// throughput floor at `latency_confidence` (each one-sided; meeting all of
// them is an intersection-union test, valid without further correction).
absl::StatusOr<Certificate> CertifyDesign(const Design& design, const CalibrationTable& table,
                                          const LatencyModel& latency, const Sla& sla,
                                          double accuracy_confidence, double latency_confidence);

// How certifying several candidates keeps the stated confidence.
enum class Multiplicity {
  // Candidates tested in a fixed order, strictest first, each at the SLA's
  // confidence; the last one certified before the first failure is chosen.
  kFixedSequence,
  // Every candidate tested at confidence 1 - (1 - c) / candidates; the best
  // certified one is chosen.
  kBonferroni,
};

struct CertifyOptions {
  // Share of the validation samples held out for certification; 0 selects
  // on the whole split without certifying (the search's own margins only).
  double certify_fraction = 0.4;
  uint64_t split_seed = 20200807;
  // Candidates: the search run on the selection part with its margins
  // widened by 0, 1, ..., candidates - 1 steps of `margin_step` standard
  // errors, strictest to loosest; identical designs are certified once.
  int candidates = 6;
  double margin_step = 0.4;
  // Bonferroni: its per-design confidence (98.3% for 90% over 6) also
  // absorbs part of the shift from the validation split to new data, which
  // a bound at exactly the SLA's confidence does not (docs/certified-slas.md).
  Multiplicity multiplicity = Multiplicity::kBonferroni;
};

absl::string_view MultiplicityName(Multiplicity m);  // "fixed-sequence", "bonferroni"
absl::StatusOr<Multiplicity> ParseMultiplicity(absl::string_view name);

struct CertifiedSearchResult {
  // The chosen design, predicted on the whole validation split; stats sum
  // every candidate's search.
  SearchResult result;
  Certificate certificate;  // of the chosen design, on the certification part
  bool certified = false;   // false: no candidate certified (see note)
  // The chosen candidate's margin step, -1 for the full network.
  int candidate = -1;
  int candidates_searched = 0;
  int selection_samples = 0, certification_samples = 0;
  std::string note;  // what was chosen and why, for the variant
};

// Splits problem.table (the validation split), searches the selection part
// for each candidate with `search`, certifies the candidates on the
// certification part and chooses as CertifyOptions::multiplicity says. An
// SLA with an accuracy floor and no latency budget tries the full network
// first (the safest design). When nothing certifies, the strictest
// candidate is returned with certified = false and a note. Errors as
// DesignSearch::Search when the loosest candidate finds nothing.
absl::StatusOr<CertifiedSearchResult> SearchAndCertify(const DesignSearch& search,
                                                       const SearchProblem& problem,
                                                       const CertifyOptions& options);

}  // namespace hapi
