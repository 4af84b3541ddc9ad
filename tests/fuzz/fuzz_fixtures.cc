#include "tests/fuzz/fuzz_fixtures.h"

#include <cmath>
#include <vector>

#include "core/design.h"
#include "core/device_profile.h"
#include "core/exit_policy.h"
#include "core/fake_model.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "tests/fuzz/fuzz_check.h"

namespace hapi::fuzz {
namespace {

class SilentErrors : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
  void AddWarning(int, google::protobuf::io::ColumnNumber, const std::string&) override {}
};

bool InUnitInterval(double v) { return v >= 0 && v <= 1; }

void CheckPrediction(const LatencyPrediction& p, const CalibrationTable& table) {
  HAPI_FUZZ_CHECK(p.num_samples == table.num_samples());
  HAPI_FUZZ_CHECK(InUnitInterval(p.accuracy));
  HAPI_FUZZ_CHECK(static_cast<int>(p.exit_ratio.size()) == table.num_exits());
  double ratios = 0;
  for (double r : p.exit_ratio) {
    HAPI_FUZZ_CHECK(InUnitInterval(r));
    ratios += r;
  }
  HAPI_FUZZ_CHECK(std::abs(ratios - 1) < 1e-9);
  int samples = 0;
  for (size_t i = 0; i < p.paths.size(); ++i) {
    HAPI_FUZZ_CHECK(p.paths[i].second > 0);
    HAPI_FUZZ_CHECK(p.paths[i].first >= 0);  // also false for NaN
    if (i > 0) HAPI_FUZZ_CHECK(p.paths[i - 1].first <= p.paths[i].first);
    samples += p.paths[i].second;
  }
  HAPI_FUZZ_CHECK(samples == p.num_samples);
  for (double s : {p.mean_s, p.p50_s, p.p95_s, p.p99_s, p.worst_s}) HAPI_FUZZ_CHECK(s >= 0);
  HAPI_FUZZ_CHECK(p.p50_s <= p.p95_s && p.p95_s <= p.p99_s && p.p99_s <= p.worst_s);
  HAPI_FUZZ_CHECK(p.accuracy_se >= 0 && p.accuracy_drop_se >= 0);
}

}  // namespace

v1::ModelManifest FakeManifest(int num_stages, int num_classes) {
  FakeModelSpec spec;
  spec.num_stages = num_stages;
  spec.num_classes = num_classes;
  return FakeModelManifest(spec);
}

CalibrationTable SyntheticTable(const v1::ModelManifest& manifest, int num_samples) {
  const int classes = manifest.class_names_size();
  CalibrationTable table(num_samples, manifest.exits_size(), classes);
  const int final_exit = manifest.exits_size() - 1;
  for (int s = 0; s < num_samples; ++s) {
    const float mean = (s + 0.5f) / num_samples;
    for (int e = 0; e < manifest.exits_size(); ++e) {
      std::vector<float> p = FakeProbabilities(manifest, e, mean);
      ExitScores scores = ScoreProbabilities(p.data(), classes);
      table.Set(e, s, scores);
      if (e == final_exit) {
        table.SetTrueLabel(s, s % 7 == 3 ? (scores.label + 1) % classes : scores.label);
      }
    }
  }
  return table;
}

absl::StatusOr<LatencyModel> AnalyticLatency(const v1::ModelManifest& manifest) {
  absl::StatusOr<v1::DeviceProfile> profile =
      MakeAnalyticProfile("fuzz-device", manifest, 1e9, 1e-6, {1, 4});
  if (!profile.ok()) return profile.status();
  return LatencyModel::Create(*profile, manifest);
}

bool ParseTextProto(absl::string_view text, google::protobuf::Message* message) {
  SilentErrors errors;
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  return parser.ParseFromString(std::string(text), message);
}

void CheckPredictions(const LatencyModel& latency, const CalibrationTable& table,
                      ExitPolicy policy) {
  HAPI_FUZZ_CHECK(latency.num_exits() == table.num_exits());
  std::vector<int> early;
  for (int e = 0; e + 1 < table.num_exits(); ++e) early.push_back(e);
  for (const Design& design : {Design::FinalOnly(), Design::Shared(early, 0.5f, policy),
                               Design::Shared(early, 0.95f, policy)}) {
    absl::StatusOr<LatencyPrediction> p = latency.Predict(design, table);
    HAPI_FUZZ_CHECK(p.ok());
    CheckPrediction(*p, table);
    for (int depth = 0; depth <= static_cast<int>(design.exits.size()); ++depth) {
      const double t = latency.PathLatency(design, depth);
      HAPI_FUZZ_CHECK(t >= 0);
      if (depth > 0) HAPI_FUZZ_CHECK(latency.PathLatency(design, depth - 1) <= t);
    }
  }
}

void CheckSearch(const DesignSearch& search, const CalibrationTable& table,
                 const LatencyModel& latency, const Sla& sla, ExitPolicy policy,
                 bool per_exit_thresholds, uint64_t seed) {
  SearchProblem problem;
  problem.table = &table;
  problem.latency = &latency;
  // A coarse grid keeps the exhaustive per-exit search (grid+1)^(exits-1)
  // cheap enough for fuzzing.
  problem.space = DefaultSearchSpace(table, policy, 4, per_exit_thresholds);
  problem.sla = sla;
  problem.seed = seed;
  problem.evaluation_budget = 200;
  absl::StatusOr<SearchResult> result = search.Search(problem);
  if (!result.ok()) {
    // No design meets the SLA, or the table gives no usable threshold grid
    // (a corrupt table's scores).
    const absl::StatusCode code = result.status().code();
    CheckRefusal(result.status(), code == absl::StatusCode::kInvalidArgument
                                      ? code
                                      : absl::StatusCode::kFailedPrecondition);
    return;
  }
  HAPI_FUZZ_CHECK(ValidateDesign(result->design, table.num_exits()).ok());
  CheckPrediction(result->prediction, table);
  const SlaJudge judge(sla, table.Accuracy(table.num_exits() - 1));
  HAPI_FUZZ_CHECK(judge.Feasible(result->prediction));
}

}  // namespace hapi::fuzz
