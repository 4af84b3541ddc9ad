// Design-space search on synthetic calibration tables: exactness of the
// exhaustive reference, quality and cost of the HAPI search, feasibility of
// every algorithm's answer, SLA objectives, errors, cancellation, the bitset
// evaluator and the Pareto front.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/calibration_table.h"
#include "core/design.h"
#include "core/design_search.h"
#include "core/latency_model.h"
#include "core/sla.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/optimizer/synthetic_model.h"
#include "tests/status_matchers.h"

namespace hapi {
namespace {

using ::hapi::testing::IsOk;
using ::hapi::testing::MakeInt8Table;
using ::hapi::testing::MakeSyntheticManifest;
using ::hapi::testing::MakeSyntheticProfile;
using ::hapi::testing::MakeSyntheticTable;
using ::hapi::testing::PartMs;
using ::hapi::testing::StatusIs;
using ::testing::HasSubstr;

constexpr double kMs = 1e-3;
const std::vector<std::string> kAlgorithms = {"exhaustive", "hapi", "random", "annealing"};
const std::vector<LatencyStatistic> kStatistics = {LatencyStatistic::kMean, LatencyStatistic::kP50,
                                                   LatencyStatistic::kP95, LatencyStatistic::kP99,
                                                   LatencyStatistic::kWorst};

std::unique_ptr<DesignSearch> Search(const std::string& name) {
  absl::StatusOr<std::unique_ptr<DesignSearch>> s = MakeDesignSearch(name);
  EXPECT_THAT(s, IsOk());
  return s.ok() ? *std::move(s) : nullptr;
}

Sla MaxAccuracy(double budget_s, LatencyStatistic stat = LatencyStatistic::kMean) {
  Sla sla;
  sla.objective = SlaObjective::kMaxAccuracy;
  sla.latency_budget_s = budget_s;
  sla.statistic = stat;
  return sla;
}

Sla MinLatency(double min_accuracy, LatencyStatistic stat = LatencyStatistic::kMean) {
  Sla sla;
  sla.objective = SlaObjective::kMinLatency;
  sla.min_accuracy = min_accuracy;
  sla.statistic = stat;
  return sla;
}

// Every design of `space`, enumerated here independently of the library.
std::vector<Design> EnumerateDesigns(const SearchSpace& space) {
  std::vector<Design> out;
  const int k = static_cast<int>(space.candidate_exits.size());
  const int grid = static_cast<int>(space.thresholds.size());
  for (int mask = 0; mask < (1 << k); ++mask) {
    Design d;
    d.policy = space.policy;
    for (int i = 0; i < k; ++i) {
      if (mask & (1 << i)) d.exits.push_back(space.candidate_exits[i]);
    }
    const int m = static_cast<int>(d.exits.size());
    if (m == 0) {
      out.push_back(d);
      continue;
    }
    if (!space.per_exit_thresholds) {
      for (float t : space.thresholds) {
        d.thresholds.assign(m, t);
        out.push_back(d);
      }
      continue;
    }
    std::vector<int> idx(m, 0);
    while (true) {
      d.thresholds.clear();
      for (int i : idx) d.thresholds.push_back(space.thresholds[i]);
      out.push_back(d);
      int pos = 0;
      while (pos < m && ++idx[pos] == grid) idx[pos++] = 0;
      if (pos == m) break;
    }
  }
  return out;
}

struct Scored {
  Design design;
  LatencyPrediction prediction;
};

// The paired standard error of the drop from the final exit, counted here
// sample by sample.
double DropStandardError(const Design& d, const CalibrationTable& table) {
  const int final_exit = table.num_exits() - 1, n = table.num_samples();
  double lost = 0, gained = 0;
  for (int s = 0; s < n; ++s) {
    int exit = final_exit;
    for (size_t k = 0; k < d.exits.size(); ++k) {
      if (table.score(d.policy, d.exits[k], s) >= d.thresholds[k]) {
        exit = d.exits[k];
        break;
      }
    }
    lost += table.correct(final_exit, s) && !table.correct(exit, s);
    gained += !table.correct(final_exit, s) && table.correct(exit, s);
  }
  return std::sqrt(lost + gained - (lost - gained) * (lost - gained) / n) / n;
}

constexpr double kZ90 = 1.2815515655446004;  // standard normal quantile at 0.9

// The nearest-rank percentile at the upper 90% confidence rank
// q + z sqrt(q (1 - q) / n), from every sample's path latency, counted here.
double UpperPercentile(const Design& d, const CalibrationTable& table, const LatencyModel& latency,
                       double q) {
  const int n = table.num_samples();
  std::vector<double> seconds;
  for (int s = 0; s < n; ++s) {
    int depth = static_cast<int>(d.exits.size());
    for (size_t k = 0; k < d.exits.size(); ++k) {
      if (table.score(d.policy, d.exits[k], s) >= d.thresholds[k]) {
        depth = static_cast<int>(k);
        break;
      }
    }
    seconds.push_back(latency.PathLatency(d, depth));
  }
  std::sort(seconds.begin(), seconds.end());
  const double upper = std::min(1.0, q + kZ90 * std::sqrt(q * (1 - q) / n));
  const int rank = std::max(1, static_cast<int>(std::ceil(upper * n)));
  return seconds[rank - 1];
}

// The SLA's optimum over every design of `space`, by brute force with
// LatencyModel::Predict and a judge written here (not SlaJudge). Supports
// accuracy_confidence 0.5 and, for accuracy-drop floors, 0.9; latency_confidence
// 0.5 and, for a p95 budget, 0.9.
std::optional<Scored> BruteForce(const SearchSpace& space, const Sla& sla,
                                 const CalibrationTable& table, const LatencyModel& latency) {
  EXPECT_TRUE(sla.accuracy_confidence == 0.5 ||
              (sla.accuracy_confidence == 0.9 && sla.max_accuracy_drop >= 0));
  EXPECT_TRUE(sla.latency_confidence == 0.5 ||
              (sla.latency_confidence == 0.9 && sla.statistic == LatencyStatistic::kP95));
  const double z = sla.accuracy_confidence == 0.9 ? kZ90 : 0.0;
  const double floor =
      sla.objective == SlaObjective::kMinLatency
          ? (sla.max_accuracy_drop >= 0
                 ? std::max(0.0, table.Accuracy(table.num_exits() - 1) - sla.max_accuracy_drop)
                 : sla.min_accuracy)
          : 0.0;
  std::optional<Scored> best;
  for (const Design& d : EnumerateDesigns(space)) {
    absl::StatusOr<LatencyPrediction> p = latency.Predict(d, table);
    EXPECT_THAT(p, IsOk());
    if (!p.ok()) continue;
    const double stat = StatisticOf(*p, sla.statistic);
    const double bound =
        sla.latency_confidence == 0.9 ? UpperPercentile(d, table, latency, 0.95) : stat;
    if (sla.latency_budget_s > 0 && bound > sla.latency_budget_s) continue;
    if (p->accuracy - (z > 0 ? z * DropStandardError(d, table) : 0.0) < floor) continue;
    if (best) {
      const double best_stat = StatisticOf(best->prediction, sla.statistic);
      bool better;
      if (sla.objective == SlaObjective::kMaxAccuracy) {
        better = p->accuracy > best->prediction.accuracy ||
                 (p->accuracy == best->prediction.accuracy && stat < best_stat);
      } else {
        better = stat < best_stat || (stat == best_stat && p->accuracy > best->prediction.accuracy);
      }
      if (!better) continue;
    }
    best = Scored{d, *p};
  }
  return best;
}

// The prediction of `result.design` recomputed sample by sample, checked
// against what the search reported and against the SLA.
void ExpectMeetsSla(const SearchResult& result, const Sla& sla, const CalibrationTable& table,
                    const LatencyModel& latency, const std::string& context) {
  SCOPED_TRACE(context + ": " + DescribeDesign(result.design));
  EXPECT_THAT(ValidateDesign(result.design, table.num_exits()), IsOk());
  absl::StatusOr<LatencyPrediction> p = latency.Predict(result.design, table);
  ASSERT_THAT(p, IsOk());
  EXPECT_DOUBLE_EQ(p->accuracy, result.prediction.accuracy);
  EXPECT_DOUBLE_EQ(p->mean_s, result.prediction.mean_s);
  EXPECT_DOUBLE_EQ(p->p95_s, result.prediction.p95_s);
  EXPECT_DOUBLE_EQ(p->worst_s, result.prediction.worst_s);
  if (sla.latency_budget_s > 0) {
    EXPECT_LE(StatisticOf(*p, sla.statistic), sla.latency_budget_s)
        << LatencyStatisticName(sla.statistic);
  }
  if (sla.objective == SlaObjective::kMinLatency) {
    EXPECT_GE(p->accuracy, AccuracyFloor(sla, table.Accuracy(table.num_exits() - 1)));
  }
  if (sla.min_throughput_rps > 0) {
    EXPECT_GE(p->throughput_rps, sla.min_throughput_rps);
  }
}

// 2000 samples, 6 exits (5 early + final), 10 classes; device "dev".
class SearchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    table_ = new CalibrationTable(MakeSyntheticTable(2000, 6, 10, /*seed=*/42));
    manifest_ = new v1::ModelManifest(MakeSyntheticManifest("synth", 6));
    profile_ = new v1::DeviceProfile(MakeSyntheticProfile("dev", *manifest_));
    absl::StatusOr<LatencyModel> latency = LatencyModel::Create(*profile_, *manifest_);
    ASSERT_THAT(latency, IsOk());
    latency_ = new LatencyModel(*std::move(latency));
  }
  static void TearDownTestSuite() {
    delete latency_;
    delete profile_;
    delete manifest_;
    delete table_;
  }

  SearchProblem Problem(const Sla& sla, int grid = 64, bool per_exit = false,
                        ExitPolicy policy = ExitPolicy::kMaxSoftmax) const {
    SearchProblem p;
    p.table = table_;
    p.latency = latency_;
    p.space = DefaultSearchSpace(*table_, policy, grid, per_exit);
    p.sla = sla;
    return p;
  }

  LatencyPrediction PredictOrDie(const Design& d) const {
    absl::StatusOr<LatencyPrediction> p = latency_->Predict(d, *table_);
    EXPECT_THAT(p, IsOk());
    return p.ok() ? *p : LatencyPrediction{};
  }

  double FullNetworkMean() const { return PredictOrDie(Design::FinalOnly()).mean_s; }

  // The fastest mean latency of any design in the default shared space.
  double FastestMean() const {
    SearchSpace space = DefaultSearchSpace(*table_, ExitPolicy::kMaxSoftmax, 64);
    double fastest = std::numeric_limits<double>::infinity();
    for (const Design& d : EnumerateDesigns(space)) {
      fastest = std::min(fastest, PredictOrDie(d).mean_s);
    }
    return fastest;
  }

  static CalibrationTable* table_;
  static v1::ModelManifest* manifest_;
  static v1::DeviceProfile* profile_;
  static LatencyModel* latency_;
};

CalibrationTable* SearchTest::table_ = nullptr;
v1::ModelManifest* SearchTest::manifest_ = nullptr;
v1::DeviceProfile* SearchTest::profile_ = nullptr;
LatencyModel* SearchTest::latency_ = nullptr;

TEST_F(SearchTest, SyntheticTableHasDeeperExitsMoreAccurateAndConfident) {
  double previous_accuracy = 0, previous_confidence = 0;
  for (int e = 0; e < table_->num_exits(); ++e) {
    double confidence = 0;
    for (int s = 0; s < table_->num_samples(); ++s) confidence += table_->confidence(e, s);
    confidence /= table_->num_samples();
    EXPECT_GT(table_->Accuracy(e), previous_accuracy) << "exit " << e;
    EXPECT_GT(confidence, previous_confidence) << "exit " << e;
    previous_accuracy = table_->Accuracy(e);
    previous_confidence = confidence;
  }
  EXPECT_GT(table_->Accuracy(5), 0.85);
  EXPECT_LT(table_->Accuracy(0), 0.7);
  // A search needs a trade-off: early exits must be much cheaper.
  EXPECT_LT(FastestMean(), 0.5 * FullNetworkMean());
}

TEST_F(SearchTest, MakeDesignSearchKnowsTheFourAlgorithms) {
  for (const std::string& name : kAlgorithms) {
    std::unique_ptr<DesignSearch> s = Search(name);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->name(), name);
  }
  EXPECT_THAT(MakeDesignSearch("greedy"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown search 'greedy'")));
  EXPECT_THAT(MakeDesignSearch(""), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(SearchTest, DefaultSearchSpaceUsesEveryEarlyExitAndAnAscendingGrid) {
  for (ExitPolicy policy : {ExitPolicy::kMaxSoftmax, ExitPolicy::kEntropy, ExitPolicy::kMargin}) {
    SearchSpace space = DefaultSearchSpace(*table_, policy, 64, true);
    EXPECT_EQ(space.candidate_exits, (std::vector<int>{0, 1, 2, 3, 4}));
    EXPECT_TRUE(space.per_exit_thresholds);
    EXPECT_EQ(space.policy, policy);
    ASSERT_FALSE(space.thresholds.empty());
    EXPECT_LE(space.thresholds.size(), 64u);
    EXPECT_GE(space.thresholds.size(), 32u) << "continuous scores should give a dense grid";
    for (size_t i = 0; i < space.thresholds.size(); ++i) {
      EXPECT_GE(space.thresholds[i], 0.0f);
      EXPECT_LE(space.thresholds[i], 1.0f);
      if (i > 0) {
        EXPECT_GT(space.thresholds[i], space.thresholds[i - 1]);
      }
    }
  }
  EXPECT_EQ(DefaultSearchSpace(*table_, ExitPolicy::kMaxSoftmax, 8).thresholds.size(), 8u);
}

// ---------------------------------------------------------------------------
// A 4-sample, 3-exit model small enough to score by hand. Stages 1 ms each,
// every head 0.1 ms, no overhead. True label 0 everywhere.
//   sample  exit0 (conf, right?)  exit1           final
//   s0      0.95 right            0.97 right      right
//   s1      0.60 wrong            0.95 right      right
//   s2      0.70 right            0.60 wrong      right
//   s3      0.92 wrong            0.80 wrong      right
// Threshold grid {0.9}:
//   final only    acc 4/4  mean 3.1 ms
//   {0}           acc 3/4  mean (1.1*2 + 3.2*2)/4          = 2.15 ms
//   {1}           acc 4/4  mean (2.1*2 + 3.2*2)/4          = 2.65 ms
//   {0, 1}        acc 3/4  mean (1.1*2 + 2.2 + 3.3)/4      = 1.925 ms
class HandModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    manifest_ = MakeSyntheticManifest("hand", 3);
    profile_.set_name("hand-dev");
    profile_.set_model("hand");
    profile_.set_model_macs(manifest_.full_network_macs());
    v1::BatchProfile* b = profile_.add_batches();
    b->set_batch_size(1);
    for (int i = 0; i < 3; ++i) {
      *b->add_stages() = PartMs(1.0);
      *b->add_exits() = PartMs(0.1);
    }
    *b->mutable_overhead() = PartMs(0.0);
    absl::StatusOr<LatencyModel> latency = LatencyModel::Create(profile_, manifest_);
    ASSERT_THAT(latency, IsOk());
    latency_.emplace(*std::move(latency));

    table_ = CalibrationTable(4, 3, 10);
    const float conf[4][2] = {{0.95f, 0.97f}, {0.60f, 0.95f}, {0.70f, 0.60f}, {0.92f, 0.80f}};
    const bool right[4][2] = {{true, true}, {false, true}, {true, false}, {false, false}};
    for (int s = 0; s < 4; ++s) {
      table_.SetTrueLabel(s, 0);
      for (int e = 0; e < 3; ++e) {
        ExitScores sc;
        sc.label = (e == 2 || right[s][e]) ? 0 : 1 + s;
        float c = e == 2 ? 0.99f : conf[s][e];
        for (float& v : sc.scores) v = c;
        table_.Set(e, s, sc);
      }
    }
    space_.candidate_exits = {0, 1};
    space_.thresholds = {0.9f};
  }

  absl::StatusOr<SearchResult> Run(const std::string& algorithm, const Sla& sla) {
    SearchProblem p;
    p.table = &table_;
    p.latency = &*latency_;
    p.space = space_;
    p.sla = sla;
    p.evaluation_budget = 200;
    return Search(algorithm)->Search(p);
  }

  v1::ModelManifest manifest_;
  v1::DeviceProfile profile_;
  std::optional<LatencyModel> latency_;
  CalibrationTable table_;
  SearchSpace space_;
};

TEST_F(HandModelTest, PredictionsMatchTheHandComputedTable) {
  struct Row {
    Design design;
    double accuracy, mean_ms;
  } rows[] = {{Design::FinalOnly(), 1.0, 3.1},
              {Design::Shared({0}, 0.9f), 0.75, 2.15},
              {Design::Shared({1}, 0.9f), 1.0, 2.65},
              {Design::Shared({0, 1}, 0.9f), 0.75, 1.925}};
  for (const Row& r : rows) {
    absl::StatusOr<LatencyPrediction> p = latency_->Predict(r.design, table_);
    ASSERT_THAT(p, IsOk());
    EXPECT_DOUBLE_EQ(p->accuracy, r.accuracy) << DescribeDesign(r.design);
    EXPECT_NEAR(p->mean_s, r.mean_ms * kMs, 1e-12) << DescribeDesign(r.design);
  }
}

TEST_F(HandModelTest, EveryAlgorithmFindsTheHandOptimum) {
  for (const std::string& algorithm : kAlgorithms) {
    SCOPED_TRACE(algorithm);
    // Plenty of budget: full network and {1} tie on accuracy; {1} is faster.
    absl::StatusOr<SearchResult> r = Run(algorithm, MaxAccuracy(3.2 * kMs));
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->design, Design::Shared({1}, 0.9f)) << DescribeDesign(r->design);
    // 2.5 ms rules out every 100% design; of the 75% ones {0, 1} is faster.
    r = Run(algorithm, MaxAccuracy(2.5 * kMs));
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->design, Design::Shared({0, 1}, 0.9f)) << DescribeDesign(r->design);
    // Below the fastest design.
    EXPECT_THAT(Run(algorithm, MaxAccuracy(1.9 * kMs)),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("fastest achievable mean latency on this device is 1.925 ms")));
    // Fastest design with every answer right.
    r = Run(algorithm, MinLatency(1.0));
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->design, Design::Shared({1}, 0.9f)) << DescribeDesign(r->design);
    // A 70% floor admits the fastest design.
    r = Run(algorithm, MinLatency(0.7));
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->design, Design::Shared({0, 1}, 0.9f)) << DescribeDesign(r->design);
    // No accuracy drop allowed: floor = final accuracy = 100%.
    Sla no_drop = MinLatency(0);
    no_drop.max_accuracy_drop = 0;
    r = Run(algorithm, no_drop);
    ASSERT_THAT(r, IsOk());
    EXPECT_EQ(r->design, Design::Shared({1}, 0.9f)) << DescribeDesign(r->design);
  }
}

// ---------------------------------------------------------------------------
TEST_F(SearchTest, ExhaustiveFindsTheBruteForceOptimumOnATinySpace) {
  for (bool per_exit : {false, true}) {
    SearchSpace space;
    space.candidate_exits = {0, 2, 4};
    space.thresholds = {0.55f, 0.7f, 0.85f, 0.95f};
    space.per_exit_thresholds = per_exit;
    const size_t designs = EnumerateDesigns(space).size();
    EXPECT_EQ(designs, per_exit ? 125u : 29u);  // (1+4)^3 and 1 + 7*4
    const double full = FullNetworkMean();
    for (int i = 1; i <= 12; ++i) {
      for (LatencyStatistic stat : {LatencyStatistic::kMean, LatencyStatistic::kP95}) {
        const double budget = full * i / 12.0;
        SCOPED_TRACE(absl::StrFormat("per_exit=%d budget=%.4f ms stat=%s", per_exit, budget / kMs,
                                     LatencyStatisticName(stat)));
        SearchProblem p;
        p.table = table_;
        p.latency = latency_;
        p.space = space;
        p.sla = MaxAccuracy(budget, stat);
        std::optional<Scored> truth = BruteForce(space, p.sla, *table_, *latency_);
        absl::StatusOr<SearchResult> r = Search("exhaustive")->Search(p);
        if (!truth) {
          EXPECT_THAT(r, StatusIs(absl::StatusCode::kFailedPrecondition));
          continue;
        }
        ASSERT_THAT(r, IsOk());
        EXPECT_EQ(r->stats.algorithm, "exhaustive");
        EXPECT_EQ(r->stats.designs_evaluated, static_cast<int64_t>(designs));
        EXPECT_DOUBLE_EQ(r->prediction.accuracy, truth->prediction.accuracy);
        EXPECT_DOUBLE_EQ(StatisticOf(r->prediction, stat), StatisticOf(truth->prediction, stat));
        ExpectMeetsSla(*r, p.sla, *table_, *latency_, "exhaustive");
      }
    }
  }
}

TEST_F(SearchTest, ExhaustiveEvaluatesTheWholeDefaultSpace) {
  SearchProblem p = Problem(MaxAccuracy(FullNetworkMean()));
  const int64_t grid = static_cast<int64_t>(p.space.thresholds.size());
  absl::StatusOr<SearchResult> r = Search("exhaustive")->Search(p);
  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->stats.designs_evaluated, 1 + 31 * grid);
  EXPECT_GE(r->stats.seconds, 0);
  std::optional<Scored> truth = BruteForce(p.space, p.sla, *table_, *latency_);
  ASSERT_TRUE(truth.has_value());
  EXPECT_DOUBLE_EQ(r->prediction.accuracy, truth->prediction.accuracy);
  EXPECT_DOUBLE_EQ(r->prediction.mean_s, truth->prediction.mean_s);
}

TEST_F(SearchTest, ExhaustiveRefusesSpacesAboveItsCap) {
  // (1 + 64)^5 per-exit designs = 1.16e9 > 5e7.
  SearchProblem p = Problem(MaxAccuracy(FullNetworkMean()), 64, /*per_exit=*/true);
  ASSERT_EQ(p.space.thresholds.size(), 64u);
  EXPECT_THAT(Search("exhaustive")->Search(p),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("too many")));
}

TEST_F(SearchTest, HapiIsWithinATenthOfAPointOfExhaustiveAndFarCheaper) {
  const double fastest = FastestMean(), full = FullNetworkMean();
  ASSERT_LT(fastest, full);
  int budgets = 0;
  int64_t hapi_evaluations = 0, exhaustive_evaluations = 0;
  for (int i = 0; i <= 12; ++i) {
    const double budget = fastest + (full - fastest) * i / 12.0;
    SCOPED_TRACE(absl::StrFormat("budget %.4f ms", budget / kMs));
    SearchProblem p = Problem(MaxAccuracy(budget));
    absl::StatusOr<SearchResult> exact = Search("exhaustive")->Search(p);
    absl::StatusOr<SearchResult> hapi = Search("hapi")->Search(p);
    ASSERT_THAT(exact, IsOk());
    ASSERT_THAT(hapi, IsOk());
    ExpectMeetsSla(*hapi, p.sla, *table_, *latency_, "hapi");
    EXPECT_LE(hapi->prediction.accuracy, exact->prediction.accuracy + 1e-12)
        << "the heuristic cannot beat the reference on the same space";
    EXPECT_GE(hapi->prediction.accuracy, exact->prediction.accuracy - 0.001)
        << "hapi " << DescribeDesign(hapi->design) << " vs exhaustive "
        << DescribeDesign(exact->design);
    EXPECT_EQ(hapi->stats.algorithm, "hapi");
    hapi_evaluations += hapi->stats.designs_evaluated;
    exhaustive_evaluations += exact->stats.designs_evaluated;
    ++budgets;
  }
  EXPECT_GE(budgets, 10);
  RecordProperty("hapi_evaluations", std::to_string(hapi_evaluations));
  RecordProperty("exhaustive_evaluations", std::to_string(exhaustive_evaluations));
  // With only 5 candidates the space is small (2^5 subsets); hapi must still
  // cost less than enumerating it. The 11-exit test below shows the gap grow.
  EXPECT_LT(hapi_evaluations, exhaustive_evaluations)
      << hapi_evaluations << " vs " << exhaustive_evaluations;
}

// With more candidate exits the exhaustive space doubles per exit while the
// HAPI search grows polynomially.
TEST(SearchScalingTest, HapiEvaluatesFarFewerDesignsWithManyExits) {
  const CalibrationTable table = MakeSyntheticTable(500, 11, 10, /*seed=*/7);
  const v1::ModelManifest manifest = MakeSyntheticManifest("deep", 11);
  absl::StatusOr<LatencyModel> latency =
      LatencyModel::Create(MakeSyntheticProfile("dev", manifest), manifest);
  ASSERT_THAT(latency, IsOk());
  SearchProblem p;
  p.table = &table;
  p.latency = &*latency;
  p.space = DefaultSearchSpace(table, ExitPolicy::kMaxSoftmax, 32);
  absl::StatusOr<LatencyPrediction> full = latency->Predict(Design::FinalOnly(), table);
  ASSERT_THAT(full, IsOk());
  p.sla = MaxAccuracy(0.6 * full->mean_s);
  absl::StatusOr<SearchResult> exact = MakeDesignSearch("exhaustive").value()->Search(p);
  absl::StatusOr<SearchResult> hapi = MakeDesignSearch("hapi").value()->Search(p);
  ASSERT_THAT(exact, IsOk());
  ASSERT_THAT(hapi, IsOk());
  EXPECT_EQ(exact->stats.designs_evaluated,
            1 + 1023 * static_cast<int64_t>(p.space.thresholds.size()));
  EXPECT_LT(hapi->stats.designs_evaluated * 5, exact->stats.designs_evaluated)
      << hapi->stats.designs_evaluated << " vs " << exact->stats.designs_evaluated;
  EXPECT_GE(hapi->prediction.accuracy, exact->prediction.accuracy - 0.004);  // 2 samples of 500
}

TEST_F(SearchTest, RandomAndAnnealingReturnFeasibleDesigns) {
  const double fastest = FastestMean(), full = FullNetworkMean();
  for (const char* algorithm : {"random", "annealing"}) {
    for (int i = 1; i <= 6; ++i) {
      for (uint64_t seed : {1u, 2u, 3u}) {
        const double budget = fastest + (full - fastest) * i / 6.0;
        SearchProblem p = Problem(MaxAccuracy(budget));
        p.seed = seed;
        p.evaluation_budget = 1500;
        absl::StatusOr<SearchResult> r = Search(algorithm)->Search(p);
        ASSERT_THAT(r, IsOk()) << algorithm << " budget " << budget / kMs << " ms seed " << seed;
        EXPECT_EQ(r->stats.algorithm, algorithm);
        EXPECT_EQ(r->stats.designs_evaluated, 1500);
        ExpectMeetsSla(*r, p.sla, *table_, *latency_,
                       absl::StrFormat("%s budget %.3f ms seed %d", algorithm, budget / kMs, seed));
      }
    }
  }
}

TEST_F(SearchTest, RandomSearchIsDeterministicForASeed) {
  SearchProblem p = Problem(MaxAccuracy(0.6 * FullNetworkMean()));
  p.seed = 1234;
  for (const char* algorithm : {"random", "annealing"}) {
    absl::StatusOr<SearchResult> a = Search(algorithm)->Search(p);
    absl::StatusOr<SearchResult> b = Search(algorithm)->Search(p);
    ASSERT_THAT(a, IsOk());
    ASSERT_THAT(b, IsOk());
    EXPECT_EQ(a->design, b->design) << algorithm;
    EXPECT_EQ(a->prediction.accuracy, b->prediction.accuracy) << algorithm;
  }
}

TEST_F(SearchTest, EveryAlgorithmMeetsItsSlaForEveryStatistic) {
  std::map<std::string, int> tried, answered;  // by algorithm
  for (bool per_exit : {false, true}) {
    for (LatencyStatistic stat : kStatistics) {
      // Budgets between the fastest and the slowest value of this statistic.
      double lo = std::numeric_limits<double>::infinity(), hi = 0;
      for (const Design& d :
           EnumerateDesigns(DefaultSearchSpace(*table_, ExitPolicy::kMaxSoftmax, 16))) {
        double v = StatisticOf(PredictOrDie(d), stat);
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      for (double f : {0.15, 0.5, 0.9}) {
        const double budget = lo + (hi - lo) * f;
        for (const std::string& algorithm : kAlgorithms) {
          if (algorithm == "exhaustive" && per_exit) continue;  // 17^5 designs: covered elsewhere
          SearchProblem p = Problem(MaxAccuracy(budget, stat), 16, per_exit);
          p.evaluation_budget = 1000;
          absl::StatusOr<SearchResult> r = Search(algorithm)->Search(p);
          const std::string context =
              absl::StrFormat("%s per_exit=%d %s <= %.4f ms", algorithm, per_exit,
                              LatencyStatisticName(stat), budget / kMs);
          ++tried[algorithm];
          answered[algorithm] += r.ok();
          if (algorithm == "exhaustive") {
            ASSERT_THAT(r, IsOk()) << context;
          } else if (!r.ok()) {
            // The heuristics may miss a feasible design (see
            // HapiFindsFeasibleDesignsForTailLatencySlas), but
            // only ever by saying so.
            EXPECT_THAT(r, StatusIs(absl::StatusCode::kFailedPrecondition)) << context;
            continue;
          }
          ExpectMeetsSla(*r, p.sla, *table_, *latency_, context);
        }
      }
    }
  }
  // A heuristic that always said "infeasible" would pass the loop above.
  for (const std::string& algorithm : kAlgorithms) {
    EXPECT_GE(answered[algorithm], tried[algorithm] * 9 / 10)
        << algorithm << " found a design for " << answered[algorithm] << " of " << tried[algorithm]
        << " SLAs";
  }
}

TEST_F(SearchTest, ThroughputFloorIsHonoured) {
  const double full = FullNetworkMean();
  Sla sla = MaxAccuracy(full);                  // any design meets the latency budget ...
  sla.min_throughput_rps = 1.0 / (0.5 * full);  // ... but this needs half the mean
  for (const std::string& algorithm : kAlgorithms) {
    SearchProblem p = Problem(sla);
    absl::StatusOr<SearchResult> r = Search(algorithm)->Search(p);
    ASSERT_THAT(r, IsOk()) << algorithm;
    ExpectMeetsSla(*r, sla, *table_, *latency_, algorithm);
    EXPECT_LE(r->prediction.mean_s, 0.5 * full * (1 + 1e-12)) << algorithm;
  }
}

TEST_F(SearchTest, MinLatencyWithAnAccuracyFloor) {
  const double final_accuracy = table_->Accuracy(5);
  for (double floor : {0.5, 0.8, final_accuracy - 0.01, final_accuracy}) {
    SCOPED_TRACE(absl::StrFormat("floor %.4f", floor));
    SearchProblem p = Problem(MinLatency(floor));
    std::optional<Scored> truth = BruteForce(p.space, p.sla, *table_, *latency_);
    ASSERT_TRUE(truth.has_value());
    absl::StatusOr<SearchResult> exact = Search("exhaustive")->Search(p);
    ASSERT_THAT(exact, IsOk());
    EXPECT_DOUBLE_EQ(exact->prediction.mean_s, truth->prediction.mean_s);
    EXPECT_GE(exact->prediction.accuracy, floor);
    for (const char* algorithm : {"hapi", "random", "annealing"}) {
      absl::StatusOr<SearchResult> r = Search(algorithm)->Search(p);
      ASSERT_THAT(r, IsOk()) << algorithm;
      ExpectMeetsSla(*r, p.sla, *table_, *latency_, algorithm);
      EXPECT_GE(r->prediction.mean_s, truth->prediction.mean_s - 1e-15) << algorithm;
    }
    // HAPI is close to the minimum latency too.
    absl::StatusOr<SearchResult> hapi = Search("hapi")->Search(p);
    ASSERT_THAT(hapi, IsOk());
    EXPECT_LE(hapi->prediction.mean_s, truth->prediction.mean_s * 1.05);
  }
}

TEST_F(SearchTest, MinLatencyWithABudgetAsWell) {
  Sla sla = MinLatency(0.8);
  sla.latency_budget_s = FullNetworkMean();
  SearchProblem p = Problem(sla);
  absl::StatusOr<SearchResult> r = Search("exhaustive")->Search(p);
  ASSERT_THAT(r, IsOk());
  ExpectMeetsSla(*r, sla, *table_, *latency_, "exhaustive");
  // A budget below what the floor needs: infeasible, and it says so.
  sla.latency_budget_s = 0.5 * r->prediction.mean_s;
  EXPECT_THAT(Search("exhaustive")->Search(Problem(sla)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("fastest achievable")));
}

TEST_F(SearchTest, MinLatencyWithAMaximumAccuracyDrop) {
  const double final_accuracy = table_->Accuracy(5);
  for (double drop : {0.0, 0.005, 0.02, 0.1}) {
    SCOPED_TRACE(absl::StrFormat("drop %.3f", drop));
    Sla sla = MinLatency(/*min_accuracy ignored=*/0.99);
    sla.max_accuracy_drop = drop;
    SearchProblem p = Problem(sla);
    std::optional<Scored> truth = BruteForce(p.space, sla, *table_, *latency_);
    ASSERT_TRUE(truth.has_value());
    for (const std::string& algorithm : kAlgorithms) {
      absl::StatusOr<SearchResult> r = Search(algorithm)->Search(p);
      ASSERT_THAT(r, IsOk()) << algorithm;
      EXPECT_GE(r->prediction.accuracy, final_accuracy - drop - 1e-12) << algorithm;
      ExpectMeetsSla(*r, sla, *table_, *latency_, algorithm);
      if (algorithm == "exhaustive") {
        EXPECT_DOUBLE_EQ(r->prediction.mean_s, truth->prediction.mean_s);
      }
    }
    if (drop > 0.01) {
      // Giving up accuracy must buy latency on this table.
      EXPECT_LT(truth->prediction.mean_s, FullNetworkMean());
    }
  }
}

// An int8 table (3% of its answers changed at every exit) is scored
// against the fp32 full network: the bitset evaluator counts exactly what
// Predict counts sample by sample, and the drop is the reference's accuracy
// minus the design's.
TEST_F(SearchTest, Int8TablesAreScoredAgainstTheirFp32Reference) {
  const CalibrationTable int8 = MakeInt8Table(*table_, 0.03, /*seed=*/9);
  ASSERT_TRUE(int8.has_reference());
  const int n = int8.num_samples();
  const double reference = table_->Accuracy(5);
  EXPECT_DOUBLE_EQ(int8.ReferenceAccuracy(), reference);
  EXPECT_LT(int8.Accuracy(5), reference);
  const SearchSpace space = DefaultSearchSpace(int8, ExitPolicy::kMaxSoftmax, 8);
  DesignEvaluator eval(int8, *latency_, space);
  const int k = static_cast<int>(space.candidate_exits.size());
  for (int mask = 0; mask < (1 << k); ++mask) {
    std::vector<int> exits;
    for (int i = 0; i < k; ++i) {
      if (mask & (1 << i)) exits.push_back(space.candidate_exits[i]);
    }
    for (int t = 0; t < eval.grid_size(); ++t) {
      const std::vector<int> th(exits.size(), t);
      const LatencyPrediction fast = eval.Evaluate(exits, th);
      ASSERT_OK_AND_ASSIGN(LatencyPrediction slow,
                           latency_->Predict(eval.ToDesign(exits, th), int8));
      SCOPED_TRACE(DescribeDesign(eval.ToDesign(exits, th)));
      EXPECT_EQ(fast.correct, slow.correct);
      EXPECT_EQ(fast.lost, slow.lost);
      EXPECT_EQ(fast.gained, slow.gained);
      EXPECT_DOUBLE_EQ(fast.accuracy_drop_se, slow.accuracy_drop_se);
      EXPECT_EQ(fast.lost - fast.gained,
                static_cast<int>(std::lround(reference * n)) - fast.correct);
      if (exits.empty()) break;
    }
  }
  // The drop is a floor below the fp32 full network for every search: the
  // int8 full network itself is ~2.7 points below it, so a 1-point drop is
  // out of reach (it would not be against the int8 table's own final exit)
  // and a 5-point one is met.
  Sla sla = MinLatency(/*min_accuracy ignored=*/0.99);
  sla.max_accuracy_drop = 0.01;
  SearchProblem p;
  p.table = &int8;
  p.latency = latency_;
  p.space = DefaultSearchSpace(int8, ExitPolicy::kMaxSoftmax, 64);
  p.sla = sla;
  EXPECT_THAT(Search("exhaustive")->Search(p), StatusIs(absl::StatusCode::kFailedPrecondition));
  p.sla.max_accuracy_drop = 0.05;
  for (const std::string& algorithm : kAlgorithms) {
    absl::StatusOr<SearchResult> r = Search(algorithm)->Search(p);
    ASSERT_THAT(r, IsOk()) << algorithm;
    EXPECT_GE(r->prediction.accuracy, reference - 0.05 - 1e-12) << algorithm;
    EXPECT_LT(r->prediction.accuracy, reference) << algorithm;
  }
}

TEST_F(SearchTest, AccuracyConfidenceKeepsAMarginForSamplingError) {
  const double final_accuracy = table_->Accuracy(5);
  Sla confident = MinLatency(/*min_accuracy ignored=*/0.99);
  confident.accuracy_confidence = 0.9;
  int binding = 0;
  for (double drop : {0.005, 0.01, 0.02, 0.05}) {
    SCOPED_TRACE(absl::StrFormat("drop %.3f", drop));
    confident.max_accuracy_drop = drop;
    Sla point = confident;
    point.accuracy_confidence = 0.5;
    std::optional<Scored> loose = BruteForce(Problem(point).space, point, *table_, *latency_);
    SearchProblem p = Problem(confident);
    std::optional<Scored> truth = BruteForce(p.space, confident, *table_, *latency_);
    ASSERT_TRUE(loose.has_value() && truth.has_value());
    EXPECT_GE(truth->prediction.mean_s, loose->prediction.mean_s);
    if (loose->prediction.accuracy - kZ90 * DropStandardError(loose->design, *table_) <
        final_accuracy - drop) {
      // The point-estimate optimum is too close to the floor to hold at
      // 90%: the margin costs latency.
      EXPECT_GT(truth->prediction.mean_s, loose->prediction.mean_s);
      ++binding;
    }
    for (const std::string& algorithm : kAlgorithms) {
      absl::StatusOr<SearchResult> r = Search(algorithm)->Search(p);
      ASSERT_THAT(r, IsOk()) << algorithm;
      EXPECT_GE(r->prediction.accuracy - kZ90 * r->prediction.accuracy_drop_se,
                final_accuracy - drop - 1e-12)
          << algorithm;
      EXPECT_NEAR(r->prediction.accuracy_drop_se, DropStandardError(r->design, *table_), 1e-12)
          << algorithm;
      if (algorithm == "exhaustive") {
        EXPECT_DOUBLE_EQ(r->prediction.mean_s, truth->prediction.mean_s);
      }
    }
  }
  EXPECT_GT(binding, 0) << "the margin never mattered on this table";
  // Out of range: refused.
  for (double c : {0.3, 1.0, std::nan("")}) {
    confident.accuracy_confidence = c;
    EXPECT_THAT(Search("hapi")->Search(Problem(confident)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("confidence")));
  }
}

TEST_F(SearchTest, LatencyConfidenceKeepsTailBudgetsAwayFromTheCliff) {
  const double full_p95 = PredictOrDie(Design::FinalOnly()).p95_s;
  SearchProblem any = Problem(MaxAccuracy(full_p95, LatencyStatistic::kP95));
  int binding = 0, feasible = 0;
  for (double f : {0.5, 0.6, 0.7, 0.8, 0.88, 0.9, 0.95, 0.98}) {
    SCOPED_TRACE(absl::StrFormat("budget %.2f x full p95", f));
    Sla point = MaxAccuracy(f * full_p95, LatencyStatistic::kP95);
    Sla confident = point;
    confident.latency_confidence = 0.9;
    std::optional<Scored> loose = BruteForce(any.space, point, *table_, *latency_);
    std::optional<Scored> truth = BruteForce(any.space, confident, *table_, *latency_);
    if (loose &&
        UpperPercentile(loose->design, *table_, *latency_, 0.95) > point.latency_budget_s) {
      ++binding;  // the plain optimum sits on a cliff the margin refuses
      if (truth) {
        EXPECT_LE(truth->prediction.accuracy, loose->prediction.accuracy);
      }
    }
    SearchProblem p = Problem(confident);
    for (const std::string& algorithm : {std::string("exhaustive"), std::string("hapi")}) {
      absl::StatusOr<SearchResult> r = Search(algorithm)->Search(p);
      if (!truth) {
        EXPECT_THAT(r, StatusIs(absl::StatusCode::kFailedPrecondition,
                                HasSubstr("upper bound at 90% confidence")))
            << algorithm;
        continue;
      }
      ASSERT_THAT(r, IsOk()) << algorithm;
      EXPECT_LE(UpperPercentile(r->design, *table_, *latency_, 0.95), confident.latency_budget_s)
          << algorithm;
      if (algorithm == "exhaustive") {
        EXPECT_DOUBLE_EQ(r->prediction.accuracy, truth->prediction.accuracy);
      }
    }
    feasible += truth.has_value();
  }
  EXPECT_GT(binding, 0) << "the margin never mattered on this table";
  EXPECT_GT(feasible, 0);
  // Out of range: refused.
  Sla bad = MaxAccuracy(full_p95, LatencyStatistic::kP95);
  bad.latency_confidence = 1;
  EXPECT_THAT(Search("hapi")->Search(Problem(bad)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("latency confidence")));
}

TEST(SlaTest, NormalQuantile) {
  EXPECT_NEAR(NormalQuantile(0.5), 0, 1e-12);
  EXPECT_NEAR(NormalQuantile(0.9), kZ90, 1e-9);
  EXPECT_NEAR(NormalQuantile(0.975), 1.959963984540054, 1e-9);
  EXPECT_NEAR(NormalQuantile(0.1), -kZ90, 1e-9);
}

TEST_F(SearchTest, InfeasibleBudgetSaysWhatIsAchievable) {
  const double fastest = FastestMean();
  const std::string expected = absl::StrFormat(
      "the fastest achievable mean latency on this device is %.3f ms", fastest / kMs);
  for (const std::string& algorithm : kAlgorithms) {
    SearchProblem p = Problem(MaxAccuracy(0.5 * fastest));
    absl::StatusOr<SearchResult> r = Search(algorithm)->Search(p);
    EXPECT_THAT(r, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("fastest achievable")))
        << algorithm;
    if (algorithm == "exhaustive" || algorithm == "hapi") {
      // Both score the fastest design of the space (hapi's greedy paths end
      // at it), so the number is exact.
      EXPECT_THAT(r, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr(expected)))
          << algorithm;
    }
  }
}

TEST_F(SearchTest, UnreachableAccuracyFloorSaysWhatIsAchievable) {
  for (const std::string& algorithm : kAlgorithms) {
    EXPECT_THAT(Search(algorithm)->Search(Problem(MinLatency(1.0))),
                StatusIs(absl::StatusCode::kFailedPrecondition,
                         HasSubstr("the best achievable accuracy is")))
        << algorithm;
  }
}

TEST_F(SearchTest, BadBudgetsAreInvalidArguments) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (const std::string& algorithm : kAlgorithms) {
    for (double budget : {nan, -1e-3, -inf, inf, 0.0}) {
      EXPECT_THAT(Search(algorithm)->Search(Problem(MaxAccuracy(budget))),
                  StatusIs(absl::StatusCode::kInvalidArgument))
          << algorithm << " budget " << budget;
    }
    Sla min_latency = MinLatency(0.5);
    min_latency.latency_budget_s = nan;
    EXPECT_THAT(Search(algorithm)->Search(Problem(min_latency)),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << algorithm;
    for (double floor : {nan, -0.1, 1.5}) {
      EXPECT_THAT(Search(algorithm)->Search(Problem(MinLatency(floor))),
                  StatusIs(absl::StatusCode::kInvalidArgument))
          << algorithm << " floor " << floor;
    }
    Sla drop = MinLatency(0);
    drop.max_accuracy_drop = nan;
    EXPECT_THAT(Search(algorithm)->Search(Problem(drop)),
                StatusIs(absl::StatusCode::kInvalidArgument));
    Sla throughput = MaxAccuracy(1e-3);
    throughput.min_throughput_rps = -5;
    EXPECT_THAT(Search(algorithm)->Search(Problem(throughput)),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

TEST_F(SearchTest, MalformedProblemsAreInvalidArguments) {
  const Sla sla = MaxAccuracy(FullNetworkMean());
  for (const std::string& algorithm : kAlgorithms) {
    SCOPED_TRACE(algorithm);
    SearchProblem p = Problem(sla);
    p.table = nullptr;
    EXPECT_THAT(Search(algorithm)->Search(p), StatusIs(absl::StatusCode::kInvalidArgument));
    p = Problem(sla);
    p.latency = nullptr;
    EXPECT_THAT(Search(algorithm)->Search(p), StatusIs(absl::StatusCode::kInvalidArgument));
    p = Problem(sla);
    p.space.thresholds.clear();
    EXPECT_THAT(Search(algorithm)->Search(p), StatusIs(absl::StatusCode::kInvalidArgument));
    p = Problem(sla);
    p.space.thresholds.push_back(1.5f);
    EXPECT_THAT(Search(algorithm)->Search(p), StatusIs(absl::StatusCode::kInvalidArgument));
    p = Problem(sla);
    p.space.candidate_exits = {2, 1};
    EXPECT_THAT(Search(algorithm)->Search(p), StatusIs(absl::StatusCode::kInvalidArgument));
    p = Problem(sla);
    p.space.candidate_exits = {0, 5};  // the final exit is not a candidate
    EXPECT_THAT(Search(algorithm)->Search(p), StatusIs(absl::StatusCode::kInvalidArgument));
    // A table of another shape than the profile.
    CalibrationTable other = MakeSyntheticTable(100, 4, 10, 3);
    p = Problem(sla);
    p.table = &other;
    p.space = DefaultSearchSpace(other, ExitPolicy::kMaxSoftmax, 8);
    EXPECT_THAT(Search(algorithm)->Search(p), StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

TEST_F(SearchTest, PerExitThresholdsNeverLoseToSharedThresholds) {
  const double fastest = FastestMean(), full = FullNetworkMean();
  int strictly_better = 0;
  for (int i = 0; i <= 10; ++i) {
    const double budget = fastest + (full - fastest) * i / 10.0;
    SearchProblem shared = Problem(MaxAccuracy(budget), 64, false);
    SearchProblem per_exit = Problem(MaxAccuracy(budget), 64, true);
    absl::StatusOr<SearchResult> a = Search("hapi")->Search(shared);
    absl::StatusOr<SearchResult> b = Search("hapi")->Search(per_exit);
    ASSERT_THAT(a, IsOk());
    ASSERT_THAT(b, IsOk());
    EXPECT_GE(b->prediction.accuracy, a->prediction.accuracy)
        << "budget " << budget / kMs << " ms: per-exit " << DescribeDesign(b->design) << " shared "
        << DescribeDesign(a->design);
    ExpectMeetsSla(*b, per_exit.sla, *table_, *latency_, "hapi per-exit");
    strictly_better += b->prediction.accuracy > a->prediction.accuracy;
  }
  RecordProperty("per_exit_strictly_better", std::to_string(strictly_better));
  // The reference on a space small enough for per-exit exhaustive search.
  SearchSpace space;
  space.candidate_exits = {0, 1, 3};
  space.thresholds = {0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 0.95f};
  int compared = 0;
  for (int i = 0; i <= 10; ++i) {
    const double budget = fastest + (full - fastest) * i / 10.0;
    SearchProblem p;
    p.table = table_;
    p.latency = latency_;
    p.space = space;
    p.sla = MaxAccuracy(budget);
    absl::StatusOr<SearchResult> a = Search("exhaustive")->Search(p);
    p.space.per_exit_thresholds = true;
    absl::StatusOr<SearchResult> b = Search("exhaustive")->Search(p);
    if (!a.ok()) {
      EXPECT_THAT(a, StatusIs(absl::StatusCode::kFailedPrecondition));
      continue;
    }
    ASSERT_THAT(b, IsOk());
    EXPECT_GE(b->prediction.accuracy, a->prediction.accuracy) << "budget " << budget / kMs;
    ++compared;
  }
  EXPECT_GE(compared, 5) << "the small space meets too few of the budgets to compare";
}

TEST_F(SearchTest, ProgressIsMonotonicAndEndsAtOne) {
  for (const std::string& algorithm : kAlgorithms) {
    SearchProblem p = Problem(MaxAccuracy(0.6 * FullNetworkMean()));
    std::vector<double> fractions;
    std::vector<int64_t> evaluated;
    p.progress = [&](double f, int64_t n) {
      fractions.push_back(f);
      evaluated.push_back(n);
      return true;
    };
    absl::StatusOr<SearchResult> r = Search(algorithm)->Search(p);
    ASSERT_THAT(r, IsOk()) << algorithm;
    ASSERT_FALSE(fractions.empty()) << algorithm;
    for (size_t i = 0; i < fractions.size(); ++i) {
      EXPECT_GE(fractions[i], 0.0) << algorithm;
      EXPECT_LE(fractions[i], 1.0) << algorithm;
      if (i > 0) {
        EXPECT_GE(fractions[i], fractions[i - 1]) << algorithm << " call " << i;
        EXPECT_GE(evaluated[i], evaluated[i - 1]) << algorithm << " call " << i;
      }
    }
    EXPECT_DOUBLE_EQ(fractions.back(), 1.0) << algorithm;
    EXPECT_EQ(evaluated.back(), r->stats.designs_evaluated) << algorithm;
  }
}

TEST_F(SearchTest, ProgressReturningFalseCancels) {
  for (const std::string& algorithm : kAlgorithms) {
    // Cancelling at the first progress call must stop every algorithm.
    for (int cancel_after : algorithm == "hapi" ? std::vector<int>{1} : std::vector<int>{1, 3}) {
      SearchProblem p =
          Problem(MaxAccuracy(0.6 * FullNetworkMean()), 64, /*per_exit=*/algorithm == "hapi");
      ASSERT_EQ(p.space.thresholds.size(), 64u);
      int calls = 0;
      p.progress = [&](double, int64_t) { return ++calls < cancel_after; };
      EXPECT_THAT(Search(algorithm)->Search(p), StatusIs(absl::StatusCode::kCancelled))
          << algorithm << " cancelled at call " << cancel_after;
      EXPECT_EQ(calls, cancel_after) << algorithm << ": no progress call after cancelling";
    }
  }
}

// Regression: HapiSearch must consult `progress` (and honour a cancel) even
// with a small threshold grid, not only every n-th call.
TEST_F(SearchTest, HapiHonoursCancellationWithASmallGrid) {
  SearchProblem p = Problem(MaxAccuracy(0.6 * FullNetworkMean()), 16, /*per_exit=*/true);
  int calls = 0;
  p.progress = [&](double, int64_t) {
    ++calls;
    return false;
  };
  EXPECT_THAT(Search("hapi")->Search(p), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_GE(calls, 1);
}

// Regression: for tail statistics (p95, p99) enabling any single exit makes
// the statistic worse (the slowest 5% still take the full path, now with one
// more head). A greedy path that only follows the statistic stops at once and
// used to answer FAILED_PRECONDITION although exhaustive search finds
// feasible designs (e.g. exits [1, 2, 3, 4] at p95 3.41 ms on this table).
TEST_F(SearchTest, HapiFindsFeasibleDesignsForTailLatencySlas) {
  const double full_p95 = PredictOrDie(Design::FinalOnly()).p95_s;
  for (double f : {0.88, 0.9, 0.95, 0.98}) {
    SearchProblem p = Problem(MaxAccuracy(f * full_p95, LatencyStatistic::kP95));
    absl::StatusOr<SearchResult> exact = Search("exhaustive")->Search(p);
    ASSERT_THAT(exact, IsOk()) << "budget " << f << " x full p95";
    absl::StatusOr<SearchResult> hapi = Search("hapi")->Search(p);
    ASSERT_THAT(hapi, IsOk()) << "budget " << f << " x full p95; exhaustive found "
                              << DescribeDesign(exact->design);
    // Tail statistics have plateaus; hapi finds a feasible design whenever
    // one exists and stays close to the optimum (0.2 points on this table).
    EXPECT_GE(hapi->prediction.accuracy, exact->prediction.accuracy - 0.005);
  }
}

// Regression: DesignEvaluator relies on an ascending threshold grid (a sample
// "clears every threshold up to its score"); an unsorted grid such as
// {0.9, 0.5} would be scored wrongly, so it must be rejected.
TEST_F(SearchTest, UnsortedThresholdGridIsRejected) {
  SearchProblem p = Problem(MaxAccuracy(2.5 * kMs));
  p.space.thresholds = {0.9f, 0.5f};
  for (const std::string& algorithm : kAlgorithms) {
    EXPECT_THAT(Search(algorithm)->Search(p), StatusIs(absl::StatusCode::kInvalidArgument))
        << algorithm;
  }
}

TEST_F(SearchTest, EvaluatorAgreesWithPredictOnRandomDesigns) {
  std::mt19937_64 rng(99);
  for (ExitPolicy policy : {ExitPolicy::kMaxSoftmax, ExitPolicy::kEntropy, ExitPolicy::kMargin}) {
    SearchSpace space = DefaultSearchSpace(*table_, policy, 48, /*per_exit=*/true);
    DesignEvaluator eval(*table_, *latency_, space);
    ASSERT_EQ(eval.grid_size(), static_cast<int>(space.thresholds.size()));
    std::uniform_int_distribution<int> threshold(0, eval.grid_size() - 1);
    for (int trial = 0; trial < 400; ++trial) {
      std::vector<int> exits, thresholds;
      for (int e : space.candidate_exits) {
        if (rng() % 2) {
          exits.push_back(e);
          thresholds.push_back(threshold(rng));
        }
      }
      const Design design = eval.ToDesign(exits, thresholds);
      ASSERT_EQ(design.exits, exits);
      ASSERT_EQ(design.policy, policy);
      for (size_t i = 0; i < thresholds.size(); ++i) {
        ASSERT_EQ(design.thresholds[i], space.thresholds[thresholds[i]]);
      }
      const LatencyPrediction fast = eval.Evaluate(exits, thresholds);
      const LatencyPrediction slow = PredictOrDie(design);
      SCOPED_TRACE(DescribeDesign(design));
      EXPECT_EQ(fast.num_samples, slow.num_samples);
      EXPECT_DOUBLE_EQ(fast.accuracy, slow.accuracy);
      EXPECT_DOUBLE_EQ(fast.mean_s, slow.mean_s);
      EXPECT_DOUBLE_EQ(fast.p50_s, slow.p50_s);
      EXPECT_DOUBLE_EQ(fast.p95_s, slow.p95_s);
      EXPECT_DOUBLE_EQ(fast.p99_s, slow.p99_s);
      EXPECT_DOUBLE_EQ(fast.worst_s, slow.worst_s);
      EXPECT_DOUBLE_EQ(fast.throughput_rps, slow.throughput_rps);
      ASSERT_EQ(fast.exit_ratio.size(), slow.exit_ratio.size());
      double sum = 0;
      for (size_t e = 0; e < fast.exit_ratio.size(); ++e) {
        EXPECT_DOUBLE_EQ(fast.exit_ratio[e], slow.exit_ratio[e]) << "exit " << e;
        sum += fast.exit_ratio[e];
      }
      EXPECT_NEAR(sum, 1.0, 1e-12);
    }
    EXPECT_EQ(eval.evaluations(), 400);
  }
}

TEST(DesignEvaluatorTest, HandlesSampleCountsAroundWordBoundaries) {
  for (int n : {1, 63, 64, 65, 128, 130}) {
    const CalibrationTable table = MakeSyntheticTable(n, 4, 10, n);
    const v1::ModelManifest manifest = MakeSyntheticManifest("words", 4);
    absl::StatusOr<LatencyModel> latency =
        LatencyModel::Create(MakeSyntheticProfile("dev", manifest), manifest);
    ASSERT_THAT(latency, IsOk());
    SearchSpace space = DefaultSearchSpace(table, ExitPolicy::kMaxSoftmax, 8, true);
    DesignEvaluator eval(table, *latency, space);
    for (const Design& d : EnumerateDesigns(space)) {
      std::vector<int> idx;
      for (float t : d.thresholds) {
        idx.push_back(
            static_cast<int>(std::find(space.thresholds.begin(), space.thresholds.end(), t) -
                             space.thresholds.begin()));
      }
      LatencyPrediction fast = eval.Evaluate(d.exits, idx);
      absl::StatusOr<LatencyPrediction> slow = latency->Predict(d, table);
      ASSERT_THAT(slow, IsOk());
      ASSERT_EQ(fast.num_samples, n);
      ASSERT_DOUBLE_EQ(fast.accuracy, slow->accuracy) << n << " " << DescribeDesign(d);
      ASSERT_DOUBLE_EQ(fast.mean_s, slow->mean_s) << n << " " << DescribeDesign(d);
      ASSERT_DOUBLE_EQ(fast.p99_s, slow->p99_s) << n << " " << DescribeDesign(d);
    }
  }
}

// ---------------------------------------------------------------------------
void ExpectParetoFront(const std::vector<LatencyPrediction>& predictions, LatencyStatistic stat) {
  const std::vector<int> front = ParetoFront(predictions, stat);
  ASSERT_FALSE(predictions.empty() && !front.empty());
  if (predictions.empty()) return;
  ASSERT_FALSE(front.empty());
  std::vector<bool> on_front(predictions.size(), false);
  for (size_t i = 0; i < front.size(); ++i) {
    ASSERT_GE(front[i], 0);
    ASSERT_LT(front[i], static_cast<int>(predictions.size()));
    EXPECT_FALSE(on_front[front[i]]) << "duplicate index " << front[i];
    on_front[front[i]] = true;
    if (i > 0) {
      const LatencyPrediction& a = predictions[front[i - 1]];
      const LatencyPrediction& b = predictions[front[i]];
      EXPECT_LT(StatisticOf(a, stat), StatisticOf(b, stat)) << "sorted by latency, no ties";
      EXPECT_LT(a.accuracy, b.accuracy) << "slower points must be more accurate";
    }
  }
  // Nothing on the front is dominated; everything off it is weakly dominated
  // by a point on it.
  auto dominates = [&](const LatencyPrediction& a, const LatencyPrediction& b) {
    const double sa = StatisticOf(a, stat), sb = StatisticOf(b, stat);
    return sa <= sb && a.accuracy >= b.accuracy && (sa < sb || a.accuracy > b.accuracy);
  };
  for (int f : front) {
    for (size_t j = 0; j < predictions.size(); ++j) {
      EXPECT_FALSE(dominates(predictions[j], predictions[f]))
          << j << " dominates front point " << f;
    }
  }
  for (size_t j = 0; j < predictions.size(); ++j) {
    if (on_front[j]) continue;
    bool covered = false;
    for (int f : front) {
      covered |= StatisticOf(predictions[f], stat) <= StatisticOf(predictions[j], stat) &&
                 predictions[f].accuracy >= predictions[j].accuracy;
    }
    EXPECT_TRUE(covered) << "point " << j << " is neither on the front nor dominated";
  }
}

TEST_F(SearchTest, ParetoFrontOfTheDesignSpaceIsNonDominatedAndSorted) {
  SearchSpace space = DefaultSearchSpace(*table_, ExitPolicy::kMaxSoftmax, 32);
  DesignEvaluator eval(*table_, *latency_, space);
  std::vector<LatencyPrediction> predictions;
  for (const Design& d : EnumerateDesigns(space)) {
    std::vector<int> idx;
    for (float t : d.thresholds) {
      idx.push_back(
          static_cast<int>(std::lower_bound(space.thresholds.begin(), space.thresholds.end(), t) -
                           space.thresholds.begin()));
    }
    predictions.push_back(eval.Evaluate(d.exits, idx));
  }
  for (LatencyStatistic stat : kStatistics) {
    SCOPED_TRACE(LatencyStatisticName(stat));
    ExpectParetoFront(predictions, stat);
  }
  std::vector<int> front = ParetoFront(predictions, LatencyStatistic::kMean);
  EXPECT_GE(front.size(), 5u);
  // The most accurate design of the space ends the front.
  double best = 0;
  for (const auto& p : predictions) best = std::max(best, p.accuracy);
  EXPECT_EQ(predictions[front.back()].accuracy, best);
}

TEST(ParetoFrontTest, RandomPointsWithTies) {
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<LatencyPrediction> predictions(1 + rng() % 60);
    for (auto& p : predictions) {
      // Coarse values so ties on either axis are common.
      p.mean_s = (1 + rng() % 10) * 1e-3;
      p.p95_s = p.mean_s * 1.5;
      p.accuracy = (rng() % 8) / 8.0;
    }
    ExpectParetoFront(predictions, LatencyStatistic::kMean);
    ExpectParetoFront(predictions, LatencyStatistic::kP95);
  }
  EXPECT_TRUE(ParetoFront({}, LatencyStatistic::kMean).empty());
  // Identical points: exactly one survives.
  LatencyPrediction p;
  p.mean_s = 1e-3;
  p.accuracy = 0.9;
  EXPECT_EQ(ParetoFront({p, p, p}, LatencyStatistic::kMean).size(), 1u);
}

}  // namespace
}  // namespace hapi
