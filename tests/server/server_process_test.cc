// The real hapi-server binary: started on the fixture's repository, health
// checked over grpc.health.v1 (by hand: Debian ships no generated stub),
// classified through, scraped over plain HTTP, and stopped with SIGTERM.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/files.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/server/server_fixture.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

#ifndef HAPI_SERVER_BINARY
#error "HAPI_SERVER_BINARY must name the hapi-server executable"
#endif

extern char** environ;

namespace hapi {
namespace testing {
namespace {

using ::testing::HasSubstr;

// GET `path` over HTTP/1.0 (the server closes the connection after the
// answer). Empty on any failure.
std::string HttpGet(int port, const std::string& path) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1:", port, "\r\n\r\n");
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0) out.append(buffer, n);
    }
  }
  ::close(fd);
  return out;
}

// grpc.health.v1.Health/Check. HealthCheckRequest{service} is field 1
// (string); HealthCheckResponse{status} is field 1 (enum, SERVING = 1).
std::optional<int> HealthStatus(grpc::Channel* channel, const std::string& service) {
  std::string request;
  if (!service.empty()) {
    request.push_back(0x0a);
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::GenericStub stub(channel->shared_from_this());
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) return std::nullopt;
  std::vector<grpc::Slice> slices;
  if (!response_buffer.Dump(&slices).ok()) return std::nullopt;
  std::string bytes;
  for (const grpc::Slice& s : slices)
    bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  if (bytes.empty()) return 0;  // UNKNOWN: the default value is not sent
  if (bytes.size() == 2 && bytes[0] == 0x08) return static_cast<int>(bytes[1]);
  ADD_FAILURE() << "unexpected HealthCheckResponse bytes, " << bytes.size() << " long";
  return std::nullopt;
}

constexpr int kServing = 1;

class ServerProcess {
 public:
  // hapi-server by default; `binary` another server binary taking --repository,
  // --listen and --metrics_address (hapi-optimizer).
  explicit ServerProcess(std::vector<std::string> flags, std::string binary = HAPI_SERVER_BINARY) {
    log_ = absl::StrCat(dir_.path(), "/server.log");
    grpc_port_ = FreePort();
    metrics_port_ = FreePort();
    std::vector<std::string> args = {
        binary,
        absl::StrCat("--repository=", Fixture().repository),
        absl::StrCat("--listen=127.0.0.1:", grpc_port_),
        absl::StrCat("--metrics_address=127.0.0.1:", metrics_port_),
    };
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int err = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (err != 0) {
      ADD_FAILURE() << "posix_spawn " << argv[0] << ": " << std::strerror(err);
      pid_ = -1;
    }
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", grpc_port_),
                                   grpc::InsecureChannelCredentials());
  }
  ~ServerProcess() {
    if (pid_ > 0) {  // a failed test: do not leave it running
      ::kill(pid_, SIGKILL);
      int status;
      ::waitpid(pid_, &status, 0);
    }
  }

  // Waits until the process exits; its wait status, or nullopt after `timeout`.
  std::optional<int> Wait(absl::Duration timeout) {
    const absl::Time give_up = absl::Now() + timeout;
    while (pid_ > 0) {
      int status = 0;
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return status;
      }
      if (absl::Now() > give_up) return std::nullopt;
      absl::SleepFor(absl::Milliseconds(20));
    }
    return std::nullopt;
  }
  bool Running() {
    if (pid_ <= 0) return false;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      exit_status_ = status;
      return false;
    }
    return true;
  }
  // Polls the health service until SERVING; false when the process died or
  // it took too long.
  bool WaitServing(absl::Duration timeout) {
    const absl::Time give_up = absl::Now() + timeout;
    while (absl::Now() < give_up && Running()) {
      std::optional<int> s = HealthStatus(channel_.get(), "");
      if (s == kServing) return true;
      absl::SleepFor(absl::Milliseconds(100));
    }
    return false;
  }
  void Signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }
  std::string Log() const { return ReadBytes(log_); }

  grpc::Channel* channel() { return channel_.get(); }
  std::unique_ptr<v1::Inference::Stub> Stub() { return v1::Inference::NewStub(channel_); }
  int metrics_port() const { return metrics_port_; }
  int grpc_port() const { return grpc_port_; }
  std::optional<int> exit_status() const { return exit_status_; }

 private:
  ScopedTempDir dir_;
  std::string log_;
  int grpc_port_ = 0;
  int metrics_port_ = 0;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST(ServerProcessTest, ServesHealthMetricsAndStopsCleanlyOnSigterm) {
  const ServerFixture& f = Fixture();
  ServerProcess server({"--variant=v1"});
  ASSERT_TRUE(server.WaitServing(absl::Seconds(60))) << server.Log();
  EXPECT_EQ(HealthStatus(server.channel(), "hapi.v1.Inference"), kServing);

  auto stub = server.Stub();
  for (int i = 0; i < 5; ++i) {
    v1::ClassifyResponse r;
    grpc::Status st = Classify(*stub, RawRequest(f.image(i)), &r);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(r.variant(), "v1");
    EXPECT_EQ(r.label(), Expected("v1", i).label);
    EXPECT_EQ(r.exit().exit_index(), Expected("v1", i).exit_index);
  }

  const std::string metrics = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("200 OK"));
  EXPECT_THAT(metrics, HasSubstr("hapi_variant_info{"));
  EXPECT_THAT(metrics, HasSubstr("variant=\"v1\""));
  EXPECT_THAT(metrics, HasSubstr("hapi_exits_total{"));
  EXPECT_THAT(metrics, HasSubstr("hapi_requests_total{code=\"OK\",variant=\"v1\"} 5"));

  const absl::Time stop = absl::Now();
  server.Signal(SIGTERM);
  std::optional<int> status = server.Wait(absl::Seconds(30));
  ASSERT_TRUE(status.has_value()) << "still running 30 s after SIGTERM\n" << server.Log();
  // Shutdown is prompt (the metrics HTTP server takes ~1-2 s of it).
  EXPECT_LT(absl::Now() - stop, absl::Seconds(10));
  EXPECT_TRUE(WIFEXITED(*status)) << "wait status " << *status << "\n" << server.Log();
  EXPECT_EQ(WEXITSTATUS(*status), 0) << server.Log();
}

TEST(ServerProcessTest, DeviceModeServesAndSwapsInTheNewestVariant) {
  const ServerFixture& f = Fixture();
  std::filesystem::remove_all(f.repository + "/variants/v3");  // from an earlier repetition
  ServerProcess server({"--device=dev", "--poll_seconds=1"});
  ASSERT_TRUE(server.WaitServing(absl::Seconds(60))) << server.Log();
  auto stub = server.Stub();
  auto serving = [&] {
    grpc::ClientContext ctx;
    v1::ServingStatus s;
    grpc::Status st = stub->GetServingStatus(&ctx, v1::ServingStatusRequest(), &s);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return s.variant();
  };
  // v1 and v2 were created at the same time: the tie goes to the larger id.
  EXPECT_EQ(serving(), "v2");

  v1::VariantManifest newer = f.Variant("v1");
  newer.set_id("v3");
  newer.set_created_at("2030-01-01T00:00:00Z");
  ASSERT_OK(MakeDirectories(f.repository + "/variants/v3"));
  ASSERT_OK(WriteTextProtoAtomically(f.repository + "/variants/v3/variant.pbtxt", newer));
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (serving() != "v3" && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(serving(), "v3") << server.Log();
  v1::ClassifyResponse r;
  grpc::Status st = Classify(*stub, RawRequest(f.image(0)), &r);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(r.variant(), "v3");

  server.Signal(SIGTERM);
  std::optional<int> status = server.Wait(absl::Seconds(30));
  ASSERT_TRUE(status.has_value()) << server.Log();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << server.Log();
}

TEST(ServerProcessTest, UnknownVariantExitsWithAnError) {
  ServerProcess server({"--variant=nope"});
  std::optional<int> status = server.Wait(absl::Seconds(60));
  ASSERT_TRUE(status.has_value()) << server.Log();
  EXPECT_TRUE(WIFEXITED(*status)) << server.Log();
  EXPECT_EQ(WEXITSTATUS(*status), 1) << server.Log();
  EXPECT_THAT(server.Log(), HasSubstr("nope"));
}

// The closed loop across real processes: hapi-server (its live monitor with
// --loop=repair) sends the shadowed requests to hapi-optimizer, which
// re-plans on them; the server swaps the new variant in.
TEST(ServerProcessTest, LiveLoopReplansThroughTheOptimizerProcessAfterAShift) {
  const ServerFixture& f = Fixture();
  WriteCalibrationTables();
  ServerProcess optimizer({"--gnuplot=", "--profiler="}, HAPI_OPTIMIZER_BINARY);
  ASSERT_TRUE(optimizer.WaitServing(absl::Seconds(60))) << optimizer.Log();
  ServerProcess server({"--variant=v1", "--monitor_fraction=1", "--monitor_cpu_share=1",
                        "--monitor_window=400", "--drift_window=100", "--loop=repair",
                        absl::StrCat("--optimizer=127.0.0.1:", optimizer.grpc_port()),
                        "--loop_min_samples=100", "--loop_cooldown_s=0"});
  ASSERT_TRUE(server.WaitServing(absl::Seconds(60))) << server.Log();
  auto stub = server.Stub();
  auto status = [&] {
    grpc::ClientContext ctx;
    v1::ServingStatus s;
    EXPECT_TRUE(stub->GetServingStatus(&ctx, {}, &s).ok());
    return s;
  };
  for (int i = 0; i < 200; ++i) {
    v1::ClassifyResponse r;
    ASSERT_TRUE(Classify(*stub, RawRequest(f.image(i % f.num_images)), &r).ok());
  }
  EXPECT_EQ(status().monitor().drift_alarms(), 0) << "clean traffic of the reference's images";
  // Shifted traffic until the loop has swapped (or 120 s).
  v1::ServingStatus s = status();
  const absl::Time give_up = absl::Now() + absl::Seconds(120);
  for (int i = 0; s.variant() == "v1" && absl::Now() < give_up; ++i) {
    const std::vector<uint8_t> shifted = ShiftedImage(i);
    v1::ClassifyResponse r;
    ASSERT_TRUE(Classify(*stub, RawRequest(shifted.data()), &r).ok());
    if (i % 20 == 0) s = status();
  }
  ASSERT_NE(s.variant(), "v1") << s.monitor().ShortDebugString() << "\n"
                               << server.Log() << optimizer.Log();
  // The swap is recorded a moment after it takes effect.
  for (const absl::Time until = absl::Now() + absl::Seconds(10);
       s.monitor().decisions_size() < 2 && absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(20));
    s = status();
  }
  std::vector<std::string> actions;
  for (const v1::LoopDecision& d : s.monitor().decisions()) {
    EXPECT_EQ(d.reason(), "drift") << d.ShortDebugString();
    actions.push_back(d.action());
  }
  EXPECT_THAT(actions, ::testing::ElementsAre("replan", "swap"));
  v1::VariantManifest planned;
  ASSERT_OK(ReadTextProto(absl::StrCat(f.repository, "/variants/", s.variant(), "/variant.pbtxt"),
                          &planned));
  EXPECT_EQ(planned.live_plan().from_variant(), "v1");
  EXPECT_GE(planned.live_plan().samples(), 100);
  const std::string metrics = HttpGet(server.metrics_port(), "/metrics");
  EXPECT_THAT(metrics, HasSubstr("hapi_loop_decisions_total{action=\"swap\",reason=\"drift\","
                                 "variant=\"v1\"} 1"));
  EXPECT_THAT(server.Log(), HasSubstr("live monitor: swap (drift) variant v1 -> "));
}
}  // namespace
}  // namespace testing
}  // namespace hapi
