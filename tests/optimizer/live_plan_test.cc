// Planning a variant on a live calibration table (CreateVariantRequest's
// live_calibration): the optimizer served in-process over a synthetic model,
// as in optimizer_service_test.cc. docs/certified-slas.md, "Planning on live
// traffic", says what is done.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/calibration_table.h"
#include "core/design.h"
#include "core/latency_model.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "hapi/v1/optimizer.grpc.pb.h"
#include "optimizer/optimizer_process.h"
#include "optimizer/state_store.h"
#include "optimizer/variant_builder.h"
#include "rpc/grpc_status.h"
#include "tests/optimizer/synthetic_model.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace {

namespace fs = std::filesystem;
using ::google::protobuf::util::MessageDifferencer;
using ::hapi::testing::MakeSyntheticProfile;
using ::hapi::testing::MakeSyntheticTable;
using ::hapi::testing::ScopedTempDir;
using ::hapi::testing::StatusIs;
using ::hapi::testing::WriteSyntheticModel;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using Stub = v1::Optimizer::Stub;

constexpr char kModel[] = "synth";  // 6 exits, 10 classes, 2000 samples
constexpr char kDevice[] = "dev";
constexpr int kExits = 6;
constexpr int kFinal = kExits - 1;
constexpr auto kRpcTimeout = std::chrono::seconds(60);

bool Finished(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

std::string Describe(const v1::Job& j) {
  return absl::StrCat(j.id(), " ", v1::JobState_Name(j.state()), " ", j.phase(), " ", j.error());
}

// What a serving process would collect: `base`'s samples labelled with the
// final exit's answers. On `disagreeing` samples exits 0..last_wrong_exit
// answer another class than the final exit, with their confidence unchanged:
// early exits that are as sure of themselves as on validation but wrong
// about the traffic.
CalibrationTable LiveTable(const CalibrationTable& base, const std::vector<bool>& disagreeing,
                           int last_wrong_exit) {
  CalibrationTable live(base.num_samples(), base.num_exits(), base.num_classes());
  const int final_exit = base.num_exits() - 1;
  for (int s = 0; s < base.num_samples(); ++s) {
    const int answer = base.predicted(final_exit, s);
    live.SetTrueLabel(s, answer);
    for (int e = 0; e < base.num_exits(); ++e) {
      ExitScores scores;
      scores.label = base.predicted(e, s);
      if (e <= last_wrong_exit && disagreeing[s]) {
        scores.label = (answer + 1 + e) % base.num_classes();
      }
      for (int p = 0; p < kNumExitPolicies; ++p) {
        scores.scores[p] = base.score(static_cast<ExitPolicy>(p), e, s);
      }
      live.Set(e, s, scores);
    }
  }
  return live;
}

// A live table drawn like the validation split (another seed), relabelled:
// early exits disagree with the final exit about as often as they err on
// validation.
CalibrationTable LikeValidation(int samples, uint64_t seed = 99) {
  return LiveTable(MakeSyntheticTable(samples, kExits, 10, seed), std::vector<bool>(samples, false),
                   -1);
}

class LivePlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = tmp_.Join("repository");
    layout_ = RepositoryLayout(repo_);
    ASSERT_OK(WriteSyntheticModel(repo_, kModel, kExits, 2000, /*seed=*/42));
    ASSERT_OK_AND_ASSIGN(ModelMetadata m, LoadModelMetadata(layout_.ModelDir(kModel)));
    model_ = std::make_unique<ModelMetadata>(std::move(m));
    final_accuracy_ = model_->validation.Accuracy(kFinal);
  }
  void TearDown() override { Stop(); }

  void Start() {
    OptimizerOptions options;
    options.listen = "";
    options.repository = repo_;
    options.state = tmp_.Join("state.db");
    options.metrics_address = "";
    options.workers = 1;
    options.threshold_grid = 32;
    options.gnuplot = "";
    options.profiler = "";
    ASSERT_OK_AND_ASSIGN(optimizer_, OptimizerProcess::Create(options));
    stub_ = v1::Optimizer::NewStub(optimizer_->InProcessChannel());
    v1::RegisterDeviceRequest reg;
    *reg.mutable_profile() = Profile();
    v1::DeviceProfile registered;
    absl::Status st = Call(&Stub::RegisterDevice, reg, &registered);
    if (!absl::IsAlreadyExists(st)) {
      ASSERT_OK(st);
    }
  }
  void Stop() {
    stub_.reset();
    optimizer_.reset();
  }
  v1::DeviceProfile Profile() const { return MakeSyntheticProfile(kDevice, model_->manifest); }

  template <typename Req, typename Resp>
  absl::Status Call(grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                    const Req& request, Resp* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    return FromGrpcStatus((stub_.get()->*method)(&ctx, request, response));
  }

  // Lowest mean latency at most `drop` below the full network.
  static v1::CreateVariantRequest DropRequest(double drop) {
    v1::CreateVariantRequest req;
    req.set_model(kModel);
    req.set_device(kDevice);
    req.mutable_sla()->set_objective(v1::MIN_LATENCY);
    req.mutable_sla()->set_use_accuracy_drop(true);
    req.mutable_sla()->set_max_accuracy_drop(drop);
    return req;
  }
  static v1::CreateVariantRequest FloorRequest(double min_accuracy) {
    v1::CreateVariantRequest req;
    req.set_model(kModel);
    req.set_device(kDevice);
    req.mutable_sla()->set_objective(v1::MIN_LATENCY);
    req.mutable_sla()->set_min_accuracy(min_accuracy);
    return req;
  }
  static v1::CreateVariantRequest Live(v1::CreateVariantRequest req, const CalibrationTable& table,
                                       const std::string& reason = "",
                                       const std::string& from = "") {
    req.set_live_calibration(table.Serialize());
    req.set_live_reason(reason);
    req.set_live_from_variant(from);
    return req;
  }

  absl::StatusOr<v1::Job> Create(const v1::CreateVariantRequest& req) {
    v1::Job job;
    absl::Status st = Call(&Stub::CreateVariant, req, &job);
    if (!st.ok()) return st;
    return job;
  }
  // Every message of WatchJob; the last one is the finished job.
  std::vector<v1::Job> Watch(const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    v1::GetJobRequest req;
    req.set_id(id);
    std::unique_ptr<grpc::ClientReader<v1::Job>> reader = stub_->WatchJob(&ctx, req);
    std::vector<v1::Job> updates;
    v1::Job job;
    while (reader->Read(&job)) updates.push_back(job);
    EXPECT_OK(FromGrpcStatus(reader->Finish()));
    EXPECT_FALSE(updates.empty());
    if (!updates.empty()) {
      EXPECT_TRUE(Finished(updates.back().state()));
    }
    return updates;
  }
  v1::Job WaitForJob(const std::string& id) {
    std::vector<v1::Job> updates = Watch(id);
    return updates.empty() ? v1::Job() : updates.back();
  }
  v1::VariantManifest MakeVariant(const v1::CreateVariantRequest& req) {
    absl::StatusOr<v1::Job> job = Create(req);
    EXPECT_OK(job.status());
    if (!job.ok()) return v1::VariantManifest();
    v1::Job done = WaitForJob(job->id());
    EXPECT_EQ(done.state(), v1::SUCCEEDED) << Describe(done);
    v1::GetVariantRequest get;
    get.set_id(done.variant());
    v1::VariantManifest v;
    EXPECT_OK(Call(&Stub::GetVariant, get, &v));
    return v;
  }
  std::vector<v1::Job> ListJobs() {
    v1::ListJobsResponse resp;
    EXPECT_OK(Call(&Stub::ListJobs, v1::ListJobsRequest(), &resp));
    return {resp.jobs().begin(), resp.jobs().end()};
  }

  static Design DesignOf(const v1::VariantManifest& v) {
    Design d;
    d.exits.assign(v.enabled_exits().begin(), v.enabled_exits().end());
    d.thresholds.assign(v.thresholds().begin(), v.thresholds().end());
    return d;
  }
  // The share of requests answered before the final exit.
  static double EarlyShare(const v1::VariantManifest& v) {
    double early = 0;
    for (int e = 0; e < kFinal; ++e) early += v.predicted_exit_ratios(e);
    return early;
  }

  ScopedTempDir tmp_;
  std::string repo_;
  RepositoryLayout layout_{""};
  std::unique_ptr<ModelMetadata> model_;
  double final_accuracy_ = 0;
  std::unique_ptr<OptimizerProcess> optimizer_;
  std::unique_ptr<Stub> stub_;
};

TEST_F(LivePlanTest, BadLiveTablesAreRefusedByCreateVariant) {
  Start();
  const v1::CreateVariantRequest sla = DropRequest(0.01);
  const std::string good = LikeValidation(500).Serialize();

  v1::CreateVariantRequest req = sla;
  req.set_live_calibration("not a calibration table");
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument,
                                    AllOf(HasSubstr("live_calibration"), HasSubstr("too short"))));
  std::string flipped = good;
  flipped[flipped.size() / 2] ^= 0x5a;
  req.set_live_calibration(flipped);
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument,
                                    AllOf(HasSubstr("live_calibration"), HasSubstr("checksum"))));
  req.set_live_calibration(good.substr(0, good.size() - 10));
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("live_calibration: corrupt calibration table")));

  EXPECT_THAT(Create(Live(sla, LikeValidation(99))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("99 samples"), HasSubstr("at least 100"))));

  // Exits and classes must be the model's (checked against the model when
  // the job is accepted).
  CalibrationTable four_exits = MakeSyntheticTable(300, 4, 10, 5);
  EXPECT_THAT(Create(Live(sla, LiveTable(four_exits, std::vector<bool>(300, false), -1))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("has 4 exits"), HasSubstr("model has 6 exits"))));
  CalibrationTable seven_classes = MakeSyntheticTable(300, kExits, 7, 5);
  EXPECT_THAT(Create(Live(sla, LiveTable(seven_classes, std::vector<bool>(300, false), -1))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("and 7 classes"), HasSubstr("and 10 classes"))));

  // Labelled with the truth instead of the full network's answers.
  EXPECT_THAT(Create(Live(sla, MakeSyntheticTable(300, kExits, 10, 5))),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("true label other than the final exit's answer")));

  req = sla;
  req.set_live_calibration(good);
  req.set_live_reason("because");
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("live_reason")));
  req.set_live_reason("drift");
  req.set_live_from_variant("../x");
  EXPECT_THAT(Create(req),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("live_from_variant")));
  req = sla;
  req.set_live_reason("bound");
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("there is none")))
      << "a reason without a table";

  EXPECT_THAT(ListJobs(), IsEmpty()) << "refused requests leave no job";
}

// Early exits that disagree with the full network on live traffic much more
// than they err on validation: the same SLA must then give a stricter design.
TEST_F(LivePlanTest, MoreDisagreementOnLiveTrafficGivesAStricterDesign) {
  Start();
  const int n = 2000;
  const CalibrationTable base = MakeSyntheticTable(n, kExits, 10, 99);
  // A quarter of the samples exits 0-2 are sure of (those that leave early)
  // are answered wrongly there.
  std::mt19937_64 rng(7);
  std::vector<bool> disagreeing(n);
  for (int s = 0; s < n; ++s) disagreeing[s] = base.confidence(2, s) >= 0.6 && rng() % 4 == 0;
  const CalibrationTable live = LiveTable(base, disagreeing, /*last_wrong_exit=*/2);
  for (int e = 0; e <= 2; ++e) {
    ASSERT_LT(live.Accuracy(e), model_->validation.Accuracy(e) - 0.05)
        << "exit " << e << " disagrees far more than it errs on validation";
  }

  const v1::CreateVariantRequest sla = DropRequest(0.03);
  const v1::VariantManifest on_validation = MakeVariant(sla);
  const v1::VariantManifest on_live = MakeVariant(Live(sla, live, "drift", "old-variant"));
  ASSERT_FALSE(on_validation.id().empty());
  ASSERT_FALSE(on_live.id().empty());
  SCOPED_TRACE(
      absl::StrCat("validation: ", on_validation.DebugString(), "\nlive: ", on_live.DebugString()));
  EXPECT_FALSE(on_validation.has_live_plan());
  ASSERT_TRUE(on_validation.certification().certified());
  ASSERT_TRUE(on_live.certification().certified());

  // Stricter: a deeper first exit at a higher threshold, fewer requests
  // leaving early, slower.
  ASSERT_FALSE(on_validation.enabled_exits().empty());
  ASSERT_FALSE(on_live.enabled_exits().empty());
  EXPECT_GT(on_live.enabled_exits(0), on_validation.enabled_exits(0));
  EXPECT_GT(on_live.thresholds(0), on_validation.thresholds(0));
  EXPECT_LT(EarlyShare(on_live), EarlyShare(on_validation) - 0.2);
  EXPECT_GT(on_live.predicted_latency().mean_ms(), on_validation.predicted_latency().mean_ms());
  // The validation design on live traffic breaks the SLA; the live one holds
  // it there.
  ASSERT_OK_AND_ASSIGN(LatencyModel latency, LatencyModel::Create(Profile(), model_->manifest));
  ASSERT_OK_AND_ASSIGN(LatencyPrediction old_design_live,
                       latency.Predict(DesignOf(on_validation), live));
  EXPECT_GT(1 - old_design_live.accuracy, 0.03) << "the validation design disagrees > 3 points";
  ASSERT_OK_AND_ASSIGN(LatencyPrediction p, latency.Predict(DesignOf(on_live), live));
  EXPECT_LE(1 - p.accuracy, 0.03);

  // Predictions are the live table's: exit ratios and latency, and the
  // accuracy as the full network's validation accuracy minus the
  // disagreement; the test split is still for reporting.
  ASSERT_EQ(on_live.predicted_exit_ratios_size(), kExits);
  for (int e = 0; e < kExits; ++e) {
    EXPECT_DOUBLE_EQ(on_live.predicted_exit_ratios(e), p.exit_ratio[e]) << "exit " << e;
  }
  EXPECT_NEAR(on_live.predicted_latency().mean_ms(), p.mean_s * 1e3, 1e-9);
  EXPECT_NEAR(on_live.predicted_accuracy(), final_accuracy_ - (1 - p.accuracy), 1e-12);
  EXPECT_DOUBLE_EQ(on_live.final_exit_accuracy(), final_accuracy_);
  ASSERT_OK_AND_ASSIGN(LatencyPrediction on_test, latency.Predict(DesignOf(on_live), model_->test));
  EXPECT_DOUBLE_EQ(on_live.test_accuracy(), on_test.accuracy);
  EXPECT_EQ(
      on_live.certification().selection_samples() + on_live.certification().certification_samples(),
      n)
      << "selection and certification split the live table";
  EXPECT_NEAR(on_live.certification().accuracy_lower(),
              final_accuracy_ - on_live.certification().accuracy_drop_upper(), 1e-12);
  EXPECT_LE(on_live.certification().accuracy_drop_upper(), 0.03);
  EXPECT_THAT(on_live.certification().note(),
              HasSubstr("planned on 2000 live samples (drift, from old-variant): the accuracy "
                        "above is agreement with the full network"));
}

TEST_F(LivePlanTest, TheVariantRecordsItsLivePlanAndKeepsTheTable) {
  Start();
  const CalibrationTable live = LikeValidation(1500);
  const std::string bytes = live.Serialize();
  const v1::CreateVariantRequest req = Live(DropRequest(0.02), live, "bound", "synth-v-old");
  ASSERT_OK_AND_ASSIGN(v1::Job job, Create(req));
  EXPECT_LT(job.ByteSizeLong(), 1000u) << "a job does not carry the table";
  std::vector<v1::Job> updates = Watch(job.id());
  ASSERT_FALSE(updates.empty());
  for (const v1::Job& u : updates) EXPECT_LT(u.ByteSizeLong(), 1000u);
  const v1::Job done = updates.back();
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << Describe(done);
  for (const v1::Job& j : ListJobs()) EXPECT_LT(j.ByteSizeLong(), 1000u);

  v1::GetVariantRequest get;
  get.set_id(done.variant());
  v1::VariantManifest v;
  ASSERT_OK(Call(&Stub::GetVariant, get, &v));
  ASSERT_TRUE(v.has_live_plan());
  EXPECT_EQ(v.live_plan().from_variant(), "synth-v-old");
  EXPECT_EQ(v.live_plan().samples(), 1500);
  EXPECT_EQ(v.live_plan().reason(), "bound");
  EXPECT_EQ(v.live_plan().table_file(), "live-calibration.bin");
  EXPECT_TRUE(MessageDifferencer::Equals(v.sla(), [&] {
    v1::Sla recorded = req.sla();
    recorded.set_accuracy_confidence(0.9);  // the default, resolved
    return recorded;
  }()));

  // The directory, published whole: manifest, table, Pareto front.
  const std::string dir = layout_.VariantDir(v.id());
  EXPECT_THAT(hapi::testing::ListDir(layout_.VariantsDir()), ElementsAre(v.id()));
  v1::VariantManifest on_disk;
  ASSERT_OK(ReadTextProto(layout_.VariantManifest(v.id()), &on_disk));
  EXPECT_TRUE(MessageDifferencer::Equals(on_disk, v));
  EXPECT_EQ(hapi::testing::ReadBytes(absl::StrCat(dir, "/", v.live_plan().table_file())), bytes);
  EXPECT_TRUE(fs::exists(dir + "/pareto.csv"));
  for (const std::string& name : hapi::testing::ListDir(dir)) {
    EXPECT_NE(name.rfind(".tmp", 0), 0u) << name;
  }

  // Without a reason, "operator".
  v1::VariantManifest by_hand = MakeVariant(Live(DropRequest(0.02), live));
  EXPECT_EQ(by_hand.live_plan().reason(), "operator");
  EXPECT_EQ(by_hand.live_plan().from_variant(), "");

  // A restart keeps the variant, its table and the request stored with the
  // job (the table's bytes in the state database).
  Stop();
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store,
                         StateStore::Open(tmp_.Join("state.db")));
    ASSERT_OK_AND_ASSIGN(v1::CreateVariantRequest stored, store->GetJobRequest(job.id()));
    EXPECT_EQ(stored.live_calibration(), bytes);
    EXPECT_EQ(stored.live_reason(), "bound");
    EXPECT_EQ(stored.live_from_variant(), "synth-v-old");
  }
  Start();
  v1::VariantManifest again;
  ASSERT_OK(Call(&Stub::GetVariant, get, &again));
  EXPECT_TRUE(MessageDifferencer::Equals(again, v));
  EXPECT_EQ(hapi::testing::ReadBytes(absl::StrCat(dir, "/", kLiveCalibrationFile)), bytes);
}

// A live job queued when the optimizer stops is failed at the restart like
// any other (jobs are not resumed), its table still stored with it.
TEST_F(LivePlanTest, AnInterruptedLiveJobFailsClearlyAfterARestart) {
  Start();
  v1::CreateVariantRequest slow;
  slow.set_model(kModel);
  slow.set_device(kDevice);
  slow.mutable_sla()->set_latency_budget_ms(2.5);
  slow.set_algorithm("exhaustive");
  slow.set_per_exit_thresholds(true);
  ASSERT_OK_AND_ASSIGN(v1::Job running, Create(slow));
  const std::string bytes = LikeValidation(400).Serialize();
  v1::CreateVariantRequest req = DropRequest(0.02);
  req.set_live_calibration(bytes);
  ASSERT_OK_AND_ASSIGN(v1::Job queued, Create(req));
  Stop();

  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store,
                         StateStore::Open(tmp_.Join("state.db")));
    ASSERT_OK_AND_ASSIGN(v1::Job stored, store->GetJob(queued.id()));
    EXPECT_EQ(stored.state(), v1::QUEUED);
    ASSERT_OK_AND_ASSIGN(v1::CreateVariantRequest request, store->GetJobRequest(queued.id()));
    EXPECT_EQ(request.live_calibration(), bytes);
  }
  Start();
  v1::GetJobRequest get;
  get.set_id(queued.id());
  v1::Job after;
  ASSERT_OK(Call(&Stub::GetJob, get, &after));
  EXPECT_EQ(after.state(), v1::FAILED) << Describe(after);
  EXPECT_THAT(after.error(), HasSubstr("submit it again"));
  EXPECT_EQ(after.error_code(), static_cast<int>(absl::StatusCode::kAborted));
  // Submitted again, it runs.
  EXPECT_EQ(MakeVariant(req).live_plan().samples(), 400);
}

// An absolute floor on live traffic is a drop below the full network's
// validation accuracy: the same design as that drop asked for directly.
TEST_F(LivePlanTest, AnAbsoluteFloorIsADropBelowTheValidationAccuracy) {
  Start();
  const int n = 2000;
  const CalibrationTable live = LikeValidation(n, /*seed=*/123);

  const double drop = 0.03;
  const double floor = final_accuracy_ - drop;
  const v1::VariantManifest by_floor = MakeVariant(Live(FloorRequest(floor), live));
  const v1::VariantManifest by_drop = MakeVariant(Live(DropRequest(final_accuracy_ - floor), live));
  SCOPED_TRACE(absl::StrCat("floor: ", by_floor.DebugString(), "\ndrop: ", by_drop.DebugString()));
  ASSERT_FALSE(by_floor.enabled_exits().empty()) << "a 3 point drop allows early exits";
  EXPECT_THAT(by_floor.enabled_exits(), ::testing::ElementsAreArray(by_drop.enabled_exits()));
  EXPECT_THAT(by_floor.thresholds(), ::testing::ElementsAreArray(by_drop.thresholds()));
  EXPECT_DOUBLE_EQ(by_floor.predicted_accuracy(), by_drop.predicted_accuracy());
  EXPECT_GE(by_floor.predicted_accuracy(), floor);
  // The manifest keeps the SLA as asked; the certificate is in its terms.
  EXPECT_FALSE(by_floor.sla().use_accuracy_drop());
  EXPECT_DOUBLE_EQ(by_floor.sla().min_accuracy(), floor);
  ASSERT_TRUE(by_floor.certification().certified());
  EXPECT_GE(by_floor.certification().accuracy_lower(), floor - 1e-12);
  EXPECT_THAT(by_floor.certification().note(), HasSubstr("was read as a drop of at most 3.00"));

  // A floor at or above the full network's validation accuracy: only the
  // full network can be promised, and that is what is served.
  const v1::VariantManifest full = MakeVariant(Live(FloorRequest(final_accuracy_ + 0.001), live));
  EXPECT_THAT(full.enabled_exits(), IsEmpty());
  EXPECT_DOUBLE_EQ(full.predicted_exit_ratios(kFinal), 1.0);
  EXPECT_TRUE(full.certification().certified());
  // And with a latency budget the full network misses: a clear failure.
  v1::CreateVariantRequest tight = Live(FloorRequest(final_accuracy_ + 0.001), live);
  tight.mutable_sla()->set_latency_budget_ms(1.0);
  ASSERT_OK_AND_ASSIGN(v1::Job job, Create(tight));
  const v1::Job failed = WaitForJob(job.id());
  EXPECT_EQ(failed.state(), v1::FAILED);
  EXPECT_EQ(failed.error_code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(failed.error(), AllOf(HasSubstr("only the full network qualifies"),
                                    HasSubstr("at or above its validation accuracy")));
}

}  // namespace
}  // namespace hapi
