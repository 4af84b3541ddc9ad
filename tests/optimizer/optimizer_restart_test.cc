// The real hapi-optimizer process: killed with SIGKILL in the middle of a
// search and restarted on the same state database and repository, then
// stopped with SIGTERM. Durable state must survive, interrupted work must be
// failed (not left RUNNING forever), half-written directories must go.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "core/repository_layout.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "hapi/v1/optimizer.grpc.pb.h"
#include "tests/optimizer/synthetic_model.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

extern char** environ;

namespace hapi {
namespace {

namespace fs = std::filesystem;
using ::google::protobuf::util::MessageDifferencer;
using ::hapi::testing::FreePort;
using ::hapi::testing::ScopedTempDir;
using ::testing::HasSubstr;
using ::testing::SizeIs;

constexpr char kBinary[] = HAPI_OPTIMIZER_BINARY;
constexpr char kModel[] = "synth";
constexpr char kDevice[] = "dev";

bool CanConnect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

std::string Tail(const std::string& path, size_t bytes = 4000) {
  std::string all = hapi::testing::ReadBytes(path);
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

// One hapi-optimizer child process with its own log file.
class OptimizerChild {
 public:
  OptimizerChild(const std::string& repository, const std::string& state, const std::string& log)
      : repository_(repository), state_(state), log_(log) {}
  ~OptimizerChild() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status;
      ::waitpid(pid_, &status, 0);
    }
  }

  // Starts the binary on a fresh port and waits until it answers RPCs.
  void Start() {
    port_ = FreePort();
    ASSERT_GT(port_, 0);
    std::vector<std::string> args = {
        kBinary,
        absl::StrCat("--listen=127.0.0.1:", port_),
        absl::StrCat("--repository=", repository_),
        absl::StrCat("--state=", state_),
        "--metrics_address=",
        "--gnuplot=",
        "--threshold_grid=32",
        "--workers=1",
    };
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    int rc = ::posix_spawn(&pid_, kBinary, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ASSERT_EQ(rc, 0) << "cannot start " << kBinary << ": " << std::strerror(rc);

    // Wait for the port with plain TCP connects first: a gRPC channel whose
    // first attempt is refused backs off for seconds before trying again.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    bool listening = false;
    while (!listening && std::chrono::steady_clock::now() < deadline) {
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        FAIL() << "hapi-optimizer exited during start-up (status " << status << "):\n"
               << Tail(log_);
      }
      listening = CanConnect(port_);
      if (!listening) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (listening) {
      channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_),
                                     grpc::InsecureChannelCredentials());
      stub_ = v1::Optimizer::NewStub(channel_);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      ctx.set_wait_for_ready(true);
      v1::ListDevicesResponse resp;
      grpc::Status st = stub_->ListDevices(&ctx, v1::ListDevicesRequest(), &resp);
      if (st.ok()) return;
      FAIL() << "hapi-optimizer does not answer on port " << port_ << ": " << st.error_message()
             << "\n"
             << Tail(log_);
    }
    FAIL() << "hapi-optimizer did not start serving on port " << port_ << ":\n" << Tail(log_);
  }

  // Sends `signal` and reaps the process; returns the wait status.
  int Stop(int signal, std::chrono::seconds timeout = std::chrono::seconds(15)) {
    if (pid_ <= 0) return -1;
    // Close our connection first: a client with no call in flight does not
    // read the server's GOAWAY, and the server's graceful shutdown would
    // wait its full grace period for the connection to go.
    stub_.reset();
    channel_.reset();
    ::kill(pid_, signal);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int status = -1;
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return status;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "hapi-optimizer did not exit after signal " << signal << ":\n" << Tail(log_);
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

  v1::Optimizer::Stub* stub() { return stub_.get(); }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  const std::string& log() const { return log_; }

 private:
  const std::string repository_, state_, log_;
  pid_t pid_ = -1;
  int port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Optimizer::Stub> stub_;
};

std::unique_ptr<grpc::ClientContext> Ctx() {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  return ctx;
}

std::string Describe(const v1::Job& j) {
  return absl::StrCat(j.id(), " ", v1::JobState_Name(j.state()), " ", j.phase(), " ", j.percent(),
                      "% ", j.error());
}

// grpc.health.v1.Health/Check through the generic stub: the request is
// HealthCheckRequest{service = 1}; the reply HealthCheckResponse{status = 1}
// with SERVING = 1.
grpc::Status HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
                         int* serving_status) {
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&](grpc::Status s) { done.set_value(std::move(s)); });
  grpc::Status status = done.get_future().get();
  *serving_status = -1;
  if (status.ok()) {
    std::vector<grpc::Slice> slices;
    (void)response_buffer.Dump(&slices);
    std::string bytes;
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    // Field 1 varint; an empty message means status 0 (UNKNOWN).
    *serving_status = bytes.size() >= 2 && bytes[0] == 0x08 ? bytes[1] : 0;
  }
  return status;
}

class OptimizerRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = tmp_.Join("repository");
    ASSERT_OK(hapi::testing::WriteSyntheticModel(repo_, kModel, 6, 2000, /*seed=*/42));
    manifest_ = hapi::testing::MakeSyntheticManifest(kModel, 6);
  }

  std::unique_ptr<OptimizerChild> Launch() {
    auto p = std::make_unique<OptimizerChild>(
        repo_, tmp_.Join("state.db"), tmp_.Join(absl::StrCat("optimizer-", ++launches_, ".log")));
    p->Start();
    return p;
  }

  static v1::CreateVariantRequest FastRequest() {
    v1::CreateVariantRequest req;
    req.set_model(kModel);
    req.set_device(kDevice);
    req.mutable_sla()->set_latency_budget_ms(2.5);
    return req;
  }
  // Per-exit exhaustive search over 5 candidate exits and 32 thresholds:
  // 33^5 ~ 3.9e7 designs (under the 5e7 cap), each scored over 2000 samples:
  // many minutes of work.
  static v1::CreateVariantRequest SlowRequest() {
    v1::CreateVariantRequest req = FastRequest();
    req.set_algorithm("exhaustive");
    req.set_per_exit_thresholds(true);
    return req;
  }

  v1::Job Create(OptimizerChild& p, const v1::CreateVariantRequest& req) {
    v1::Job job;
    grpc::Status st = p.stub()->CreateVariant(Ctx().get(), req, &job);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return job;
  }
  v1::Job GetJob(OptimizerChild& p, const std::string& id) {
    v1::GetJobRequest req;
    req.set_id(id);
    v1::Job job;
    grpc::Status st = p.stub()->GetJob(Ctx().get(), req, &job);
    EXPECT_TRUE(st.ok()) << id << ": " << st.error_message();
    return job;
  }
  v1::Job PollJob(OptimizerChild& p, const std::string& id,
                  const std::function<bool(const v1::Job&)>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    v1::Job job;
    while (std::chrono::steady_clock::now() < deadline) {
      job = GetJob(p, id);
      if (done(job) || job.id().empty()) return job;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "timed out: " << Describe(job) << "\n" << Tail(p.log());
    return job;
  }
  std::vector<std::string> VariantDirEntries() {
    return hapi::testing::ListDir(Layout().VariantsDir());
  }

  RepositoryLayout Layout() const { return RepositoryLayout(repo_); }

  ScopedTempDir tmp_;
  std::string repo_;
  v1::ModelManifest manifest_;
  int launches_ = 0;
};

TEST_F(OptimizerRestartTest, SurvivesKillNineDuringASearch) {
  std::unique_ptr<OptimizerChild> first = Launch();
  ASSERT_FALSE(HasFatalFailure());
  int serving = -1;
  ASSERT_TRUE(HealthCheck(first->channel(), "", &serving).ok());
  EXPECT_EQ(serving, 1);
  ASSERT_TRUE(HealthCheck(first->channel(), "hapi.v1.Optimizer", &serving).ok());
  EXPECT_EQ(serving, 1);

  // A device, then a finished variant.
  v1::RegisterDeviceRequest reg;
  *reg.mutable_profile() = hapi::testing::MakeSyntheticProfile(kDevice, manifest_);
  v1::DeviceProfile registered;
  grpc::Status st = first->stub()->RegisterDevice(Ctx().get(), reg, &registered);
  ASSERT_TRUE(st.ok()) << st.error_message();
  v1::Job fast = Create(*first, FastRequest());
  ASSERT_EQ(fast.state(), v1::QUEUED);
  fast = PollJob(*first, fast.id(), [](const v1::Job& j) {
    return j.state() == v1::SUCCEEDED || j.state() == v1::FAILED;
  });
  ASSERT_EQ(fast.state(), v1::SUCCEEDED) << Describe(fast);
  v1::GetVariantRequest get_variant;
  get_variant.set_id(fast.variant());
  v1::VariantManifest variant;
  st = first->stub()->GetVariant(Ctx().get(), get_variant, &variant);
  ASSERT_TRUE(st.ok()) << st.error_message();

  // A long search, caught in the middle, and one queued behind it.
  v1::Job slow = Create(*first, SlowRequest());
  slow = PollJob(*first, slow.id(), [](const v1::Job& j) {
    return j.state() == v1::RUNNING && j.phase() == "searching" && j.percent() > 5;
  });
  ASSERT_EQ(slow.state(), v1::RUNNING) << Describe(slow);
  v1::Job queued = Create(*first, FastRequest());
  EXPECT_EQ(GetJob(*first, queued.id()).state(), v1::QUEUED);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(GetJob(*first, slow.id()).state(), v1::RUNNING) << "the slow job must still be running";

  const int status = first->Stop(SIGKILL);
  ASSERT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(WTERMSIG(status), SIGKILL);
  // What a crash while publishing would leave: a staging directory.
  const std::string staging =
      Layout().VariantDir(absl::StrCat(".tmp-", kDevice, "-v-crashed-123-456"));
  ASSERT_OK(MakeDirectories(staging));
  ASSERT_OK(WriteFileAtomically(absl::StrCat(staging, "/", kVariantFile), "id: \"x\""));

  std::unique_ptr<OptimizerChild> second = Launch();
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(HealthCheck(second->channel(), "hapi.v1.Optimizer", &serving).ok());
  EXPECT_EQ(serving, 1);

  // Durable state is all there.
  v1::ListDevicesResponse devices;
  ASSERT_TRUE(second->stub()->ListDevices(Ctx().get(), v1::ListDevicesRequest(), &devices).ok());
  ASSERT_THAT(devices.devices(), SizeIs(1));
  EXPECT_TRUE(MessageDifferencer::Equals(devices.devices(0), reg.profile()));
  v1::ListVariantsResponse variants;
  ASSERT_TRUE(second->stub()->ListVariants(Ctx().get(), v1::ListVariantsRequest(), &variants).ok());
  ASSERT_THAT(variants.variants(), SizeIs(1));
  EXPECT_EQ(variants.variants(0).id(), fast.variant());
  v1::VariantManifest again;
  st = second->stub()->GetVariant(Ctx().get(), get_variant, &again);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_TRUE(MessageDifferencer::Equals(again, variant));
  EXPECT_EQ(GetJob(*second, fast.id()).state(), v1::SUCCEEDED);

  // Interrupted jobs are failed with a reason, not left RUNNING/QUEUED.
  for (const std::string& id : {slow.id(), queued.id()}) {
    v1::Job j = GetJob(*second, id);
    EXPECT_EQ(j.state(), v1::FAILED) << Describe(j);
    EXPECT_THAT(j.error(), HasSubstr("stopped")) << Describe(j);
    EXPECT_EQ(j.error_code(), static_cast<int>(grpc::StatusCode::ABORTED)) << Describe(j);
    EXPECT_TRUE(j.variant().empty());
  }
  v1::ListJobsResponse jobs;
  ASSERT_TRUE(second->stub()->ListJobs(Ctx().get(), v1::ListJobsRequest(), &jobs).ok());
  ASSERT_THAT(jobs.jobs(), SizeIs(3));
  EXPECT_EQ(jobs.jobs(0).id(), fast.id());
  EXPECT_EQ(jobs.jobs(1).id(), slow.id());
  EXPECT_EQ(jobs.jobs(2).id(), queued.id());

  // Nothing half-written survives; the published variant does.
  for (const std::string& name : VariantDirEntries()) {
    EXPECT_FALSE(absl::StartsWith(name, ".tmp-")) << name;
  }
  EXPECT_THAT(VariantDirEntries(), ::testing::ElementsAre(fast.variant()));
  EXPECT_TRUE(fs::exists(Layout().VariantManifest(fast.variant())));
  EXPECT_TRUE(fs::exists(Layout().VariantDir(fast.variant()) + "/pareto.csv"));

  // The restarted service does new work.
  v1::Job fresh = Create(*second, FastRequest());
  fresh = PollJob(*second, fresh.id(), [](const v1::Job& j) {
    return j.state() == v1::SUCCEEDED || j.state() == v1::FAILED;
  });
  EXPECT_EQ(fresh.state(), v1::SUCCEEDED) << Describe(fresh);
  EXPECT_NE(fresh.variant(), fast.variant());

  const int exit_status = second->Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << Tail(second->log());
}

TEST_F(OptimizerRestartTest, SigtermCancelsTheRunningJobAndExitsCleanly) {
  std::unique_ptr<OptimizerChild> first = Launch();
  ASSERT_FALSE(HasFatalFailure());
  v1::RegisterDeviceRequest reg;
  *reg.mutable_profile() = hapi::testing::MakeSyntheticProfile(kDevice, manifest_);
  v1::DeviceProfile registered;
  ASSERT_TRUE(first->stub()->RegisterDevice(Ctx().get(), reg, &registered).ok());
  v1::Job slow = Create(*first, SlowRequest());
  slow = PollJob(*first, slow.id(), [](const v1::Job& j) { return j.state() == v1::RUNNING; });
  ASSERT_EQ(slow.state(), v1::RUNNING);
  v1::Job queued = Create(*first, FastRequest());

  const auto start = std::chrono::steady_clock::now();
  const int status = first->Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "\n"
                                                             << Tail(first->log());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10))
      << "a running search must not delay shutdown";

  std::unique_ptr<OptimizerChild> second = Launch();
  ASSERT_FALSE(HasFatalFailure());
  v1::Job s = GetJob(*second, slow.id());
  EXPECT_EQ(s.state(), v1::CANCELLED) << Describe(s);
  v1::Job q = GetJob(*second, queued.id());
  EXPECT_EQ(q.state(), v1::FAILED) << Describe(q);
  EXPECT_TRUE(VariantDirEntries().empty());
  second->Stop(SIGTERM);
}

// A kill -9 during RegisterDevice leaves, depending on when it lands, an empty
// device directory, a temporary file, or a complete profile without its row.
TEST_F(OptimizerRestartTest, KillNineDuringRegisterDeviceLeavesNoDebris) {
  std::unique_ptr<OptimizerChild> first = Launch();
  ASSERT_FALSE(HasFatalFailure());
  v1::RegisterDeviceRequest reg;
  *reg.mutable_profile() = hapi::testing::MakeSyntheticProfile(kDevice, manifest_);
  v1::DeviceProfile registered;
  grpc::Status st = first->stub()->RegisterDevice(Ctx().get(), reg, &registered);
  ASSERT_TRUE(st.ok()) << st.error_message();
  const int status = first->Stop(SIGKILL);
  ASSERT_TRUE(WIFSIGNALED(status));

  const RepositoryLayout layout = Layout();
  ASSERT_OK(MakeDirectories(layout.DeviceDir("empty")));
  ASSERT_OK(MakeDirectories(layout.DeviceDir("half")));
  hapi::testing::WriteBytes(layout.DeviceDir("half") + "/.tmp-profile.pbtxt-77-1", "name: \"ha");
  hapi::testing::WriteBytes(layout.DeviceDir(kDevice) + "/.tmp-profile.pbtxt-77-2", "");
  const v1::DeviceProfile late = hapi::testing::MakeSyntheticProfile("late", manifest_, 1.5);
  ASSERT_OK(MakeDirectories(layout.DeviceDir("late")));
  ASSERT_OK(WriteTextProtoAtomically(layout.DeviceProfile("late"), late));

  std::unique_ptr<OptimizerChild> second = Launch();
  ASSERT_FALSE(HasFatalFailure());
  v1::ListDevicesResponse devices;
  ASSERT_TRUE(second->stub()->ListDevices(Ctx().get(), v1::ListDevicesRequest(), &devices).ok());
  ASSERT_THAT(devices.devices(), SizeIs(2));
  EXPECT_TRUE(MessageDifferencer::Equals(devices.devices(0), reg.profile()));
  EXPECT_TRUE(MessageDifferencer::Equals(devices.devices(1), late));
  EXPECT_THAT(hapi::testing::ListDir(layout.DevicesDir()), ::testing::ElementsAre(kDevice, "late"));
  EXPECT_THAT(hapi::testing::ListDir(layout.DeviceDir(kDevice)),
              ::testing::ElementsAre(kProfileFile));
  const int exit_status = second->Stop(SIGTERM);
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << Tail(second->log());
}

}  // namespace
}  // namespace hapi
