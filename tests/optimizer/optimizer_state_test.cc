// The optimizer's durable state against misuse and crashes: a device that
// variants or unfinished jobs use cannot be deleted, nonsense in a device
// profile is refused naming the field, and restart recovery puts right what a
// kill -9 leaves in devices/ and between a published variant and its job.
// Crashes are laid out by hand, on disk and in the state database, exactly as
// the kill would leave them, and then the optimizer starts on them;
// optimizer_restart_test kills the real binary.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "hapi/v1/optimizer.grpc.pb.h"
#include "optimizer/optimizer_process.h"
#include "optimizer/state_store.h"
#include "rpc/grpc_status.h"
#include "tests/optimizer/synthetic_model.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace {

namespace fs = std::filesystem;
using ::google::protobuf::util::MessageDifferencer;
using ::hapi::testing::ListDir;
using ::hapi::testing::ScopedTempDir;
using ::hapi::testing::StatusIs;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::UnorderedElementsAre;

using Stub = v1::Optimizer::Stub;
template <typename Req, typename Resp>
using Method = grpc::Status (Stub::*)(grpc::ClientContext*, const Req&, Resp*);

constexpr char kModel[] = "synth";  // 6 exits, 2000 samples
constexpr char kDevice[] = "dev";

bool Finished(const v1::Job& j) {
  return j.state() == v1::SUCCEEDED || j.state() == v1::FAILED || j.state() == v1::CANCELLED;
}

std::string Describe(const v1::Job& j) {
  return absl::StrCat(j.id(), " ", v1::JobState_Name(j.state()), " ", j.phase(), " ", j.percent(),
                      "% ", j.error());
}

v1::Job UnfinishedJob(const std::string& id, const std::string& device,
                      v1::JobState state = v1::QUEUED) {
  v1::Job job;
  job.set_id(id);
  job.set_state(state);
  job.set_phase(state == v1::QUEUED ? "queued" : "searching");
  job.set_model(kModel);
  job.set_device(device);
  return job;
}

v1::CreateVariantRequest Request(const std::string& device, double budget_ms,
                                 const std::string& variant_id = "") {
  v1::CreateVariantRequest req;
  req.set_model(kModel);
  req.set_device(device);
  req.mutable_sla()->set_latency_budget_ms(budget_ms);
  req.set_variant_id(variant_id);
  return req;
}

// Per-exit exhaustive search: many seconds of work, so the job is still
// running when the test looks.
v1::CreateVariantRequest SlowRequest(const std::string& device) {
  v1::CreateVariantRequest req = Request(device, 2.5);
  req.set_algorithm("exhaustive");
  req.set_per_exit_thresholds(true);
  return req;
}

// ---------------------------------------------------------------------------
// The state store alone: the dependants check and the admission check.

v1::DeviceProfile Device(const std::string& name) {
  v1::DeviceProfile d;
  d.set_name(name);
  d.set_model(kModel);
  return d;
}

v1::VariantManifest Variant(const std::string& id, const std::string& device) {
  v1::VariantManifest v;
  v.set_id(id);
  v.set_model(kModel);
  v.set_device(device);
  return v;
}

// The device check is in the statement that inserts the job: a DeleteDevice
// that ran first makes the admission fail, one that runs after sees the job.
TEST(StateStoreTest, AJobIsAdmittedOnlyForARegisteredDevice) {
  ScopedTempDir tmp;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store, StateStore::Open(tmp.Join("state.db")));
  const v1::Job job = UnfinishedJob("job-1", kDevice);
  EXPECT_THAT(store->PutJob(job, v1::CreateVariantRequest()),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("'dev'")));
  EXPECT_THAT(store->GetJob("job-1"), StatusIs(absl::StatusCode::kNotFound));

  ASSERT_OK(store->PutDevice(Device(kDevice), /*overwrite=*/false));
  ASSERT_OK(store->PutJob(job, v1::CreateVariantRequest()));
  ASSERT_OK(store->GetJob("job-1").status());
  EXPECT_THAT(store->DeleteDevice(kDevice),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("job-1")));
}

TEST(StateStoreTest, DeleteDeviceIsRefusedWhileUsedNamingAFewOfTheUsers) {
  ScopedTempDir tmp;
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store, StateStore::Open(tmp.Join("state.db")));
  ASSERT_OK(store->PutDevice(Device(kDevice), false));
  ASSERT_OK(store->PutDevice(Device("other"), false));
  for (int i = 0; i < 5; ++i) ASSERT_OK(store->PutVariant(Variant(absl::StrCat("v", i), kDevice)));
  ASSERT_OK(store->PutVariant(Variant("elsewhere-v", "other")));
  std::vector<v1::Job> jobs;
  for (int i = 0; i < 4; ++i) {
    jobs.push_back(
        UnfinishedJob(absl::StrCat("job-", i), kDevice, i == 3 ? v1::RUNNING : v1::QUEUED));
    ASSERT_OK(store->PutJob(jobs.back(), v1::CreateVariantRequest()));
  }
  ASSERT_OK(store->PutJob(UnfinishedJob("elsewhere-job", "other"), v1::CreateVariantRequest()));
  v1::Job done = UnfinishedJob("finished-job", kDevice);
  ASSERT_OK(store->PutJob(done, v1::CreateVariantRequest()));
  done.set_state(v1::FAILED);
  ASSERT_OK(store->UpdateJob(done));

  EXPECT_THAT(store->DeleteDevice(kDevice),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("'dev'"), HasSubstr("variants v0, v1, v2 and 2 more"),
                             HasSubstr("jobs job-0, job-1, job-2 and 1 more"),
                             Not(HasSubstr("elsewhere")), Not(HasSubstr("finished-job")))));
  ASSERT_OK(store->GetDevice(kDevice).status());

  // Finished jobs no longer hold it; the variants still do.
  for (v1::Job& j : jobs) {
    j.set_state(j.state() == v1::RUNNING ? v1::CANCELLED : v1::FAILED);
    ASSERT_OK(store->UpdateJob(j));
  }
  EXPECT_THAT(store->DeleteDevice(kDevice),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("v0, v1, v2 and 2 more"), Not(HasSubstr("job")))));
  for (int i = 0; i < 5; ++i) ASSERT_OK(store->DeleteVariant(absl::StrCat("v", i)));
  ASSERT_OK(store->DeleteDevice(kDevice));
  EXPECT_THAT(store->GetDevice(kDevice), StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(store->DeleteDevice(kDevice), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_OK(store->GetDevice("other").status());
}

// ---------------------------------------------------------------------------
// The service, in-process, on a temporary repository.

class OptimizerStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = tmp_.Join("repository");
    layout_ = RepositoryLayout(repo_);
    ASSERT_OK(hapi::testing::WriteSyntheticModel(repo_, kModel, 6, 2000, /*seed=*/42));
    manifest_ = hapi::testing::MakeSyntheticManifest(kModel, 6);
  }
  void TearDown() override { Stop(); }

  // As hapi-optimizer starts: RecoverState runs first.
  void Start() {
    OptimizerOptions options;
    options.listen = "";  // in-process channel only
    options.repository = repo_;
    options.state = StatePath();
    options.metrics_address = "";
    options.workers = 1;
    options.threshold_grid = 24;
    options.gnuplot = "";
    options.profiler = "";
    ASSERT_OK_AND_ASSIGN(optimizer_, OptimizerProcess::Create(options));
    stub_ = v1::Optimizer::NewStub(optimizer_->InProcessChannel());
  }
  void Stop() {
    stub_.reset();
    optimizer_.reset();
  }
  std::string StatePath() const { return tmp_.Join("state.db"); }

  template <typename Req, typename Resp>
  absl::Status Call(Method<Req, Resp> method, const Req& request, Resp* response) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return FromGrpcStatus((stub_.get()->*method)(&ctx, request, response));
  }

  v1::DeviceProfile Profile(const std::string& name, double scale = 1.0) const {
    return hapi::testing::MakeSyntheticProfile(name, manifest_, scale);
  }
  absl::Status Register(const v1::DeviceProfile& profile) {
    v1::RegisterDeviceRequest req;
    *req.mutable_profile() = profile;
    v1::DeviceProfile resp;
    return Call(&Stub::RegisterDevice, req, &resp);
  }
  absl::StatusOr<v1::DeviceProfile> GetDevice(const std::string& name) {
    v1::GetDeviceRequest req;
    req.set_name(name);
    v1::DeviceProfile resp;
    HAPI_RETURN_IF_ERROR(Call(&Stub::GetDevice, req, &resp));
    return resp;
  }
  std::vector<std::string> DeviceNames() {
    v1::ListDevicesResponse resp;
    EXPECT_OK(Call(&Stub::ListDevices, v1::ListDevicesRequest(), &resp));
    std::vector<std::string> names;
    for (const auto& d : resp.devices()) names.push_back(d.name());
    return names;
  }
  absl::Status DeleteDevice(const std::string& name) {
    v1::DeleteDeviceRequest req;
    req.set_name(name);
    v1::DeleteResponse resp;
    return Call(&Stub::DeleteDevice, req, &resp);
  }
  absl::StatusOr<v1::Job> Create(const v1::CreateVariantRequest& req) {
    v1::Job job;
    HAPI_RETURN_IF_ERROR(Call(&Stub::CreateVariant, req, &job));
    return job;
  }
  absl::StatusOr<v1::Job> GetJob(const std::string& id) {
    v1::GetJobRequest req;
    req.set_id(id);
    v1::Job job;
    HAPI_RETURN_IF_ERROR(Call(&Stub::GetJob, req, &job));
    return job;
  }
  absl::Status CancelJob(const std::string& id) {
    v1::CancelJobRequest req;
    req.set_id(id);
    v1::Job job;
    return Call(&Stub::CancelJob, req, &job);
  }
  v1::Job PollJob(const std::string& id, const std::function<bool(const v1::Job&)>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
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
  absl::StatusOr<v1::VariantManifest> GetVariant(const std::string& id) {
    v1::GetVariantRequest req;
    req.set_id(id);
    v1::VariantManifest v;
    HAPI_RETURN_IF_ERROR(Call(&Stub::GetVariant, req, &v));
    return v;
  }
  absl::Status DeleteVariant(const std::string& id) {
    v1::DeleteVariantRequest req;
    req.set_id(id);
    v1::DeleteResponse resp;
    return Call(&Stub::DeleteVariant, req, &resp);
  }
  // Creates a variant and waits for it; the job must succeed.
  v1::VariantManifest MakeVariant(const v1::CreateVariantRequest& req) {
    absl::StatusOr<v1::Job> job = Create(req);
    EXPECT_OK(job.status());
    if (!job.ok()) return v1::VariantManifest();
    v1::Job done = PollJob(job->id(), Finished);
    EXPECT_EQ(done.state(), v1::SUCCEEDED) << Describe(done);
    absl::StatusOr<v1::VariantManifest> v = GetVariant(done.variant());
    EXPECT_OK(v.status());
    return v.ok() ? *v : v1::VariantManifest();
  }

  ScopedTempDir tmp_;
  std::string repo_;
  RepositoryLayout layout_{""};
  v1::ModelManifest manifest_;
  std::unique_ptr<OptimizerProcess> optimizer_;
  std::unique_ptr<Stub> stub_;
};

TEST_F(OptimizerStateTest, DeletingADeviceInUseIsRefusedNamingWhatUsesIt) {
  Start();
  ASSERT_OK(Register(Profile(kDevice)));
  ASSERT_EQ(MakeVariant(Request(kDevice, 2.5, "v-alpha")).id(), "v-alpha");
  ASSERT_EQ(MakeVariant(Request(kDevice, 3.0, "v-beta")).id(), "v-beta");
  EXPECT_THAT(DeleteDevice(kDevice),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("'dev'"), HasSubstr("v-alpha"), HasSubstr("v-beta"),
                             HasSubstr("delete those variants"))));
  // Nothing changed: the row, the file the server loads, the variants.
  ASSERT_OK(GetDevice(kDevice).status());
  EXPECT_TRUE(fs::exists(layout_.DeviceProfile(kDevice)));
  ASSERT_OK(GetVariant("v-alpha").status());

  // A running job, and one queued behind it, hold their device too.
  ASSERT_OK(Register(Profile("busy", 2.0)));
  ASSERT_OK_AND_ASSIGN(v1::Job running, Create(SlowRequest("busy")));
  PollJob(running.id(), [](const v1::Job& j) { return j.state() == v1::RUNNING; });
  ASSERT_OK_AND_ASSIGN(v1::Job queued, Create(Request("busy", 5.0)));
  EXPECT_THAT(DeleteDevice("busy"),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr(running.id()), HasSubstr(queued.id()),
                             HasSubstr("cancel those jobs"), Not(HasSubstr("v-")))));
  ASSERT_OK(GetDevice("busy").status());
  EXPECT_TRUE(fs::exists(layout_.DeviceProfile("busy")));

  // Cancelled, they no longer do. A job's end reaches the state database a
  // moment after GetJob shows it, hence the retries.
  ASSERT_OK(CancelJob(queued.id()));
  ASSERT_OK(CancelJob(running.id()));
  PollJob(running.id(), Finished);
  absl::Status deleted = DeleteDevice("busy");
  for (int i = 0; i < 100 && absl::IsFailedPrecondition(deleted); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    deleted = DeleteDevice("busy");
  }
  ASSERT_OK(deleted);
  EXPECT_FALSE(fs::exists(layout_.DeviceDir("busy")));

  // Nor do deleted variants.
  ASSERT_OK(DeleteVariant("v-alpha"));
  EXPECT_THAT(DeleteDevice(kDevice),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("v-beta"), Not(HasSubstr("v-alpha")))));
  ASSERT_OK(DeleteVariant("v-beta"));
  ASSERT_OK(DeleteDevice(kDevice));
  EXPECT_THAT(DeviceNames(), IsEmpty());
  EXPECT_FALSE(fs::exists(layout_.DeviceDir(kDevice)));
}

TEST_F(OptimizerStateTest, RegisterDeviceRefusesNonsenseNumbersNamingTheField) {
  Start();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  struct Spoiled {
    std::string field;  // what the message must name
    std::function<void(v1::DeviceProfile*)> spoil;
  };
  const std::vector<Spoiled> cases = {
      {"intra_op_threads", [](v1::DeviceProfile* p) { p->set_intra_op_threads(-4); }},
      {"intra_op_threads", [](v1::DeviceProfile* p) { p->set_intra_op_threads(1 << 20); }},
      {"batch_size is 0",
       [](v1::DeviceProfile* p) {
         *p->add_batches() = p->batches(0);
         p->mutable_batches(1)->set_batch_size(0);
       }},
      {"batch_size is -3",
       [](v1::DeviceProfile* p) {
         *p->add_batches() = p->batches(0);
         p->mutable_batches(1)->set_batch_size(-3);
       }},
      {"batch_size 1 fp32 has more than one table",
       [](v1::DeviceProfile* p) { *p->add_batches() = p->batches(0); }},
      {"measured.iterations",
       [](v1::DeviceProfile* p) { p->mutable_measured()->set_iterations(-1); }},
      {"measured.warmup_iterations",
       [](v1::DeviceProfile* p) { p->mutable_measured()->set_warmup_iterations(-5); }},
      {"scaled.factor", [](v1::DeviceProfile* p) { p->mutable_scaled()->set_factor(-2); }},
      {"scaled.factor", [&](v1::DeviceProfile* p) { p->mutable_scaled()->set_factor(nan); }},
      {"analytic.macs_per_second",
       [](v1::DeviceProfile* p) { p->mutable_analytic()->set_macs_per_second(0); }},
      {"analytic.per_layer_overhead_s",
       [&](v1::DeviceProfile* p) {
         p->mutable_analytic()->set_macs_per_second(1e9);
         p->mutable_analytic()->set_per_layer_overhead_s(inf);
       }},
      {"mean_s of stage 2",
       [](v1::DeviceProfile* p) { p->mutable_batches(0)->mutable_stages(2)->set_mean_s(-1e-3); }},
      {"p95_s of exit 0",
       [&](v1::DeviceProfile* p) { p->mutable_batches(0)->mutable_exits(0)->set_p95_s(nan); }},
      {"median_s of overhead",
       [&](v1::DeviceProfile* p) {
         p->mutable_batches(0)->mutable_overhead()->set_median_s(-inf);
       }},
  };
  for (const Spoiled& c : cases) {
    v1::DeviceProfile p = Profile(kDevice);
    c.spoil(&p);
    EXPECT_THAT(Register(p), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.field)))
        << p.ShortDebugString();
  }
  EXPECT_THAT(DeviceNames(), IsEmpty());
  EXPECT_FALSE(fs::exists(layout_.DeviceDir(kDevice)));
  // Threads not recorded (0) and a sane source are fine.
  v1::DeviceProfile unrecorded = Profile(kDevice);
  unrecorded.set_intra_op_threads(0);
  unrecorded.mutable_scaled()->set_factor(2);
  ASSERT_OK(Register(unrecorded));
}

TEST_F(OptimizerStateTest, RestartCleansDeviceDebrisAndRegistersCompleteProfiles) {
  Start();
  ASSERT_OK(Register(Profile(kDevice)));
  ASSERT_OK(Register(Profile("remeasured")));
  Stop();

  // What a kill -9 during RegisterDevice leaves: a directory created with
  // nothing written yet, ...
  ASSERT_OK(MakeDirectories(layout_.DeviceDir("empty")));
  // ... one holding only WriteFileAtomically's temporary file, ...
  ASSERT_OK(MakeDirectories(layout_.DeviceDir("half")));
  hapi::testing::WriteBytes(layout_.DeviceDir("half") + "/.tmp-profile.pbtxt-123-456",
                            "name: \"ha");
  // ... such a file beside a registered profile, ...
  hapi::testing::WriteBytes(layout_.DeviceDir(kDevice) + "/.tmp-profile.pbtxt-123-789", "name:");
  // ... a complete profile whose row was never written, ...
  const v1::DeviceProfile late = Profile("late", 1.5);
  ASSERT_OK(MakeDirectories(layout_.DeviceDir("late")));
  ASSERT_OK(WriteTextProtoAtomically(layout_.DeviceProfile("late"), late));
  // ... and an overwrite whose row was never replaced.
  v1::DeviceProfile remeasured = Profile("remeasured", 2.0);
  remeasured.set_description("re-measured");
  ASSERT_OK(WriteTextProtoAtomically(layout_.DeviceProfile("remeasured"), remeasured));
  // Not a crash of the optimizer's (it validates before it writes): profiles
  // that do not fit their model or name another device are left alone,
  // unregistered.
  v1::DeviceProfile misfit = Profile("misfit");
  misfit.set_model_macs(1);
  ASSERT_OK(MakeDirectories(layout_.DeviceDir("misfit")));
  ASSERT_OK(WriteTextProtoAtomically(layout_.DeviceProfile("misfit"), misfit));
  ASSERT_OK(MakeDirectories(layout_.DeviceDir("renamed")));
  ASSERT_OK(WriteTextProtoAtomically(layout_.DeviceProfile("renamed"), Profile("someone-else")));
  // A staging name directly under devices/ is debris whatever made it.
  ASSERT_OK(MakeDirectories(layout_.DeviceDir(".tmp-stray-1-2")));

  Start();
  EXPECT_THAT(DeviceNames(), ElementsAre(kDevice, "late", "remeasured"));
  ASSERT_OK_AND_ASSIGN(v1::DeviceProfile got, GetDevice("late"));
  EXPECT_TRUE(MessageDifferencer::Equals(got, late)) << got.DebugString();
  ASSERT_OK_AND_ASSIGN(got, GetDevice("remeasured"));
  EXPECT_TRUE(MessageDifferencer::Equals(got, remeasured)) << got.DebugString();
  EXPECT_THAT(ListDir(layout_.DevicesDir()),
              UnorderedElementsAre(kDevice, "late", "remeasured", "misfit", "renamed"));
  EXPECT_THAT(ListDir(layout_.DeviceDir(kDevice)), ElementsAre(kProfileFile));
  EXPECT_THAT(ListDir(layout_.DeviceDir("misfit")), ElementsAre(kProfileFile));
  // The registered profile works.
  EXPECT_EQ(MakeVariant(Request("late", 5.0)).device(), "late");
}

TEST_F(OptimizerStateTest, RestartFinishesAJobWhoseVariantWasPublishedBeforeTheCrash) {
  Start();
  ASSERT_OK(Register(Profile(kDevice)));
  const v1::VariantManifest kept = MakeVariant(Request(kDevice, 2.5, "kept"));
  ASSERT_EQ(kept.id(), "kept");
  Stop();

  // The window: the job's variant directory was renamed into place, and the
  // process died before CommitVariant indexed it and finished the job in the
  // state database. Beside it, a job killed while still searching.
  v1::Job publishing = UnfinishedJob("job-publishing", kDevice, v1::RUNNING);
  publishing.set_phase("writing");
  publishing.set_percent(99);
  const v1::Job searching = UnfinishedJob("job-searching", kDevice, v1::RUNNING);
  {
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<StateStore> store, StateStore::Open(StatePath()));
    ASSERT_OK(store->PutJob(publishing, Request(kDevice, 2.5)));
    ASSERT_OK(store->PutJob(searching, Request(kDevice, 2.5)));
  }
  v1::VariantManifest published = kept;
  published.set_id("published");
  published.set_job_id(publishing.id());
  ASSERT_OK(MakeDirectories(layout_.VariantDir("published")));
  ASSERT_OK(WriteTextProtoAtomically(layout_.VariantManifest("published"), published));
  // A variant naming a job it cannot be the result of (another device) is
  // indexed, as any published variant, but finishes no job.
  v1::VariantManifest stray = kept;
  stray.set_id("stray");
  stray.set_device("elsewhere");
  stray.set_job_id(searching.id());
  ASSERT_OK(MakeDirectories(layout_.VariantDir("stray")));
  ASSERT_OK(WriteTextProtoAtomically(layout_.VariantManifest("stray"), stray));

  Start();
  ASSERT_OK_AND_ASSIGN(v1::Job finished, GetJob(publishing.id()));
  EXPECT_EQ(finished.state(), v1::SUCCEEDED) << Describe(finished);
  EXPECT_EQ(finished.variant(), "published");
  EXPECT_EQ(finished.percent(), 100);
  EXPECT_EQ(finished.designs_evaluated(), kept.search().designs_evaluated());
  EXPECT_THAT(finished.error(), IsEmpty());
  EXPECT_EQ(finished.error_code(), 0);
  ASSERT_OK_AND_ASSIGN(v1::VariantManifest v, GetVariant("published"));
  EXPECT_TRUE(MessageDifferencer::Equals(v, published)) << v.DebugString();

  ASSERT_OK_AND_ASSIGN(v1::Job failed, GetJob(searching.id()));
  EXPECT_EQ(failed.state(), v1::FAILED) << Describe(failed);
  EXPECT_THAT(failed.error(), HasSubstr("stopped"));
  EXPECT_THAT(failed.variant(), IsEmpty());
  ASSERT_OK(GetVariant("stray").status());
}

}  // namespace
}  // namespace hapi
