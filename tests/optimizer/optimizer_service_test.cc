// hapi.v1.Optimizer served in-process by a real grpc::Server over a temporary
// repository holding synthetic models (manifest + calibration tables only:
// the optimizer never loads LibTorch).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/design.h"
#include "core/exit_policy.h"
#include "core/files.h"
#include "core/latency_model.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "hapi/v1/optimizer.grpc.pb.h"
#include "optimizer/optimizer_process.h"
#include "rpc/grpc_status.h"
#include "tests/optimizer/synthetic_model.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace {

namespace fs = std::filesystem;
using ::google::protobuf::util::MessageDifferencer;
using ::hapi::testing::IsOk;
using ::hapi::testing::MakeSyntheticManifest;
using ::hapi::testing::MakeSyntheticProfile;
using ::hapi::testing::ScopedTempDir;
using ::hapi::testing::StatusIs;
using ::hapi::testing::WriteSyntheticModel;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

using Stub = v1::Optimizer::Stub;
template <typename Req, typename Resp>
using Method = grpc::Status (Stub::*)(grpc::ClientContext*, const Req&, Resp*);

constexpr char kModel[] = "synth";       // 6 exits, 2000 samples
constexpr char kOtherModel[] = "other";  // 4 exits, other MACs
constexpr char kDevice[] = "dev";
constexpr auto kRpcTimeout = std::chrono::seconds(30);

bool Finished(v1::JobState s) {
  return s == v1::SUCCEEDED || s == v1::FAILED || s == v1::CANCELLED;
}

std::string Describe(const v1::Job& j) {
  return absl::StrCat(j.id(), " ", v1::JobState_Name(j.state()), " ", j.phase(), " ", j.percent(),
                      "% ", j.error());
}

class OptimizerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = tmp_.Join("repository");
    layout_ = RepositoryLayout(repo_);
    ASSERT_OK(WriteSyntheticModel(repo_, kModel, 6, 2000, /*seed=*/42));
    ASSERT_OK(WriteSyntheticModel(repo_, kOtherModel, 4, 500, /*seed=*/7, /*mac_scale=*/2000));
    ASSERT_OK_AND_ASSIGN(ModelMetadata m, LoadModelMetadata(layout_.ModelDir(kModel)));
    model_ = std::make_unique<ModelMetadata>(std::move(m));
  }
  void TearDown() override { Stop(); }

  void Start(JobManagerOptions job_options = {}, int threshold_grid = 64, std::string token = "") {
    token_ = token;
    OptimizerOptions options;
    options.listen = "";  // in-process channel only
    options.repository = repo_;
    options.state = tmp_.Join("state.db");
    options.metrics_address = "";
    options.workers = job_options.workers;
    options.max_pending = job_options.max_pending;
    options.threshold_grid = threshold_grid;
    options.admin_token = token;
    options.gnuplot = "";   // no plot: keeps the test hermetic and fast
    options.profiler = "";  // no measure_locally
    ASSERT_OK_AND_ASSIGN(optimizer_, OptimizerProcess::Create(options));
    stub_ = v1::Optimizer::NewStub(optimizer_->InProcessChannel());
  }

  // As hapi-optimizer stops: the server first (watch streams end), then the
  // jobs (running ones are cancelled).
  void Stop() {
    stub_.reset();
    optimizer_.reset();
  }

  // --- RPC helpers ---------------------------------------------------------
  // `authorization`: the header value to send, or none.
  template <typename Req, typename Resp>
  absl::Status CallAs(const std::optional<std::string>& authorization, Method<Req, Resp> method,
                      const Req& request, Resp* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    if (authorization) ctx.AddMetadata("authorization", *authorization);
    return FromGrpcStatus((stub_.get()->*method)(&ctx, request, response));
  }
  // With the operator token when one is configured.
  template <typename Req, typename Resp>
  absl::Status Call(Method<Req, Resp> method, const Req& request, Resp* response) {
    std::optional<std::string> auth;
    if (!token_.empty()) auth = "Bearer " + token_;
    return CallAs(auth, method, request, response);
  }

  absl::Status Register(const v1::DeviceProfile& profile, bool overwrite = false,
                        v1::DeviceProfile* out = nullptr) {
    v1::RegisterDeviceRequest req;
    *req.mutable_profile() = profile;
    req.set_overwrite(overwrite);
    v1::DeviceProfile resp;
    absl::Status st = Call(&Stub::RegisterDevice, req, &resp);
    if (out) *out = resp;
    return st;
  }
  v1::DeviceProfile Profile(const std::string& device = kDevice, double scale = 1.0) const {
    return MakeSyntheticProfile(device, model_->manifest, scale);
  }
  absl::StatusOr<v1::DeviceProfile> GetDevice(const std::string& name) {
    v1::GetDeviceRequest req;
    req.set_name(name);
    v1::DeviceProfile resp;
    absl::Status st = Call(&Stub::GetDevice, req, &resp);
    if (!st.ok()) return st;
    return resp;
  }
  absl::Status DeleteDevice(const std::string& name) {
    v1::DeleteDeviceRequest req;
    req.set_name(name);
    v1::DeleteResponse resp;
    return Call(&Stub::DeleteDevice, req, &resp);
  }
  std::vector<v1::DeviceProfile> ListDevices() {
    v1::ListDevicesResponse resp;
    EXPECT_OK(Call(&Stub::ListDevices, v1::ListDevicesRequest(), &resp));
    return {resp.devices().begin(), resp.devices().end()};
  }

  static v1::CreateVariantRequest Request(double budget_ms, const std::string& model = kModel,
                                          const std::string& device = kDevice,
                                          const std::string& algorithm = "") {
    v1::CreateVariantRequest req;
    req.set_model(model);
    req.set_device(device);
    req.mutable_sla()->set_latency_budget_ms(budget_ms);
    req.set_algorithm(algorithm);
    return req;
  }
  absl::StatusOr<v1::Job> Create(const v1::CreateVariantRequest& req) {
    v1::Job job;
    absl::Status st = Call(&Stub::CreateVariant, req, &job);
    if (!st.ok()) return st;
    return job;
  }
  absl::StatusOr<v1::Job> GetJob(const std::string& id) {
    v1::GetJobRequest req;
    req.set_id(id);
    v1::Job job;
    absl::Status st = Call(&Stub::GetJob, req, &job);
    if (!st.ok()) return st;
    return job;
  }
  absl::StatusOr<v1::Job> CancelJob(const std::string& id) {
    v1::CancelJobRequest req;
    req.set_id(id);
    v1::Job job;
    absl::Status st = Call(&Stub::CancelJob, req, &job);
    if (!st.ok()) return st;
    return job;
  }
  std::vector<v1::Job> ListJobs() {
    v1::ListJobsResponse resp;
    EXPECT_OK(Call(&Stub::ListJobs, v1::ListJobsRequest(), &resp));
    return {resp.jobs().begin(), resp.jobs().end()};
  }
  absl::StatusOr<v1::VariantManifest> GetVariant(const std::string& id) {
    v1::GetVariantRequest req;
    req.set_id(id);
    v1::VariantManifest v;
    absl::Status st = Call(&Stub::GetVariant, req, &v);
    if (!st.ok()) return st;
    return v;
  }
  absl::StatusOr<std::vector<v1::VariantManifest>> ListVariants(const std::string& device = "",
                                                                const std::string& model = "") {
    v1::ListVariantsRequest req;
    req.set_device(device);
    req.set_model(model);
    v1::ListVariantsResponse resp;
    absl::Status st = Call(&Stub::ListVariants, req, &resp);
    if (!st.ok()) return st;
    return std::vector<v1::VariantManifest>(resp.variants().begin(), resp.variants().end());
  }
  absl::Status DeleteVariant(const std::string& id) {
    v1::DeleteVariantRequest req;
    req.set_id(id);
    v1::DeleteResponse resp;
    return Call(&Stub::DeleteVariant, req, &resp);
  }

  // Every message of WatchJob until the server ends the stream.
  std::vector<v1::Job> Watch(const std::string& id, absl::Status* status,
                             std::chrono::seconds timeout = std::chrono::seconds(60)) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    v1::GetJobRequest req;
    req.set_id(id);
    std::unique_ptr<grpc::ClientReader<v1::Job>> reader = stub_->WatchJob(&ctx, req);
    std::vector<v1::Job> updates;
    v1::Job job;
    while (reader->Read(&job)) updates.push_back(job);
    *status = FromGrpcStatus(reader->Finish());
    return updates;
  }
  // The finished job, through WatchJob.
  v1::Job WaitForJob(const std::string& id) {
    absl::Status status;
    std::vector<v1::Job> updates = Watch(id, &status);
    EXPECT_OK(status) << "watching " << id;
    if (updates.empty()) {
      ADD_FAILURE() << "no updates for " << id;
      return v1::Job();
    }
    EXPECT_TRUE(Finished(updates.back().state())) << Describe(updates.back());
    return updates.back();
  }
  // Polls GetJob until `done` holds.
  v1::Job PollJob(const std::string& id, const std::function<bool(const v1::Job&)>& done,
                  std::chrono::seconds timeout = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    v1::Job job;
    while (std::chrono::steady_clock::now() < deadline) {
      absl::StatusOr<v1::Job> j = GetJob(id);
      EXPECT_OK(j.status());
      if (!j.ok()) break;
      job = *j;
      if (done(job)) return job;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "timed out waiting for " << Describe(job);
    return job;
  }
  // Creates a variant and waits for it; the job must succeed.
  v1::VariantManifest MakeVariant(const v1::CreateVariantRequest& req) {
    absl::StatusOr<v1::Job> job = Create(req);
    EXPECT_OK(job.status());
    if (!job.ok()) return v1::VariantManifest();
    v1::Job done = WaitForJob(job->id());
    EXPECT_EQ(done.state(), v1::SUCCEEDED) << Describe(done);
    absl::StatusOr<v1::VariantManifest> v = GetVariant(done.variant());
    EXPECT_OK(v.status());
    return v.ok() ? *v : v1::VariantManifest();
  }

  std::vector<std::string> VariantDirEntries() {
    if (!fs::exists(layout_.VariantsDir())) return {};
    return hapi::testing::ListDir(layout_.VariantsDir());
  }

  ScopedTempDir tmp_;
  std::string repo_;
  RepositoryLayout layout_{""};
  std::unique_ptr<ModelMetadata> model_;
  std::string token_;
  std::unique_ptr<OptimizerProcess> optimizer_;
  std::unique_ptr<Stub> stub_;
};

// ---------------------------------------------------------------------------
// Devices
TEST_F(OptimizerServiceTest, DeviceRegisterListGetDelete) {
  Start();
  EXPECT_THAT(ListDevices(), IsEmpty());
  const v1::DeviceProfile profile = Profile();
  v1::DeviceProfile echoed;
  ASSERT_OK(Register(profile, false, &echoed));
  EXPECT_TRUE(MessageDifferencer::Equals(echoed, profile)) << echoed.DebugString();

  // The profile is on disk in the repository, as a text proto.
  const std::string file = layout_.DeviceProfile("dev");
  ASSERT_TRUE(fs::exists(file));
  v1::DeviceProfile on_disk;
  ASSERT_OK(ReadTextProto(file, &on_disk));
  EXPECT_TRUE(MessageDifferencer::Equals(on_disk, profile)) << on_disk.DebugString();

  ASSERT_OK(Register(Profile("dev-b", 2.0)));
  std::vector<v1::DeviceProfile> devices = ListDevices();
  ASSERT_THAT(devices, SizeIs(2));
  EXPECT_EQ(devices[0].name(), "dev");
  EXPECT_EQ(devices[1].name(), "dev-b");
  EXPECT_TRUE(MessageDifferencer::Equals(devices[0], profile));

  ASSERT_OK_AND_ASSIGN(v1::DeviceProfile got, GetDevice("dev"));
  EXPECT_TRUE(MessageDifferencer::Equals(got, profile));

  ASSERT_OK(DeleteDevice("dev"));
  EXPECT_FALSE(fs::exists(layout_.DeviceDir("dev")));
  EXPECT_THAT(GetDevice("dev"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("dev")));
  EXPECT_THAT(DeleteDevice("dev"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(GetDevice("never-registered"), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(ListDevices(), SizeIs(1));
  EXPECT_EQ(ListDevices()[0].name(), "dev-b");
  EXPECT_TRUE(fs::exists(layout_.DeviceProfile("dev-b")));
}

TEST_F(OptimizerServiceTest, DuplicateRegistrationNeedsOverwrite) {
  Start();
  ASSERT_OK(Register(Profile()));
  v1::DeviceProfile changed = Profile("dev", 1.5);
  changed.set_description("re-measured");
  EXPECT_THAT(Register(changed),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("overwrite")));
  // Neither the row nor the file changed.
  ASSERT_OK_AND_ASSIGN(v1::DeviceProfile got, GetDevice("dev"));
  EXPECT_TRUE(got.description().empty());
  v1::DeviceProfile on_disk;
  ASSERT_OK(ReadTextProto(layout_.DeviceProfile("dev"), &on_disk));
  EXPECT_TRUE(on_disk.description().empty());

  ASSERT_OK(Register(changed, /*overwrite=*/true));
  ASSERT_OK_AND_ASSIGN(got, GetDevice("dev"));
  EXPECT_TRUE(MessageDifferencer::Equals(got, changed));
  ASSERT_OK(ReadTextProto(layout_.DeviceProfile("dev"), &on_disk));
  EXPECT_EQ(on_disk.description(), "re-measured");
  EXPECT_THAT(ListDevices(), SizeIs(1));
  // No temp files left beside the profile.
  EXPECT_THAT(hapi::testing::ListDir(layout_.DeviceDir("dev")), ElementsAre(kProfileFile));
}

TEST_F(OptimizerServiceTest, RegisterDeviceRejectsBadProfiles) {
  Start();
  for (const std::string& name :
       std::vector<std::string>{"../x", "A", "", "dev/x", ".hidden", std::string(65, 'a')}) {
    v1::DeviceProfile p = Profile();
    p.set_name(name);
    EXPECT_THAT(Register(p), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("device name")))
        << "'" << name << "'";
  }
  for (const std::string model : {"../x", "A", ""}) {
    v1::DeviceProfile p = Profile();
    p.set_model(model);
    EXPECT_THAT(Register(p), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("model name")))
        << "'" << model << "'";
  }
  v1::DeviceProfile unknown = Profile();
  unknown.set_model("no-such-model");
  EXPECT_THAT(Register(unknown),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown model 'no-such-model'")));

  // A profile of "synth" relabelled for "other": the MACs give it away.
  v1::DeviceProfile relabelled = Profile();
  relabelled.set_model(kOtherModel);
  EXPECT_THAT(Register(relabelled),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("different architecture")));

  v1::DeviceProfile stages = Profile();
  stages.mutable_batches(0)->mutable_stages()->RemoveLast();
  EXPECT_THAT(Register(stages), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("stages")));
  v1::DeviceProfile exits = Profile();
  *exits.mutable_batches(0)->add_exits() = hapi::testing::PartMs(0.1);
  EXPECT_THAT(Register(exits), StatusIs(absl::StatusCode::kInvalidArgument));
  v1::DeviceProfile negative = Profile();
  negative.mutable_batches(0)->mutable_stages(2)->set_mean_s(-1e-3);
  EXPECT_THAT(Register(negative),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("stage 2")));
  v1::DeviceProfile nan = Profile();
  nan.mutable_batches(0)->mutable_exits(0)->set_p95_s(std::numeric_limits<double>::quiet_NaN());
  EXPECT_THAT(Register(nan), StatusIs(absl::StatusCode::kInvalidArgument));
  v1::DeviceProfile batch8 = Profile();
  batch8.mutable_batches(0)->set_batch_size(8);
  EXPECT_THAT(Register(batch8),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch-size-1")));

  EXPECT_THAT(ListDevices(), IsEmpty());
  EXPECT_FALSE(fs::exists(layout_.DevicesDir()) &&
               !hapi::testing::ListDir(layout_.DevicesDir()).empty());
}

// ---------------------------------------------------------------------------
// Variants
TEST_F(OptimizerServiceTest, CreateVariantQueuesThenSucceeds) {
  Start();
  ASSERT_OK(Register(Profile()));
  const double budget_ms = 2.5;
  v1::CreateVariantRequest req = Request(budget_ms);
  ASSERT_OK_AND_ASSIGN(v1::Job job, Create(req));
  EXPECT_EQ(job.state(), v1::QUEUED);
  EXPECT_EQ(job.phase(), "queued");
  EXPECT_EQ(job.percent(), 0);
  EXPECT_OK(ValidateName(job.id(), "job id"));
  EXPECT_EQ(job.model(), kModel);
  EXPECT_EQ(job.device(), kDevice);
  EXPECT_EQ(job.sla().latency_budget_ms(), budget_ms);
  EXPECT_FALSE(job.created_at().empty());
  EXPECT_TRUE(job.variant().empty());

  absl::Status status;
  std::vector<v1::Job> updates = Watch(job.id(), &status);
  ASSERT_OK(status);
  ASSERT_FALSE(updates.empty());
  double percent = -1;
  for (const v1::Job& u : updates) {
    EXPECT_EQ(u.id(), job.id());
    EXPECT_GE(u.percent(), percent) << "percent went down: " << Describe(u);
    EXPECT_LE(u.percent(), 100);
    percent = u.percent();
    if (&u != &updates.back()) {
      EXPECT_FALSE(Finished(u.state())) << "only the last update is final: " << Describe(u);
    }
  }
  const v1::Job done = updates.back();
  ASSERT_EQ(done.state(), v1::SUCCEEDED) << Describe(done);
  EXPECT_EQ(done.percent(), 100);
  EXPECT_EQ(done.phase(), "done");
  EXPECT_FALSE(done.variant().empty());
  EXPECT_GT(done.designs_evaluated(), 0);
  EXPECT_TRUE(done.error().empty());

  ASSERT_OK_AND_ASSIGN(v1::Job fetched, GetJob(job.id()));
  EXPECT_EQ(fetched.state(), v1::SUCCEEDED);
  EXPECT_EQ(fetched.variant(), done.variant());
  std::vector<v1::Job> listed = ListJobs();
  ASSERT_THAT(listed, SizeIs(1));
  EXPECT_EQ(listed[0].state(), v1::SUCCEEDED);

  // The variant: what the search chose, and predictions that hold up.
  ASSERT_OK_AND_ASSIGN(v1::VariantManifest v, GetVariant(done.variant()));
  EXPECT_EQ(v.id(), done.variant());
  EXPECT_EQ(v.model(), kModel);
  EXPECT_EQ(v.device(), kDevice);
  EXPECT_EQ(v.job_id(), job.id());
  EXPECT_EQ(v.exit_policy(), "max_softmax");
  EXPECT_TRUE(MessageDifferencer::Equals(v.sla(), req.sla()));
  EXPECT_FALSE(v.created_at().empty());
  ASSERT_FALSE(v.enabled_exits().empty()) << "2.5 ms needs early exits";
  ASSERT_EQ(v.thresholds_size(), v.enabled_exits_size());
  for (int i = 0; i < v.enabled_exits_size(); ++i) {
    EXPECT_GE(v.enabled_exits(i), 0);
    EXPECT_LT(v.enabled_exits(i), 5);
    if (i > 0) {
      EXPECT_GT(v.enabled_exits(i), v.enabled_exits(i - 1));
    }
    EXPECT_GE(v.thresholds(i), 0);
    EXPECT_LE(v.thresholds(i), 1);
    EXPECT_EQ(v.thresholds(i), v.thresholds(0)) << "shared threshold by default";
  }
  EXPECT_GT(v.predicted_accuracy(), 0.5);
  EXPECT_LE(v.predicted_accuracy(), 1.0);
  EXPECT_LE(v.predicted_latency().mean_ms(), budget_ms);
  EXPECT_GT(v.predicted_latency().mean_ms(), 0);
  EXPECT_LE(v.predicted_latency().p50_ms(), v.predicted_latency().p95_ms());
  EXPECT_LE(v.predicted_latency().p95_ms(), v.predicted_latency().p99_ms());
  EXPECT_LE(v.predicted_latency().p99_ms(), v.predicted_latency().worst_ms());
  EXPECT_NEAR(v.predicted_latency().throughput_rps(), 1e3 / v.predicted_latency().mean_ms(), 1e-6);
  ASSERT_EQ(v.predicted_exit_ratios_size(), 6);
  double sum = 0;
  for (int e = 0; e < 6; ++e) {
    const double r = v.predicted_exit_ratios(e);
    EXPECT_GE(r, 0);
    sum += r;
    bool enabled = e == 5 || std::count(v.enabled_exits().begin(), v.enabled_exits().end(), e) > 0;
    if (!enabled) {
      EXPECT_EQ(r, 0) << "exit " << e << " is not enabled";
    }
  }
  EXPECT_NEAR(sum, 1.0, 1e-9);
  EXPECT_EQ(v.search().algorithm(), "hapi");
  EXPECT_EQ(v.search().designs_evaluated(), done.designs_evaluated());
  EXPECT_GE(v.search().seconds(), 0);
  EXPECT_EQ(v.search().candidate_exits(), 5);
  EXPECT_EQ(v.search().threshold_grid(), 64);
  EXPECT_FALSE(v.search().per_exit_thresholds());
  EXPECT_DOUBLE_EQ(v.final_exit_accuracy(), model_->validation.Accuracy(5));
  EXPECT_NEAR(v.full_network_latency().mean_ms(), 0.05 + (0.4 + 0.5 + 0.6 + 0.7 + 0.8 + 0.9) + 0.02,
              1e-9);
  EXPECT_GT(v.test_accuracy(), 0.5);

  // Recompute the prediction independently from the manifest and table.
  Design design;
  design.exits.assign(v.enabled_exits().begin(), v.enabled_exits().end());
  design.thresholds.assign(v.thresholds().begin(), v.thresholds().end());
  ASSERT_OK_AND_ASSIGN(LatencyModel latency, LatencyModel::Create(Profile(), model_->manifest));
  ASSERT_OK_AND_ASSIGN(LatencyPrediction p, latency.Predict(design, model_->validation));
  EXPECT_DOUBLE_EQ(p.accuracy, v.predicted_accuracy());
  EXPECT_NEAR(p.mean_s * 1e3, v.predicted_latency().mean_ms(), 1e-9);
  EXPECT_NEAR(p.p95_s * 1e3, v.predicted_latency().p95_ms(), 1e-9);
  for (int e = 0; e < 6; ++e) EXPECT_DOUBLE_EQ(p.exit_ratio[e], v.predicted_exit_ratios(e));
  ASSERT_OK_AND_ASSIGN(LatencyPrediction on_test, latency.Predict(design, model_->test));
  EXPECT_DOUBLE_EQ(on_test.accuracy, v.test_accuracy());

  // The variant directory, published whole.
  const std::string dir = layout_.VariantDir(v.id());
  v1::VariantManifest on_disk;
  ASSERT_OK(ReadTextProto(layout_.VariantManifest(v.id()), &on_disk));
  EXPECT_TRUE(MessageDifferencer::Equals(on_disk, v)) << on_disk.DebugString();
  EXPECT_THAT(VariantDirEntries(), ElementsAre(v.id()));
  ASSERT_OK_AND_ASSIGN(std::string csv, ReadFile(dir + "/pareto.csv"));
  std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  ASSERT_GE(lines.size(), 3u) << csv;
  EXPECT_EQ(lines[0], "mean_latency_ms,accuracy,exits,thresholds,precision");
  double last_latency = -1, last_accuracy = -1;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> cols = absl::StrSplit(lines[i], ',');
    ASSERT_EQ(cols.size(), 5u) << lines[i];
    EXPECT_EQ(cols[4], "fp32") << "a model without int8 tables plans in fp32 only";
    double latency_ms, accuracy;
    ASSERT_TRUE(absl::SimpleAtod(cols[0], &latency_ms)) << lines[i];
    ASSERT_TRUE(absl::SimpleAtod(cols[1], &accuracy)) << lines[i];
    EXPECT_GT(latency_ms, last_latency) << "front sorted by latency: " << lines[i];
    EXPECT_GT(accuracy, last_accuracy) << "front is non-dominated: " << lines[i];
    last_latency = latency_ms;
    last_accuracy = accuracy;
  }
  EXPECT_NEAR(last_latency, v.full_network_latency().mean_ms(), 2.0)
      << "the front reaches up to the slow, accurate designs";
  EXPECT_TRUE(fs::exists(dir + "/chosen.csv"));
}

TEST_F(OptimizerServiceTest, WatchingAFinishedJobSendsItOnce) {
  Start();
  ASSERT_OK(Register(Profile()));
  ASSERT_OK_AND_ASSIGN(v1::Job job, Create(Request(3.0)));
  v1::Job done = WaitForJob(job.id());
  ASSERT_EQ(done.state(), v1::SUCCEEDED);
  absl::Status status;
  std::vector<v1::Job> again = Watch(job.id(), &status);
  EXPECT_OK(status);
  ASSERT_THAT(again, SizeIs(1));
  EXPECT_EQ(again[0].state(), v1::SUCCEEDED);
  EXPECT_EQ(again[0].variant(), done.variant());
}

TEST_F(OptimizerServiceTest, SeveralWatchersAndConcurrentJobs) {
  Start(JobManagerOptions{/*workers=*/2, /*max_pending=*/16});
  ASSERT_OK(Register(Profile()));
  ASSERT_OK(Register(Profile("dev-slow", 2.0)));
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    // dev-slow takes twice as long for everything.
    const double budget_ms = (2.2 + 0.3 * i) * (i % 2 ? 2 : 1);
    ASSERT_OK_AND_ASSIGN(v1::Job job,
                         Create(Request(budget_ms, kModel, i % 2 ? "dev-slow" : kDevice)));
    ids.push_back(job.id());
  }
  // Two watchers per job, all at once.
  std::vector<std::thread> threads;
  std::vector<v1::Job> last(ids.size() * 2);
  for (size_t i = 0; i < last.size(); ++i) {
    threads.emplace_back([&, i] { last[i] = WaitForJob(ids[i / 2]); });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> variants;
  for (size_t i = 0; i < last.size(); ++i) {
    EXPECT_EQ(last[i].state(), v1::SUCCEEDED) << Describe(last[i]);
    variants.insert(last[i].variant());
  }
  EXPECT_EQ(variants.size(), ids.size()) << "one distinct variant per job";
  ASSERT_OK_AND_ASSIGN(auto all, ListVariants());
  EXPECT_THAT(all, SizeIs(ids.size()));
  EXPECT_THAT(VariantDirEntries(), SizeIs(ids.size()));
}

TEST_F(OptimizerServiceTest, OtherObjectivesAlgorithmsAndPolicies) {
  Start();
  ASSERT_OK(Register(Profile()));
  // The variant's prediction recomputed under `policy`: a service that
  // recorded the policy but searched with another one predicts other ratios.
  ASSERT_OK_AND_ASSIGN(LatencyModel latency, LatencyModel::Create(Profile(), model_->manifest));
  auto expect_predicted_under = [&](const v1::VariantManifest& v, ExitPolicy policy) {
    SCOPED_TRACE(v.DebugString());
    ASSERT_FALSE(v.enabled_exits().empty()) << "without early exits the policy is not used";
    Design design;
    design.exits.assign(v.enabled_exits().begin(), v.enabled_exits().end());
    design.thresholds.assign(v.thresholds().begin(), v.thresholds().end());
    design.policy = policy;
    ASSERT_OK_AND_ASSIGN(LatencyPrediction p, latency.Predict(design, model_->validation));
    EXPECT_DOUBLE_EQ(p.accuracy, v.predicted_accuracy());
    ASSERT_EQ(v.predicted_exit_ratios_size(), static_cast<int>(p.exit_ratio.size()));
    for (size_t e = 0; e < p.exit_ratio.size(); ++e) {
      EXPECT_DOUBLE_EQ(p.exit_ratio[e], v.predicted_exit_ratios(e)) << "exit " << e;
    }
  };
  // Minimum latency within 1 point of the full network.
  v1::CreateVariantRequest min_latency = Request(0);
  min_latency.mutable_sla()->set_objective(v1::MIN_LATENCY);
  min_latency.mutable_sla()->set_use_accuracy_drop(true);
  min_latency.mutable_sla()->set_max_accuracy_drop(0.01);
  v1::VariantManifest v = MakeVariant(min_latency);
  EXPECT_GE(v.predicted_accuracy(), v.final_exit_accuracy() - 0.01 - 1e-12);
  EXPECT_EQ(v.sla().accuracy_confidence(), 0.9) << "the default, recorded";
  EXPECT_LT(v.predicted_latency().mean_ms(), v.full_network_latency().mean_ms());

  // Per-exit thresholds with the entropy policy and annealing, on p95.
  v1::CreateVariantRequest fancy = Request(4.2, kModel, kDevice, "annealing");
  fancy.mutable_sla()->set_statistic(v1::P95);
  fancy.set_per_exit_thresholds(true);
  fancy.set_exit_policy("entropy");
  v = MakeVariant(fancy);
  EXPECT_EQ(v.exit_policy(), "entropy");
  EXPECT_EQ(v.search().algorithm(), "annealing");
  EXPECT_TRUE(v.search().per_exit_thresholds());
  EXPECT_EQ(v.thresholds_size(), v.enabled_exits_size());
  EXPECT_LE(v.predicted_latency().p95_ms(), 4.2);
  EXPECT_EQ(v.sla().latency_confidence(), 0.9) << "the default for a p95 budget, recorded";
  expect_predicted_under(v, ExitPolicy::kEntropy);

  // Exhaustive, shared thresholds, margin policy.
  v1::CreateVariantRequest exhaustive = Request(2.5, kModel, kDevice, "exhaustive");
  exhaustive.set_exit_policy("margin");
  v = MakeVariant(exhaustive);
  EXPECT_EQ(v.search().algorithm(), "exhaustive");
  // One exhaustive search per certification candidate.
  EXPECT_EQ(v.search().designs_evaluated(),
            v.certification().candidates() * (1 + 31 * v.search().threshold_grid()));
  EXPECT_LE(v.predicted_latency().mean_ms(), 2.5);
  expect_predicted_under(v, ExitPolicy::kMargin);
}

TEST_F(OptimizerServiceTest, ListVariantsFiltersAndDeleteVariantRemoves) {
  Start();
  ASSERT_OK(Register(Profile("dev-a")));
  ASSERT_OK(Register(Profile("dev-b", 2.0)));
  v1::CreateVariantRequest a = Request(2.5, kModel, "dev-a");
  a.set_variant_id("va");
  v1::CreateVariantRequest b = Request(5.0, kModel, "dev-b");
  b.set_variant_id("vb");
  ASSERT_EQ(MakeVariant(a).id(), "va");
  ASSERT_EQ(MakeVariant(b).id(), "vb");

  auto ids = [](const std::vector<v1::VariantManifest>& vs) {
    std::vector<std::string> out;
    for (const auto& v : vs) out.push_back(v.id());
    return out;
  };
  ASSERT_OK_AND_ASSIGN(auto all, ListVariants());
  EXPECT_THAT(ids(all), ElementsAre("va", "vb"));
  ASSERT_OK_AND_ASSIGN(auto on_a, ListVariants("dev-a"));
  EXPECT_THAT(ids(on_a), ElementsAre("va"));
  ASSERT_OK_AND_ASSIGN(auto on_b, ListVariants("dev-b", kModel));
  EXPECT_THAT(ids(on_b), ElementsAre("vb"));
  ASSERT_OK_AND_ASSIGN(auto of_other, ListVariants("", kOtherModel));
  EXPECT_THAT(of_other, IsEmpty());
  ASSERT_OK_AND_ASSIGN(auto nowhere, ListVariants("dev-c"));
  EXPECT_THAT(nowhere, IsEmpty());
  EXPECT_THAT(ListVariants("A"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ListVariants("", "../x"), StatusIs(absl::StatusCode::kInvalidArgument));

  ASSERT_OK(DeleteVariant("va"));
  EXPECT_THAT(GetVariant("va"), StatusIs(absl::StatusCode::kNotFound, HasSubstr("va")));
  EXPECT_THAT(DeleteVariant("va"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_FALSE(fs::exists(layout_.VariantDir("va")));
  EXPECT_THAT(VariantDirEntries(), ElementsAre("vb"));
  ASSERT_OK_AND_ASSIGN(all, ListVariants());
  EXPECT_THAT(ids(all), ElementsAre("vb"));
  ASSERT_OK(GetVariant("vb").status());
}

TEST_F(OptimizerServiceTest, ReusingAVariantIdFailsTheJobAndKeepsTheOriginal) {
  Start();
  ASSERT_OK(Register(Profile()));
  v1::CreateVariantRequest req = Request(2.5);
  req.set_variant_id("mine");
  v1::VariantManifest first = MakeVariant(req);
  ASSERT_EQ(first.id(), "mine");
  req.mutable_sla()->set_latency_budget_ms(3.5);
  ASSERT_OK_AND_ASSIGN(v1::Job second, Create(req));
  v1::Job done = WaitForJob(second.id());
  EXPECT_EQ(done.state(), v1::FAILED) << Describe(done);
  EXPECT_EQ(done.error_code(), static_cast<int>(absl::StatusCode::kAlreadyExists))
      << Describe(done);
  ASSERT_OK_AND_ASSIGN(v1::VariantManifest still, GetVariant("mine"));
  EXPECT_TRUE(MessageDifferencer::Equals(still, first));
  EXPECT_THAT(VariantDirEntries(), ElementsAre("mine"));
}

// ---------------------------------------------------------------------------
// Errors
TEST_F(OptimizerServiceTest, CreateVariantRejectsBadRequestsAtOnce) {
  Start();
  ASSERT_OK(Register(Profile()));
  EXPECT_THAT(Create(Request(2.5, kModel, "no-such-device")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("no-such-device")));
  EXPECT_THAT(Create(Request(2.5, "no-such-model")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("unknown model 'no-such-model'")));
  for (const std::string bad : {"../x", "A", "", "a b", "..", "x/../y"}) {
    EXPECT_THAT(Create(Request(2.5, bad)), StatusIs(absl::StatusCode::kInvalidArgument))
        << "model '" << bad << "'";
    EXPECT_THAT(Create(Request(2.5, kModel, bad)), StatusIs(absl::StatusCode::kInvalidArgument))
        << "device '" << bad << "'";
    if (!bad.empty()) {
      v1::CreateVariantRequest req = Request(2.5);
      req.set_variant_id(bad);
      EXPECT_THAT(Create(req),
                  StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("variant id")))
          << "variant id '" << bad << "'";
    }
  }
  for (double budget :
       {-1.0, 0.0, std::numeric_limits<double>::quiet_NaN(),
        std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
    EXPECT_THAT(Create(Request(budget)), StatusIs(absl::StatusCode::kInvalidArgument))
        << "budget " << budget;
  }
  v1::CreateVariantRequest req = Request(2.5, kModel, kDevice, "simulated-annealing");
  EXPECT_THAT(Create(req),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown search")));
  req = Request(2.5);
  req.set_exit_policy("softmax");
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("exit policy")));
  req = Request(0);
  req.mutable_sla()->set_objective(v1::MIN_LATENCY);
  req.mutable_sla()->set_min_accuracy(1.5);
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument));
  req.mutable_sla()->set_min_accuracy(0.5);
  req.mutable_sla()->set_use_accuracy_drop(true);
  req.mutable_sla()->set_max_accuracy_drop(std::numeric_limits<double>::quiet_NaN());
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument));
  req.mutable_sla()->set_max_accuracy_drop(-0.1);
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument));
  req.mutable_sla()->set_max_accuracy_drop(0.01);
  req.mutable_sla()->set_accuracy_confidence(1.5);
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("confidence")));
  req = Request(2.5);
  req.mutable_sla()->set_statistic(v1::P95);
  req.mutable_sla()->set_latency_confidence(0.2);
  EXPECT_THAT(Create(req),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("latency confidence")));
  req = Request(2.5);
  req.mutable_sla()->set_statistic(static_cast<v1::LatencyStatistic>(42));
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument));
  req = Request(2.5);
  req.mutable_sla()->set_min_throughput_rps(-1);
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument));
  // A device profiled for "synth" cannot be used with "other".
  EXPECT_THAT(Create(Request(2.5, kOtherModel)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is for model 'synth'")));

  EXPECT_THAT(ListJobs(), IsEmpty()) << "rejected requests leave no job behind";
  EXPECT_THAT(VariantDirEntries(), IsEmpty());
}

TEST_F(OptimizerServiceTest, InfeasibleSlaFailsTheJobNamingTheFastestLatency) {
  Start();
  ASSERT_OK(Register(Profile()));
  ASSERT_OK_AND_ASSIGN(v1::Job job, Create(Request(0.3)));  // below any path
  EXPECT_EQ(job.state(), v1::QUEUED);
  v1::Job done = WaitForJob(job.id());
  ASSERT_EQ(done.state(), v1::FAILED) << Describe(done);
  EXPECT_EQ(done.phase(), "failed");
  EXPECT_EQ(done.error_code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  std::smatch m;
  const std::string error = done.error();
  ASSERT_TRUE(std::regex_search(
      error, m, std::regex("fastest achievable mean latency on this device is ([0-9.]+) ms")))
      << error;
  const double fastest_ms = std::stod(m[1].str());
  EXPECT_GT(fastest_ms, 0.3);
  EXPECT_LT(fastest_ms, 3.97);
  EXPECT_TRUE(done.variant().empty());
  ASSERT_OK_AND_ASSIGN(v1::Job fetched, GetJob(job.id()));
  EXPECT_EQ(fetched.state(), v1::FAILED);
  EXPECT_EQ(fetched.error(), done.error());
  EXPECT_THAT(VariantDirEntries(), IsEmpty()) << "a failed job publishes nothing";
  ASSERT_OK_AND_ASSIGN(auto variants, ListVariants());
  EXPECT_THAT(variants, IsEmpty());

  // Asking for exactly the fastest latency then works.
  v1::VariantManifest v = MakeVariant(Request(fastest_ms + 0.001));
  EXPECT_LE(v.predicted_latency().mean_ms(), fastest_ms + 0.001);
}

TEST_F(OptimizerServiceTest, MalformedAndUnknownIds) {
  Start();
  for (const std::string bad : {"../x", "A", "", "..", "a/b"}) {
    SCOPED_TRACE("'" + bad + "'");
    EXPECT_THAT(GetDevice(bad), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(DeleteDevice(bad), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(GetJob(bad), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(CancelJob(bad), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(GetVariant(bad), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(DeleteVariant(bad), StatusIs(absl::StatusCode::kInvalidArgument));
    absl::Status status;
    EXPECT_THAT(Watch(bad, &status), IsEmpty());
    EXPECT_THAT(status, StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_THAT(GetJob("job-nope"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(CancelJob("job-nope"), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(GetVariant("v-nope"), StatusIs(absl::StatusCode::kNotFound));
  absl::Status status;
  EXPECT_THAT(Watch("job-nope", &status), IsEmpty());
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound));
  // Nothing escaped the repository.
  EXPECT_FALSE(fs::exists(tmp_.Join("x")));
}

// ---------------------------------------------------------------------------
// Operator token
TEST_F(OptimizerServiceTest, AdminTokenProtectsMutatingRpcsOnly) {
  Start(JobManagerOptions{}, 64, "s3cret");
  v1::RegisterDeviceRequest reg;
  *reg.mutable_profile() = Profile();
  v1::DeviceProfile profile_out;
  const std::optional<std::string> none, wrong = "Bearer nope", bare = "s3cret",
                                         right = "Bearer s3cret";
  EXPECT_THAT(CallAs(none, &Stub::RegisterDevice, reg, &profile_out),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(CallAs(wrong, &Stub::RegisterDevice, reg, &profile_out),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(CallAs(bare, &Stub::RegisterDevice, reg, &profile_out),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(CallAs(std::optional<std::string>("Bearer s3cret-and-more"), &Stub::RegisterDevice,
                     reg, &profile_out),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_FALSE(fs::exists(layout_.DeviceDir("dev"))) << "refused calls change nothing";
  EXPECT_OK(CallAs(right, &Stub::RegisterDevice, reg, &profile_out));

  // The token is checked before the request: no probing without it.
  v1::CreateVariantRequest bad = Request(-1, "../x");
  v1::Job job;
  EXPECT_THAT(CallAs(none, &Stub::CreateVariant, bad, &job),
              StatusIs(absl::StatusCode::kUnauthenticated));

  const v1::CreateVariantRequest create = Request(2.5);
  EXPECT_THAT(CallAs(none, &Stub::CreateVariant, create, &job),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(CallAs(wrong, &Stub::CreateVariant, create, &job),
              StatusIs(absl::StatusCode::kPermissionDenied));
  ASSERT_OK(CallAs(right, &Stub::CreateVariant, create, &job));

  // Read-only RPCs need no token.
  v1::ListDevicesResponse devices;
  EXPECT_OK(CallAs(none, &Stub::ListDevices, v1::ListDevicesRequest(), &devices));
  EXPECT_THAT(devices.devices(), SizeIs(1));
  v1::GetDeviceRequest get_device;
  get_device.set_name(kDevice);
  EXPECT_OK(CallAs(none, &Stub::GetDevice, get_device, &profile_out));
  v1::GetJobRequest get_job;
  get_job.set_id(job.id());
  v1::Job fetched;
  EXPECT_OK(CallAs(none, &Stub::GetJob, get_job, &fetched));
  v1::ListJobsResponse jobs;
  EXPECT_OK(CallAs(none, &Stub::ListJobs, v1::ListJobsRequest(), &jobs));
  EXPECT_THAT(jobs.jobs(), SizeIs(1));
  const v1::Job done = WaitForJob(job.id());  // WatchJob without a token
  ASSERT_EQ(done.state(), v1::SUCCEEDED);
  v1::ListVariantsResponse variants;
  EXPECT_OK(CallAs(none, &Stub::ListVariants, v1::ListVariantsRequest(), &variants));
  EXPECT_THAT(variants.variants(), SizeIs(1));
  v1::GetVariantRequest get_variant;
  get_variant.set_id(done.variant());
  v1::VariantManifest variant;
  EXPECT_OK(CallAs(none, &Stub::GetVariant, get_variant, &variant));

  // CancelJob, DeleteVariant and DeleteDevice are protected too.
  v1::CancelJobRequest cancel;
  cancel.set_id(job.id());
  EXPECT_THAT(CallAs(none, &Stub::CancelJob, cancel, &fetched),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(CallAs(wrong, &Stub::CancelJob, cancel, &fetched),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_OK(CallAs(right, &Stub::CancelJob, cancel, &fetched));
  EXPECT_EQ(fetched.state(), v1::SUCCEEDED) << "cancelling a finished job changes nothing";

  v1::DeleteVariantRequest delete_variant;
  delete_variant.set_id(done.variant());
  v1::DeleteResponse deleted;
  EXPECT_THAT(CallAs(none, &Stub::DeleteVariant, delete_variant, &deleted),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(CallAs(wrong, &Stub::DeleteVariant, delete_variant, &deleted),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_OK(GetVariant(done.variant()).status());
  EXPECT_OK(CallAs(right, &Stub::DeleteVariant, delete_variant, &deleted));

  v1::DeleteDeviceRequest delete_device;
  delete_device.set_name(kDevice);
  EXPECT_THAT(CallAs(none, &Stub::DeleteDevice, delete_device, &deleted),
              StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(CallAs(wrong, &Stub::DeleteDevice, delete_device, &deleted),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_OK(GetDevice(kDevice).status());
  EXPECT_OK(CallAs(right, &Stub::DeleteDevice, delete_device, &deleted));
  EXPECT_THAT(GetDevice(kDevice), StatusIs(absl::StatusCode::kNotFound));
}

// ---------------------------------------------------------------------------
// Queue, cancellation, restart
//
// A per-exit exhaustive search over 5 candidate exits and a 24-threshold grid
// scores 25^5 ~ 9.8e6 designs sample by sample: minutes of work, so it keeps
// the single worker busy for as long as a test needs.
v1::CreateVariantRequest SlowRequest() {
  v1::CreateVariantRequest req;
  req.set_model(kModel);
  req.set_device(kDevice);
  req.mutable_sla()->set_latency_budget_ms(2.5);
  req.set_algorithm("exhaustive");
  req.set_per_exit_thresholds(true);
  return req;
}

TEST_F(OptimizerServiceTest, CancelQueuedAndRunningJobs) {
  Start(JobManagerOptions{/*workers=*/1, /*max_pending=*/16}, /*threshold_grid=*/24);
  ASSERT_OK(Register(Profile()));
  ASSERT_OK_AND_ASSIGN(v1::Job slow, Create(SlowRequest()));
  PollJob(slow.id(), [](const v1::Job& j) { return j.state() == v1::RUNNING && j.percent() >= 5; });
  ASSERT_OK_AND_ASSIGN(v1::Job queued, Create(Request(2.5)));
  ASSERT_OK_AND_ASSIGN(v1::Job next, Create(Request(3.0)));
  EXPECT_EQ(queued.state(), v1::QUEUED);
  ASSERT_OK_AND_ASSIGN(v1::Job still_queued, GetJob(queued.id()));
  EXPECT_EQ(still_queued.state(), v1::QUEUED) << "the only worker is busy";

  ASSERT_OK_AND_ASSIGN(v1::Job cancelled, CancelJob(queued.id()));
  EXPECT_EQ(cancelled.state(), v1::CANCELLED) << Describe(cancelled);
  EXPECT_EQ(cancelled.error_code(), static_cast<int>(absl::StatusCode::kCancelled));
  EXPECT_FALSE(cancelled.error().empty());
  ASSERT_OK_AND_ASSIGN(v1::Job fetched, GetJob(queued.id()));
  EXPECT_EQ(fetched.state(), v1::CANCELLED);
  // Cancelling again returns the finished job unchanged.
  ASSERT_OK_AND_ASSIGN(v1::Job again, CancelJob(queued.id()));
  EXPECT_EQ(again.state(), v1::CANCELLED);

  // The running job stops at its next progress check.
  ASSERT_OK(CancelJob(slow.id()).status());
  v1::Job slow_done = WaitForJob(slow.id());
  EXPECT_EQ(slow_done.state(), v1::CANCELLED) << Describe(slow_done);
  EXPECT_EQ(slow_done.error_code(), static_cast<int>(absl::StatusCode::kCancelled));
  EXPECT_TRUE(slow_done.variant().empty());

  // The worker moves on to the next job; the cancelled one never runs.
  v1::Job next_done = WaitForJob(next.id());
  EXPECT_EQ(next_done.state(), v1::SUCCEEDED) << Describe(next_done);
  ASSERT_OK_AND_ASSIGN(fetched, GetJob(queued.id()));
  EXPECT_EQ(fetched.state(), v1::CANCELLED);
  ASSERT_OK_AND_ASSIGN(auto variants, ListVariants());
  ASSERT_THAT(variants, SizeIs(1));
  EXPECT_EQ(variants[0].job_id(), next.id());
  EXPECT_THAT(VariantDirEntries(), ElementsAre(next_done.variant())) << "no staging left behind";
}

TEST_F(OptimizerServiceTest, WatchersMayHangUpEarly) {
  Start(JobManagerOptions{/*workers=*/1, /*max_pending=*/16}, /*threshold_grid=*/24);
  ASSERT_OK(Register(Profile()));
  ASSERT_OK_AND_ASSIGN(v1::Job slow, Create(SlowRequest()));
  for (int i = 0; i < 5; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    v1::GetJobRequest req;
    req.set_id(slow.id());
    std::unique_ptr<grpc::ClientReader<v1::Job>> reader = stub_->WatchJob(&ctx, req);
    v1::Job first;
    ASSERT_TRUE(reader->Read(&first));
    EXPECT_EQ(first.id(), slow.id());
    EXPECT_FALSE(Finished(first.state()));
    ctx.TryCancel();
    while (reader->Read(&first)) {
    }
    EXPECT_THAT(FromGrpcStatus(reader->Finish()), StatusIs(absl::StatusCode::kCancelled));
  }
  // A watcher that stays to the end still gets the final state.
  ASSERT_OK(CancelJob(slow.id()).status());
  EXPECT_EQ(WaitForJob(slow.id()).state(), v1::CANCELLED);
  // Stop() must not hang on the abandoned streams.
}

TEST_F(OptimizerServiceTest, QueueLimitIsResourceExhausted) {
  Start(JobManagerOptions{/*workers=*/1, /*max_pending=*/2}, /*threshold_grid=*/24);
  ASSERT_OK(Register(Profile()));
  ASSERT_OK_AND_ASSIGN(v1::Job slow, Create(SlowRequest()));
  PollJob(slow.id(), [](const v1::Job& j) { return j.state() == v1::RUNNING; });
  ASSERT_OK(Create(Request(2.5)).status());
  ASSERT_OK(Create(Request(2.5)).status());
  EXPECT_THAT(Create(Request(2.5)), StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(ListJobs(), SizeIs(3));
}

TEST_F(OptimizerServiceTest, RestartFailsInterruptedJobsAndRecoversTheRepository) {
  Start(JobManagerOptions{/*workers=*/1, /*max_pending=*/16}, /*threshold_grid=*/24);
  ASSERT_OK(Register(Profile()));
  v1::VariantManifest kept = MakeVariant(Request(2.5));
  ASSERT_OK_AND_ASSIGN(v1::Job slow, Create(SlowRequest()));
  PollJob(slow.id(), [](const v1::Job& j) { return j.state() == v1::RUNNING; });
  ASSERT_OK_AND_ASSIGN(v1::Job queued, Create(Request(3.0)));
  // An orderly stop cancels the running job; the queued one stays queued in
  // the state database.
  Stop();

  // What a crash can leave behind: a half-written staging directory, and a
  // published variant whose index row was never committed.
  ASSERT_OK(MakeDirectories(layout_.VariantDir(".tmp-half-123-456")));
  ASSERT_OK(MakeDirectories(layout_.VariantDir("orphan")));
  v1::VariantManifest orphan = kept;
  orphan.set_id("orphan");
  ASSERT_OK(WriteTextProtoAtomically(layout_.VariantManifest("orphan"), orphan));

  Start(JobManagerOptions{/*workers=*/1, /*max_pending=*/16}, /*threshold_grid=*/24);
  ASSERT_OK_AND_ASSIGN(v1::Job slow_after, GetJob(slow.id()));
  EXPECT_EQ(slow_after.state(), v1::CANCELLED) << Describe(slow_after);
  ASSERT_OK_AND_ASSIGN(v1::Job queued_after, GetJob(queued.id()));
  EXPECT_EQ(queued_after.state(), v1::FAILED) << Describe(queued_after);
  EXPECT_THAT(queued_after.error(), HasSubstr("stopped"));
  EXPECT_EQ(queued_after.error_code(), static_cast<int>(absl::StatusCode::kAborted))
      << Describe(queued_after);
  EXPECT_THAT(VariantDirEntries(), UnorderedElementsAre(kept.id(), "orphan"));
  ASSERT_OK_AND_ASSIGN(v1::VariantManifest k, GetVariant(kept.id()));
  EXPECT_TRUE(MessageDifferencer::Equals(k, kept));
  ASSERT_OK_AND_ASSIGN(v1::VariantManifest o, GetVariant("orphan"));
  EXPECT_TRUE(MessageDifferencer::Equals(o, orphan));
  ASSERT_THAT(ListDevices(), SizeIs(1));
  // And it still works.
  EXPECT_EQ(MakeVariant(Request(3.0)).model(), kModel);
}

// ---------------------------------------------------------------------------
// Precision: the search chooses fp32 or int8 together with exits and
// thresholds, on each precision's own calibration table and latencies.

v1::CreateVariantRequest MaxDropRequest(double points) {
  v1::CreateVariantRequest req;
  req.set_model(kModel);
  req.set_device(kDevice);
  req.mutable_sla()->set_objective(v1::MIN_LATENCY);
  req.mutable_sla()->set_use_accuracy_drop(true);
  req.mutable_sla()->set_max_accuracy_drop(points / 100);
  return req;
}

TEST_F(OptimizerServiceTest, ChoosesInt8WhenItIsFasterAndAsAccurate) {
  // An int8 path with the fp32 answers at 0.4x the latency.
  ASSERT_OK(testing::AddSyntheticInt8Tables(repo_, kModel, /*flip=*/0, /*seed=*/5));
  Start();
  v1::DeviceProfile profile = Profile();
  testing::AddInt8Latencies(&profile, 0.4);
  ASSERT_OK(Register(profile));
  v1::VariantManifest v = MakeVariant(MaxDropRequest(1));
  EXPECT_EQ(v.precision(), v1::INT8);
  ASSERT_EQ(v.precision_candidates_size(), 2);
  const v1::PrecisionCandidate& fp32 = v.precision_candidates(0);
  const v1::PrecisionCandidate& int8 = v.precision_candidates(1);
  EXPECT_EQ(fp32.precision(), v1::FP32);
  EXPECT_EQ(int8.precision(), v1::INT8);
  EXPECT_TRUE(fp32.meets_sla() && int8.meets_sla()) << v.DebugString();
  EXPECT_LT(int8.predicted_latency().mean_ms(), fp32.predicted_latency().mean_ms());
  EXPECT_DOUBLE_EQ(v.predicted_latency().mean_ms(), int8.predicted_latency().mean_ms());
  EXPECT_THAT(v.enabled_exits(), ::testing::ElementsAreArray(int8.enabled_exits()));

  // The prediction is the int8 latencies over the int8 table; the baseline
  // is the fp32 full network.
  ASSERT_OK_AND_ASSIGN(ModelMetadata m, LoadModelMetadata(layout_.ModelDir(kModel)));
  ASSERT_TRUE(m.int8_validation.has_value());
  ASSERT_OK_AND_ASSIGN(LatencyModel int8_latency,
                       LatencyModel::Create(profile, m.manifest, v1::INT8));
  ASSERT_OK_AND_ASSIGN(LatencyModel fp32_latency, LatencyModel::Create(profile, m.manifest));
  Design design;
  design.exits.assign(v.enabled_exits().begin(), v.enabled_exits().end());
  design.thresholds.assign(v.thresholds().begin(), v.thresholds().end());
  ASSERT_OK_AND_ASSIGN(LatencyPrediction p, int8_latency.Predict(design, *m.int8_validation));
  EXPECT_NEAR(p.mean_s * 1e3, v.predicted_latency().mean_ms(), 1e-9);
  EXPECT_DOUBLE_EQ(p.accuracy, v.predicted_accuracy());
  ASSERT_OK_AND_ASSIGN(LatencyPrediction full,
                       fp32_latency.Predict(Design::FinalOnly(), m.validation));
  EXPECT_NEAR(full.mean_s * 1e3, v.full_network_latency().mean_ms(), 1e-9);
  EXPECT_DOUBLE_EQ(v.final_exit_accuracy(), m.validation.Accuracy(5));

  // The front combines both precisions; each has its own file.
  const std::string dir = layout_.VariantDir(v.id());
  ASSERT_OK_AND_ASSIGN(std::string csv, ReadFile(dir + "/pareto.csv"));
  EXPECT_THAT(csv, HasSubstr("mean_latency_ms,accuracy,exits,thresholds,precision\n"));
  EXPECT_THAT(csv, HasSubstr(",int8\n"));
  EXPECT_TRUE(fs::exists(dir + "/pareto-fp32.csv"));
  EXPECT_TRUE(fs::exists(dir + "/pareto-int8.csv"));
  // Each precision is certified at half the error rate of a one-precision
  // search (Bonferroni), so the chosen one holds at the SLA's confidence
  // whichever it is.
  v1::CreateVariantRequest fp32_only = MaxDropRequest(1);
  fp32_only.add_precisions(v1::FP32);
  const v1::VariantManifest alone = MakeVariant(fp32_only);
  EXPECT_EQ(alone.precision(), v1::FP32);
  EXPECT_NEAR(1 - v.certification().confidence(), (1 - alone.certification().confidence()) / 2,
              1e-12);
}

TEST_F(OptimizerServiceTest, KeepsFp32WhenInt8LosesTooMuchAccuracy) {
  // 20% of the int8 answers wrong at every exit: no int8 design is within
  // half a point of the fp32 full network, however fast.
  ASSERT_OK(testing::AddSyntheticInt8Tables(repo_, kModel, /*flip=*/0.2, /*seed=*/5));
  Start();
  v1::DeviceProfile profile = Profile();
  testing::AddInt8Latencies(&profile, 0.2);
  ASSERT_OK(Register(profile));
  v1::VariantManifest v = MakeVariant(MaxDropRequest(0.5));
  EXPECT_EQ(v.precision(), v1::FP32);
  ASSERT_EQ(v.precision_candidates_size(), 2);
  EXPECT_TRUE(v.precision_candidates(0).meets_sla());
  const v1::PrecisionCandidate& int8 = v.precision_candidates(1);
  // Either no int8 design met the SLA, or only an uncertified fallback did.
  if (int8.meets_sla()) {
    EXPECT_THAT(int8.note(), HasSubstr("not certified"));
  } else {
    EXPECT_FALSE(int8.note().empty());
  }
  EXPECT_GE(v.predicted_accuracy(), v.final_exit_accuracy() - 0.005 - 1e-12);
}

TEST_F(OptimizerServiceTest, PrecisionsTheRequestAllowsAndWhatIsMissing) {
  ASSERT_OK(testing::AddSyntheticInt8Tables(repo_, kModel, /*flip=*/0, /*seed=*/5));
  Start();
  // A device profiled in fp32 only: int8 is skipped with the reason.
  ASSERT_OK(Register(Profile()));
  v1::VariantManifest v = MakeVariant(MaxDropRequest(1));
  EXPECT_EQ(v.precision(), v1::FP32);
  ASSERT_EQ(v.precision_candidates_size(), 2);
  EXPECT_FALSE(v.precision_candidates(1).meets_sla());
  EXPECT_THAT(v.precision_candidates(1).note(), HasSubstr("no int8 latencies"));
  // Asking for int8 there is refused at once, naming what is missing.
  v1::CreateVariantRequest req = MaxDropRequest(1);
  req.add_precisions(v1::INT8);
  EXPECT_THAT(Create(req),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("hapi-profile")));

  v1::DeviceProfile profile = Profile();
  testing::AddInt8Latencies(&profile, 0.4);
  ASSERT_OK(Register(profile, /*overwrite=*/true));
  // Only fp32 when only fp32 is allowed, though int8 would be faster.
  req = MaxDropRequest(1);
  req.add_precisions(v1::FP32);
  v = MakeVariant(req);
  EXPECT_EQ(v.precision(), v1::FP32);
  EXPECT_EQ(v.precision_candidates_size(), 1);
  // A model without int8 tables cannot be asked for int8.
  v1::DeviceProfile other =
      MakeSyntheticProfile("other-dev", LoadModelMetadata(layout_.ModelDir(kOtherModel))->manifest);
  testing::AddInt8Latencies(&other, 0.4);
  ASSERT_OK(Register(other));
  req = MaxDropRequest(1);
  req.set_model(kOtherModel);
  req.set_device("other-dev");
  req.add_precisions(v1::INT8);
  EXPECT_THAT(Create(req),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("hapi-quantize")));
  // A device measured in int8 only registers, but plans nothing: the fp32
  // full network is every design's baseline.
  v1::DeviceProfile int8_only = Profile("int8-only");
  int8_only.mutable_batches(0)->set_precision(v1::INT8);
  ASSERT_OK(Register(int8_only));
  req = MaxDropRequest(1);
  req.set_device("int8-only");
  EXPECT_THAT(Create(req),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("no fp32 latencies")));
  // Unknown and repeated precisions are bad requests.
  req = MaxDropRequest(1);
  req.add_precisions(static_cast<v1::Precision>(7));
  EXPECT_THAT(Create(req),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown precision")));
  req = MaxDropRequest(1);
  req.add_precisions(v1::INT8);
  req.add_precisions(v1::INT8);
  EXPECT_THAT(Create(req), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("twice")));
}

}  // namespace
}  // namespace hapi
