// Design-space exploration: choose enabled exits and threshold(s) for an SLA,
// scored exactly from the validation calibration table and a device profile.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/calibration_table.h"
#include "core/design.h"
#include "core/latency_model.h"
#include "core/sla.h"

namespace hapi {

struct SearchSpace {
  std::vector<int> candidate_exits;  // early exits that may be enabled (ascending)
  std::vector<float> thresholds;     // the threshold grid (ascending)
  bool per_exit_thresholds = false;  // false: one shared threshold (HAPI)
  ExitPolicy policy = ExitPolicy::kMaxSoftmax;
};

// Every early exit of the table as a candidate, and up to `grid_size`
// distinct thresholds at quantiles of the policy's scores over all early
// exits: the grid is dense where the scores are.
SearchSpace DefaultSearchSpace(const CalibrationTable& table, ExitPolicy policy, int grid_size = 64,
                               bool per_exit_thresholds = false);

// Exact scoring with bitsets: for each exit and grid threshold, the set of
// samples whose score clears it. A design's per-depth counts and correct
// answers come from a few AND/popcount passes over 64-sample words, never a
// pass over samples.
class DesignEvaluator {
 public:
  DesignEvaluator(const CalibrationTable& table, const LatencyModel& latency,
                  const SearchSpace& space);

  // `exits` ascending model exits; `thresholds` grid indices, one per exit.
  LatencyPrediction Evaluate(const std::vector<int>& exits, const std::vector<int>& thresholds);
  Design ToDesign(const std::vector<int>& exits, const std::vector<int>& thresholds) const;
  int64_t evaluations() const { return evaluations_; }
  const SearchSpace& space() const { return space_; }
  int grid_size() const { return static_cast<int>(space_.thresholds.size()); }

 private:
  using Bits = std::vector<uint64_t>;
  const Bits& Clears(int exit, int threshold) const {
    return clears_[static_cast<size_t>(exit) * space_.thresholds.size() + threshold];
  }

  const LatencyModel& latency_;
  SearchSpace space_;
  int num_exits_;
  int words_;
  uint64_t last_word_mask_;
  std::vector<Bits> clears_;   // [exit][threshold]
  std::vector<Bits> correct_;  // [exit]
  Bits reference_right_;       // the table's reference_correct
  Bits alive_, leaving_;       // scratch
  int64_t evaluations_ = 0;
};

struct SearchStats {
  std::string algorithm;
  int64_t designs_evaluated = 0;
  double seconds = 0;
};

struct SearchResult {
  Design design;
  LatencyPrediction prediction;
  SearchStats stats;
};

struct SearchProblem {
  const CalibrationTable* table = nullptr;  // validation split
  const LatencyModel* latency = nullptr;
  SearchSpace space;
  Sla sla;
  uint64_t seed = 1;
  // Random search and annealing: how many designs to evaluate.
  int64_t evaluation_budget = 3000;
  // Called now and then with progress in [0, 1] and designs evaluated so far;
  // returning false cancels the search (CANCELLED).
  std::function<bool(double fraction, int64_t evaluated)> progress;
};

class DesignSearch {
 public:
  virtual ~DesignSearch() = default;
  virtual std::string name() const = 0;
  // The best design found. FAILED_PRECONDITION when no evaluated design meets
  // the SLA, with the best achievable value of the constrained quantity.
  virtual absl::StatusOr<SearchResult> Search(const SearchProblem& problem) const = 0;
};

// "exhaustive" (every design of the space, scored per sample: the reference),
// "hapi" (the efficient search), "random", "annealing".
absl::StatusOr<std::unique_ptr<DesignSearch>> MakeDesignSearch(const std::string& name);

// Designs that no other evaluated design beats on both accuracy and the
// statistic, sorted by latency. `designs` and `predictions` are parallel.
std::vector<int> ParetoFront(const std::vector<LatencyPrediction>& predictions,
                             LatencyStatistic statistic);

}  // namespace hapi
