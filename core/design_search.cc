#include "core/design_search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace hapi {
namespace {

using Clock = std::chrono::steady_clock;

// A point of the design space as grid indices.
struct Point {
  std::vector<int> exits;       // ascending model exits
  std::vector<int> thresholds;  // grid indices, parallel to exits
};

// Keeps the best feasible design seen, and what was closest otherwise, so a
// failed search can say what is achievable.
class Tracker {
 public:
  Tracker(const SearchProblem& problem, std::string algorithm)
      : problem_(problem),
        judge_(problem.sla, problem.table->ReferenceAccuracy()),
        start_(Clock::now()) {
    stats_.algorithm = std::move(algorithm);
  }

  const SlaJudge& judge() const { return judge_; }

  // Returns true when `p` is the new best.
  bool Offer(const Design& design, const LatencyPrediction& p) {
    ++stats_.designs_evaluated;
    double stat = judge_.LatencyBound(p);
    if (!any_ || stat < fastest_stat_) fastest_stat_ = stat;
    const double accuracy = judge_.AccuracyBound(p);
    if (!any_ || accuracy > best_accuracy_) best_accuracy_ = accuracy;
    any_ = true;
    if (!judge_.Feasible(p)) return false;
    if (found_ && !judge_.Better(p, best_.prediction)) return false;
    found_ = true;
    best_.design = design;
    best_.prediction = p;
    return true;
  }

  // Orders two predictions: feasible before infeasible, then by objective,
  // infeasible ones by how far they miss.
  bool Prefer(const LatencyPrediction& a, const LatencyPrediction& b) const {
    double va = judge_.Violation(a), vb = judge_.Violation(b);
    if ((va == 0) != (vb == 0)) return va == 0;
    if (va > 0) return va < vb;
    return judge_.Better(a, b);
  }

  // False when the caller asked to cancel. The callback runs on every 16th
  // call, and always when `force` or at the end, so phase boundaries and
  // short searches can be cancelled too.
  bool Progress(double fraction, bool force = false) {
    if (!problem_.progress) return true;
    if (!force && fraction < 1.0 && ++calls_ % 16 != 0) return true;
    return problem_.progress(std::min(1.0, fraction), stats_.designs_evaluated);
  }
  bool found() const { return found_; }

  absl::StatusOr<SearchResult> Finish() {
    stats_.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    if (!found_) {
      const Sla& sla = problem_.sla;
      if (sla.objective == SlaObjective::kMaxAccuracy ||
          judge_.accuracy_floor() <= best_accuracy_) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "no design meets the SLA (%s); the fastest achievable %s latency on this device is "
            "%.3f ms%s",
            DescribeSla(sla), LatencyStatisticName(sla.statistic), fastest_stat_ * 1e3,
            sla.statistic != LatencyStatistic::kWorst && sla.latency_confidence > 0.5
                ? absl::StrFormat(" (upper bound at %.0f%% confidence)",
                                  100 * sla.latency_confidence)
                : ""));
      }
      return absl::FailedPreconditionError(absl::StrFormat(
          "no design meets the SLA (%s); the best achievable accuracy is %.2f%%%s",
          DescribeSla(sla), 100 * best_accuracy_,
          sla.accuracy_confidence > 0.5 ? absl::StrFormat(" (lower bound at %.0f%% confidence)",
                                                          100 * sla.accuracy_confidence)
                                        : ""));
    }
    best_.stats = stats_;
    return best_;
  }

  SearchStats& stats() { return stats_; }

 private:
  const SearchProblem& problem_;
  SlaJudge judge_;
  Clock::time_point start_;
  SearchStats stats_;
  SearchResult best_;
  bool found_ = false, any_ = false;
  double fastest_stat_ = 0, best_accuracy_ = 0;
  int64_t calls_ = 0;
};

absl::Status CheckProblem(const SearchProblem& p) {
  if (p.table == nullptr || p.latency == nullptr) {
    return absl::InvalidArgumentError("search needs a calibration table and a latency model");
  }
  if (p.table->num_exits() != p.latency->num_exits()) {
    return absl::InvalidArgumentError("calibration table and device profile disagree on exits");
  }
  if (p.space.thresholds.empty()) return absl::InvalidArgumentError("empty threshold grid");
  for (size_t i = 0; i < p.space.thresholds.size(); ++i) {
    float t = p.space.thresholds[i];
    if (!std::isfinite(t) || t < 0 || t > 1) {
      return absl::InvalidArgumentError(absl::StrCat("threshold ", t, " outside [0, 1]"));
    }
    if (i > 0 && t <= p.space.thresholds[i - 1]) {
      return absl::InvalidArgumentError("the threshold grid must be strictly ascending");
    }
  }
  for (size_t i = 0; i < p.space.candidate_exits.size(); ++i) {
    int e = p.space.candidate_exits[i];
    if (e < 0 || e >= p.table->num_exits() - 1 || (i > 0 && e <= p.space.candidate_exits[i - 1])) {
      return absl::InvalidArgumentError("candidate exits must be ascending early exits");
    }
  }
  return ValidateSla(p.sla);
}

Design ToDesign(const SearchSpace& space, const std::vector<int>& exits,
                const std::vector<int>& thresholds) {
  Design d;
  d.exits = exits;
  d.policy = space.policy;
  d.thresholds.reserve(thresholds.size());
  for (int t : thresholds) d.thresholds.push_back(space.thresholds[t]);
  return d;
}
Design ToDesign(const SearchSpace& space, const Point& point) {
  return ToDesign(space, point.exits, point.thresholds);
}

// `from` with exit `e` disabled when it is enabled, else enabled at the
// threshold of its neighbour (the next enabled exit, or the last one), or at
// `first_threshold` when it is the only one.
Point ToggleExit(const Point& from, int e, int first_threshold) {
  Point p = from;
  auto it = std::find(p.exits.begin(), p.exits.end(), e);
  if (it != p.exits.end()) {
    p.thresholds.erase(p.thresholds.begin() + (it - p.exits.begin()));
    p.exits.erase(it);
    return p;
  }
  const auto pos = std::lower_bound(p.exits.begin(), p.exits.end(), e) - p.exits.begin();
  const int t = p.thresholds.empty() ? first_threshold
                                     : p.thresholds[std::min<size_t>(pos, p.thresholds.size() - 1)];
  p.exits.insert(p.exits.begin() + pos, e);
  p.thresholds.insert(p.thresholds.begin() + pos, t);
  return p;
}

// ---------------------------------------------------------------------------
// Exhaustive: every design, scored sample by sample with LatencyModel::Predict
// (deliberately independent of the bitset evaluator: it is the reference).
class ExhaustiveSearch : public DesignSearch {
 public:
  std::string name() const override { return "exhaustive"; }

  absl::StatusOr<SearchResult> Search(const SearchProblem& problem) const override {
    if (absl::Status st = CheckProblem(problem); !st.ok()) return st;
    const SearchSpace& space = problem.space;
    const int k = static_cast<int>(space.candidate_exits.size());
    const int64_t grid = static_cast<int64_t>(space.thresholds.size());
    if (k > 20) return absl::InvalidArgumentError("exhaustive search needs <= 20 candidate exits");
    double total = 0;
    for (int64_t mask = 0; mask < (int64_t{1} << k); ++mask) {
      int bits = __builtin_popcountll(mask);
      total += space.per_exit_thresholds ? std::pow(static_cast<double>(grid), bits)
                                         : (bits == 0 ? 1 : grid);
    }
    if (total > 5e7) {
      return absl::InvalidArgumentError(
          absl::StrFormat("the space holds %.3g designs, too many for exhaustive search", total));
    }
    Tracker tracker(problem, name());
    for (int64_t mask = 0; mask < (int64_t{1} << k); ++mask) {
      Point point;
      for (int i = 0; i < k; ++i) {
        if (mask & (int64_t{1} << i)) point.exits.push_back(space.candidate_exits[i]);
      }
      const int m = static_cast<int>(point.exits.size());
      point.thresholds.assign(m, 0);
      // Odometer over threshold indices (all equal in shared mode).
      while (true) {
        Design d = ToDesign(space, point);
        absl::StatusOr<LatencyPrediction> p = problem.latency->Predict(d, *problem.table);
        if (!p.ok()) return p.status();
        tracker.Offer(d, *p);
        if (!tracker.Progress(tracker.stats().designs_evaluated / total)) {
          return absl::CancelledError("search cancelled");
        }
        if (m == 0) break;
        if (!space.per_exit_thresholds) {
          if (++point.thresholds[0] == grid) break;
          std::fill(point.thresholds.begin(), point.thresholds.end(), point.thresholds[0]);
          continue;
        }
        int pos = 0;
        while (pos < m && ++point.thresholds[pos] == grid) point.thresholds[pos++] = 0;
        if (pos == m) break;
      }
    }
    return tracker.Finish();
  }
};

// ---------------------------------------------------------------------------
// Moves shared by local search and annealing.
Point RandomNeighbour(const SearchSpace& space, const Point& from, std::mt19937_64& rng) {
  const int grid = static_cast<int>(space.thresholds.size());
  const int k = static_cast<int>(space.candidate_exits.size());
  Point p = from;
  std::uniform_int_distribution<int> move(0, 2);
  int kind = p.exits.empty() ? 0 : move(rng);
  if (kind == 0 && k > 0) {  // toggle a candidate exit
    int e = space.candidate_exits[std::uniform_int_distribution<int>(0, k - 1)(rng)];
    p = ToggleExit(p, e, grid / 2);
  } else if (!p.exits.empty()) {  // nudge threshold(s)
    int step = std::uniform_int_distribution<int>(1, std::max(1, grid / 8))(rng) *
               (std::bernoulli_distribution(0.5)(rng) ? 1 : -1);
    if (space.per_exit_thresholds && kind == 2) {
      int i = std::uniform_int_distribution<int>(0, static_cast<int>(p.exits.size()) - 1)(rng);
      p.thresholds[i] = std::clamp(p.thresholds[i] + step, 0, grid - 1);
    } else {
      for (int& t : p.thresholds) t = std::clamp(t + step, 0, grid - 1);
    }
  }
  if (!space.per_exit_thresholds && !p.thresholds.empty()) {
    std::fill(p.thresholds.begin(), p.thresholds.end(), p.thresholds[0]);
  }
  return p;
}

Point RandomPoint(const SearchSpace& space, std::mt19937_64& rng) {
  const int grid = static_cast<int>(space.thresholds.size());
  Point p;
  std::bernoulli_distribution coin(0.5);
  std::uniform_int_distribution<int> t(0, grid - 1);
  int shared = t(rng);
  for (int e : space.candidate_exits) {
    if (!coin(rng)) continue;
    p.exits.push_back(e);
    p.thresholds.push_back(space.per_exit_thresholds ? t(rng) : shared);
  }
  return p;
}

class RandomSearch : public DesignSearch {
 public:
  std::string name() const override { return "random"; }
  absl::StatusOr<SearchResult> Search(const SearchProblem& problem) const override {
    if (absl::Status st = CheckProblem(problem); !st.ok()) return st;
    Tracker tracker(problem, name());
    DesignEvaluator eval(*problem.table, *problem.latency, problem.space);
    std::mt19937_64 rng(problem.seed);
    for (int64_t i = 0; i < problem.evaluation_budget; ++i) {
      Point p = RandomPoint(problem.space, rng);
      tracker.Offer(ToDesign(problem.space, p), eval.Evaluate(p.exits, p.thresholds));
      if (!tracker.Progress(static_cast<double>(i + 1) / problem.evaluation_budget)) {
        return absl::CancelledError("search cancelled");
      }
    }
    return tracker.Finish();
  }
};

class AnnealingSearch : public DesignSearch {
 public:
  std::string name() const override { return "annealing"; }
  absl::StatusOr<SearchResult> Search(const SearchProblem& problem) const override {
    if (absl::Status st = CheckProblem(problem); !st.ok()) return st;
    Tracker tracker(problem, name());
    DesignEvaluator eval(*problem.table, *problem.latency, problem.space);
    std::mt19937_64 rng(problem.seed);
    const SlaJudge& judge = tracker.judge();
    LatencyPrediction full = eval.Evaluate({}, {});
    const double ref = std::max(1e-9, StatisticOf(full, problem.sla.statistic));
    // Energy: the objective plus a steep penalty for missing the SLA.
    auto energy = [&](const LatencyPrediction& p) {
      double objective = problem.sla.objective == SlaObjective::kMaxAccuracy
                             ? -p.accuracy
                             : StatisticOf(p, problem.sla.statistic) / ref;
      return objective + 2.0 * judge.Violation(p);
    };
    Point current = RandomPoint(problem.space, rng);
    LatencyPrediction cp = eval.Evaluate(current.exits, current.thresholds);
    tracker.Offer(ToDesign(problem.space, current), cp);
    double ce = energy(cp);
    const double t0 = 0.02, t1 = 1e-5;
    const int64_t n = std::max<int64_t>(2, problem.evaluation_budget);
    std::uniform_real_distribution<double> u(0, 1);
    for (int64_t i = 1; i < n; ++i) {
      double temp = t0 * std::pow(t1 / t0, static_cast<double>(i) / (n - 1));
      Point next = RandomNeighbour(problem.space, current, rng);
      LatencyPrediction np = eval.Evaluate(next.exits, next.thresholds);
      tracker.Offer(ToDesign(problem.space, next), np);
      double ne = energy(np);
      if (ne <= ce || u(rng) < std::exp((ce - ne) / temp)) {
        current = std::move(next);
        ce = ne;
      }
      if (!tracker.Progress(static_cast<double>(i + 1) / n)) {
        return absl::CancelledError("search cancelled");
      }
    }
    return tracker.Finish();
  }
};

// ---------------------------------------------------------------------------
// The efficient search. See docs/optimizer.md for the reasoning.
//  1. Greedy latency-descent paths, one per grid threshold: start from the
//     full network and repeatedly enable the exit that saves the most latency
//     per point of accuracy lost, until no exit saves latency. Every design on
//     every path is scored and offered. The paths trace the accuracy/latency
//     trade-off for each threshold in K(K+1)/2 evaluations instead of 2^K.
//  2. Hill climbing from the best designs found: toggle one exit (with or
//     without a one-step move of the shared threshold), move the
//     threshold(s) by 2 or 3 grid steps, shift one exit to a neighbour.
//  3. Per-exit thresholds: coordinate descent over each enabled exit's
//     threshold from the shared-threshold optimum.
//  All scoring is incremental on bitsets (DesignEvaluator).
//
// One run of it: the phases share the evaluator, the tracker and the seeds.
// Every design is offered to the tracker in a fixed order, so a run is
// deterministic and ties go to the design found first.
class HapiSearchRun {
 public:
  HapiSearchRun(const SearchProblem& problem, std::string algorithm)
      : space_(problem.space),
        statistic_(problem.sla.statistic),
        tracker_(problem, std::move(algorithm)),
        eval_(*problem.table, *problem.latency, space_),
        grid_(eval_.grid_size()),
        k_(static_cast<int>(space_.candidate_exits.size())) {}

  absl::StatusOr<SearchResult> Run() {
    if (!FollowGreedyPaths()) return Cancelled();
    std::vector<Scored> climbed;
    for (const Scored& seed : seeds_) climbed.push_back(Climb(seed, /*per_exit=*/false));
    if (cancelled_ || !tracker_.Progress(0.9, /*force=*/true)) return Cancelled();
    if (space_.per_exit_thresholds && !TunePerExitThresholds(climbed)) return Cancelled();
    // Nothing feasible found: make sure with a full bitset sweep of the
    // shared-threshold space (cheap: the common case never gets here), so
    // that "infeasible" is exact and states the true fastest latency.
    if (!tracker_.found() && k_ <= 16 && !SweepSharedThresholds()) return Cancelled();
    if (!tracker_.Progress(1.0, /*force=*/true)) return Cancelled();
    return tracker_.Finish();
  }

 private:
  struct Scored {
    Point point;
    LatencyPrediction pred;
  };

  static absl::Status Cancelled() { return absl::CancelledError("search cancelled"); }

  Scored Score(Point point) {
    LatencyPrediction pred = eval_.Evaluate(point.exits, point.thresholds);
    tracker_.Offer(ToDesign(space_, point), pred);
    return {std::move(point), std::move(pred)};
  }

  // Keeps a handful of the most promising designs as hill-climbing seeds.
  void Consider(const Scored& s) {
    seeds_.push_back(s);
    std::sort(seeds_.begin(), seeds_.end(),
              [&](const Scored& a, const Scored& b) { return tracker_.Prefer(a.pred, b.pred); });
    if (seeds_.size() > 12) seeds_.pop_back();
  }

  // Phase 1. False when cancelled.
  bool FollowGreedyPaths() {
    const Scored full = Score(Point());
    Consider(full);
    for (int t = 0; t < grid_; ++t) {
      Point all;
      all.exits = space_.candidate_exits;
      all.thresholds.assign(all.exits.size(), t);
      if (!all.exits.empty()) Consider(Score(std::move(all)));
      FollowGreedyPath(t, full);
      if (!tracker_.Progress(0.8 * (t + 1) / grid_, /*force=*/true)) return false;
    }
    return true;
  }

  // From the full network, enables one exit at a time at grid threshold `t`.
  void FollowGreedyPath(int t, const Scored& full) {
    Scored current = full;
    std::vector<bool> used(k_, false);
    while (true) {
      int best = -1;
      double best_gain = 0;
      Scored best_step;
      for (int i = 0; i < k_; ++i) {
        if (used[i]) continue;
        Scored next = Score(ToggleExit(current.point, space_.candidate_exits[i], t));
        Consider(next);
        const double gain = DescentGain(current.pred, next.pred);
        if (gain > best_gain) {
          best_gain = gain;
          best = i;
          best_step = std::move(next);
        }
      }
      if (best < 0) return;
      used[best] = true;
      current = std::move(best_step);
    }
  }

  // Latency saved per point of accuracy lost by going from `from` to `to`;
  // 0 when nothing is saved.
  double DescentGain(const LatencyPrediction& from, const LatencyPrediction& to) const {
    const LatencyStatistic stat = statistic_;
    // Tail statistics (p95, p99) stay flat while the slowest samples still
    // take the full path; a small share of the mean saving keeps the path
    // moving until the tail moves too.
    const double saved =
        StatisticOf(from, stat) - StatisticOf(to, stat) + 1e-3 * (from.mean_s - to.mean_s);
    if (saved <= 0) return 0;
    const double lost = std::max(from.accuracy - to.accuracy, 0.0) + 1e-4;
    return saved / lost;
  }

  // Phase 2 (and the end of phase 3): steepest-ascent over Neighbours until
  // no neighbour is preferred. Sets cancelled_ when the caller cancels.
  Scored Climb(Scored s, bool per_exit) {
    for (int round = 0; round < 100 && !cancelled_; ++round) {
      if (!tracker_.Progress(0.85, /*force=*/true)) {
        cancelled_ = true;
        break;
      }
      bool improved = false;
      for (Point& n : Neighbours(s.point, per_exit)) {
        if (n.exits == s.point.exits && n.thresholds == s.point.thresholds) continue;
        Scored next = Score(std::move(n));
        if (tracker_.Prefer(next.pred, s.pred)) {
          s = std::move(next);
          improved = true;
        }
      }
      if (!improved) break;
    }
    return s;
  }

  std::vector<Point> Neighbours(const Point& from, bool per_exit) const {
    std::vector<Point> out;
    for (int e : space_.candidate_exits) out.push_back(ToggleExit(from, e, grid_ - 1));
    if (!per_exit) {  // toggle an exit and move the shared threshold together
      const size_t toggles = out.size();
      for (size_t j = 0; j < toggles; ++j) {
        for (int step : {-1, 1}) out.push_back(MoveThresholds(out[j], step));
      }
    }
    if (!from.exits.empty()) {
      // No single steps: the search has always skipped them here (docs/optimizer.md
      // says 1-3), and its published results were measured without them.
      for (int step : {-3, -2, 2, 3}) {
        if (!per_exit) {
          out.push_back(MoveThresholds(from, step));
          continue;
        }
        for (size_t j = 0; j < from.exits.size(); ++j) {
          Point n = from;
          n.thresholds[j] = std::clamp(n.thresholds[j] + step, 0, grid_ - 1);
          out.push_back(std::move(n));
        }
      }
    }
    for (size_t j = 0; j < from.exits.size(); ++j) {  // shift an exit to a free neighbour
      const auto c =
          std::find(space_.candidate_exits.begin(), space_.candidate_exits.end(), from.exits[j]) -
          space_.candidate_exits.begin();
      for (int dir : {-1, 1}) {
        const int ni = static_cast<int>(c) + dir;
        if (ni < 0 || ni >= k_) continue;
        const int e = space_.candidate_exits[ni];
        if (std::find(from.exits.begin(), from.exits.end(), e) != from.exits.end()) continue;
        Point n = from;
        n.exits[j] = e;
        out.push_back(std::move(n));
      }
    }
    return out;
  }

  Point MoveThresholds(Point p, int step) const {
    for (int& t : p.thresholds) t = std::clamp(t + step, 0, grid_ - 1);
    return p;
  }

  // Phase 3. False when cancelled.
  bool TunePerExitThresholds(const std::vector<Scored>& climbed) {
    for (Scored s : climbed) {
      for (int pass = 0; pass < 3; ++pass) {
        if (!tracker_.Progress(0.95, /*force=*/true)) return false;
        if (!DescendEachThreshold(&s)) break;
      }
      Climb(s, /*per_exit=*/true);
      if (cancelled_) return false;
    }
    return true;
  }

  // One pass of coordinate descent over `s`'s thresholds, each over the whole
  // grid. Returns whether anything improved.
  bool DescendEachThreshold(Scored* s) {
    bool improved = false;
    for (size_t j = 0; j < s->point.exits.size(); ++j) {
      for (int t = 0; t < grid_; ++t) {
        if (t == s->point.thresholds[j]) continue;
        Point n = s->point;
        n.thresholds[j] = t;
        Scored next = Score(std::move(n));
        if (tracker_.Prefer(next.pred, s->pred)) {
          *s = std::move(next);
          improved = true;
        }
      }
    }
    return improved;
  }

  // False when cancelled.
  bool SweepSharedThresholds() {
    for (int64_t mask = 1; mask < (int64_t{1} << k_); ++mask) {
      Point p;
      for (int i = 0; i < k_; ++i) {
        if (mask & (int64_t{1} << i)) p.exits.push_back(space_.candidate_exits[i]);
      }
      for (int t = 0; t < grid_; ++t) {
        p.thresholds.assign(p.exits.size(), t);
        Score(p);
      }
      if (!tracker_.Progress(0.97, /*force=*/(mask & 63) == 0)) return false;
    }
    return true;
  }

  const SearchSpace& space_;
  const LatencyStatistic statistic_;
  Tracker tracker_;  // before eval_: the search's seconds include building it
  DesignEvaluator eval_;
  const int grid_;
  const int k_;
  std::vector<Scored> seeds_;  // best first, at most 12
  bool cancelled_ = false;
};

class HapiSearch : public DesignSearch {
 public:
  std::string name() const override { return "hapi"; }

  absl::StatusOr<SearchResult> Search(const SearchProblem& problem) const override {
    if (absl::Status st = CheckProblem(problem); !st.ok()) return st;
    return HapiSearchRun(problem, name()).Run();
  }
};

}  // namespace

// ---------------------------------------------------------------------------
SearchSpace DefaultSearchSpace(const CalibrationTable& table, ExitPolicy policy, int grid_size,
                               bool per_exit_thresholds) {
  SearchSpace space;
  space.policy = policy;
  space.per_exit_thresholds = per_exit_thresholds;
  for (int e = 0; e + 1 < table.num_exits(); ++e) space.candidate_exits.push_back(e);
  std::vector<float> scores;
  for (int e = 0; e + 1 < table.num_exits(); ++e) {
    for (int s = 0; s < table.num_samples(); ++s) scores.push_back(table.score(policy, e, s));
  }
  std::sort(scores.begin(), scores.end());
  grid_size = std::max(2, grid_size);
  for (int i = 0; i < grid_size && !scores.empty(); ++i) {
    // Quantiles over the whole range, denser towards the top where the
    // accuracy/latency trade-off is decided: q = 1 - (1 - i/(n-1))^2. The low
    // end matters for tail-latency SLAs, which need most samples out early.
    double u = 1.0 - static_cast<double>(i) / (grid_size - 1);
    double q = 1.0 - u * u;
    size_t idx = std::min(scores.size() - 1, static_cast<size_t>(q * (scores.size() - 1)));
    float t = std::clamp(scores[idx], 0.0f, 1.0f);
    if (space.thresholds.empty() || t > space.thresholds.back()) space.thresholds.push_back(t);
  }
  if (space.thresholds.empty()) space.thresholds.push_back(1.0f);
  return space;
}

DesignEvaluator::DesignEvaluator(const CalibrationTable& table, const LatencyModel& latency,
                                 const SearchSpace& space)
    : latency_(latency), space_(space), num_exits_(table.num_exits()) {
  const int n = table.num_samples();
  words_ = (n + 63) / 64;
  last_word_mask_ = (n % 64 == 0) ? ~uint64_t{0} : ((uint64_t{1} << (n % 64)) - 1);
  const size_t grid = space.thresholds.size();
  clears_.assign(static_cast<size_t>(num_exits_) * grid, Bits(words_, 0));
  correct_.assign(num_exits_, Bits(words_, 0));
  reference_right_.assign(words_, 0);
  for (int s = 0; s < n; ++s) {
    if (table.reference_correct(s)) reference_right_[s / 64] |= uint64_t{1} << (s % 64);
  }
  for (int e = 0; e < num_exits_; ++e) {
    for (int s = 0; s < n; ++s) {
      const uint64_t bit = uint64_t{1} << (s % 64);
      if (table.correct(e, s)) correct_[e][s / 64] |= bit;
      if (e == num_exits_ - 1) continue;
      float score = table.score(space.policy, e, s);
      // Thresholds ascend: the sample clears every threshold up to its score.
      for (size_t t = 0; t < grid && space.thresholds[t] <= score; ++t) {
        clears_[e * grid + t][s / 64] |= bit;
      }
    }
  }
  alive_.resize(words_);
  leaving_.resize(words_);
}

LatencyPrediction DesignEvaluator::Evaluate(const std::vector<int>& exits,
                                            const std::vector<int>& thresholds) {
  ++evaluations_;
  std::fill(alive_.begin(), alive_.end(), ~uint64_t{0});
  if (words_ > 0) alive_.back() = last_word_mask_;
  std::vector<int> counts(exits.size() + 1, 0);
  const Bits& final_right = correct_[num_exits_ - 1];
  // Drops are counted against the reference (the table's own final exit, or
  // the fp32 full network for an int8 table).
  const Bits& reference = reference_right_;
  int correct = 0, lost = 0, gained = 0;
  for (size_t k = 0; k < exits.size(); ++k) {
    const Bits& clears = Clears(exits[k], thresholds[k]);
    const Bits& right = correct_[exits[k]];
    int leaving = 0, right_count = 0;
    for (int w = 0; w < words_; ++w) {
      uint64_t out = alive_[w] & clears[w];
      leaving += __builtin_popcountll(out);
      right_count += __builtin_popcountll(out & right[w]);
      lost += __builtin_popcountll(out & ~right[w] & reference[w]);
      gained += __builtin_popcountll(out & right[w] & ~reference[w]);
      alive_[w] &= ~out;
    }
    counts[k] = leaving;
    correct += right_count;
  }
  int rest = 0;
  for (int w = 0; w < words_; ++w) {
    rest += __builtin_popcountll(alive_[w]);
    correct += __builtin_popcountll(alive_[w] & final_right[w]);
    lost += __builtin_popcountll(alive_[w] & ~final_right[w] & reference[w]);
    gained += __builtin_popcountll(alive_[w] & final_right[w] & ~reference[w]);
  }
  counts.back() = rest;
  return latency_.FromPathCounts(ToDesign(exits, thresholds), counts, correct, lost, gained);
}

Design DesignEvaluator::ToDesign(const std::vector<int>& exits,
                                 const std::vector<int>& thresholds) const {
  return hapi::ToDesign(space_, exits, thresholds);
}

absl::StatusOr<std::unique_ptr<DesignSearch>> MakeDesignSearch(const std::string& name) {
  if (name == "exhaustive") return std::unique_ptr<DesignSearch>(new ExhaustiveSearch());
  if (name == "hapi") return std::unique_ptr<DesignSearch>(new HapiSearch());
  if (name == "random") return std::unique_ptr<DesignSearch>(new RandomSearch());
  if (name == "annealing") return std::unique_ptr<DesignSearch>(new AnnealingSearch());
  return absl::InvalidArgumentError(
      absl::StrCat("unknown search '", name, "' (hapi, exhaustive, random, annealing)"));
}

std::vector<int> ParetoFront(const std::vector<LatencyPrediction>& predictions,
                             LatencyStatistic statistic) {
  std::vector<int> order(predictions.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    double sa = StatisticOf(predictions[a], statistic), sb = StatisticOf(predictions[b], statistic);
    if (sa != sb) return sa < sb;
    return predictions[a].accuracy > predictions[b].accuracy;
  });
  std::vector<int> front;
  double best_accuracy = -1;
  for (int i : order) {
    if (predictions[i].accuracy > best_accuracy) {
      front.push_back(i);
      best_accuracy = predictions[i].accuracy;
    }
  }
  return front;
}

}  // namespace hapi
