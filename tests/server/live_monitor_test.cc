// The live monitor, drift test and closed loop (server/live_monitor.h), in
// the real server in-process over the fake model; the repair loop against the
// real optimizer, in-process too.
#include "server/live_monitor.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/certify.h"
#include "core/fake_model.h"
#include "core/files.h"
#include "core/live_stats.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "optimizer/optimizer_process.h"
#include "server_fixture.h"

namespace hapi::testing {
namespace {

// Writes a variant of the fixture's model beside the fixture's own.
void WriteVariant(const v1::VariantManifest& v) {
  const RepositoryLayout layout(Fixture().repository);
  ASSERT_TRUE(MakeDirectories(layout.VariantDir(v.id())).ok());
  ASSERT_TRUE(WriteTextProtoAtomically(layout.VariantManifest(v.id()), v).ok());
}

v1::ServingStatus Status(TestServer& server) {
  grpc::ClientContext ctx;
  v1::ServingStatus status;
  EXPECT_TRUE(server.stub().GetServingStatus(&ctx, {}, &status).ok());
  return status;
}

// Polls until `done(status)` or 60 s pass; the last status.
template <typename F>
v1::ServingStatus WaitFor(TestServer& server, F done) {
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  v1::ServingStatus status = Status(server);
  while (!done(status) && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
    status = Status(server);
  }
  return status;
}

void Send(TestServer& server, const uint8_t* image) {
  v1::ClassifyResponse response;
  grpc::Status st = Classify(server.stub(), RawRequest(image), &response);
  ASSERT_TRUE(st.ok()) << st.error_message();
}

// Every request shadowed, nothing skipped for lack of CPU.
LiveMonitorOptions ShadowAll() {
  LiveMonitorOptions o;
  o.fraction = 1;
  o.cpu_share = 1;
  o.shadow_queue = 100000;
  o.loop = LoopMode::kOff;
  o.loop_min_samples = 1;
  return o;
}

class LiveMonitorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { WriteCalibrationTables(); }
};

TEST_F(LiveMonitorTest, RunAllExitsGivesEveryExitsAnswer) {
  const ServerFixture& f = Fixture();
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<std::vector<ExitScores>> exits = RunAllExits(*f.model, f.Pixels(i).data());
    ASSERT_TRUE(exits.ok()) << exits.status();
    ASSERT_EQ(static_cast<int>(exits->size()), f.model->num_exits());
    for (int e = 0; e < f.model->num_exits(); ++e) {
      const std::vector<float> p = FakeProbabilities(f.model->manifest(), e, [&] {
        double sum = 0;
        for (float v : f.Pixels(i)) sum += v;
        return static_cast<float>(sum / kImagePixels);
      }());
      EXPECT_EQ((*exits)[e].label, ScoreProbabilities(p.data(), f.model->num_classes()).label);
    }
  }
}

TEST_F(LiveMonitorTest, CountsDisagreementWithTheFullNetworkAndBoundsIt) {
  const ServerFixture& f = Fixture();
  // v1's exits with thresholds so low that every sample leaves at exit 0.
  v1::VariantManifest eager = f.Variant("v1");
  eager.set_id("eager");
  eager.set_thresholds(0, 0);
  eager.set_thresholds(1, 0);
  WriteVariant(eager);
  TestServerOptions options;
  options.variant = "eager";
  options.monitor = ShadowAll();
  TestServer server(options);
  const int n = std::min(f.num_images, 150);
  int expected_disagreements = 0;
  for (int i = 0; i < n; ++i) {
    Send(server, f.image(i));
    absl::StatusOr<std::vector<ExitScores>> full = RunAllExits(*f.model, f.Pixels(i).data());
    ASSERT_TRUE(full.ok());
    expected_disagreements += (*full)[0].label != full->back().label;
  }
  ASSERT_GT(expected_disagreements, 0) << "exit 0 should get some fixture images wrong";
  v1::ServingStatus status =
      WaitFor(server, [&](const v1::ServingStatus& s) { return s.monitor().samples() >= n; });
  const v1::LiveMonitorStatus& m = status.monitor();
  EXPECT_EQ(m.samples(), n);
  EXPECT_EQ(m.skipped(), 0);
  EXPECT_EQ(m.window_samples(), n);
  EXPECT_EQ(m.window_disagreements(), expected_disagreements);
  EXPECT_DOUBLE_EQ(m.disagreement_rate(), double(expected_disagreements) / n);
  EXPECT_NEAR(m.disagreement_upper(), ClopperPearsonUpper(expected_disagreements, n, 0.9), 1e-12);
  EXPECT_EQ(m.max_disagreement(), -1);  // a latency budget only
  EXPECT_FALSE(m.bound_breached());
  EXPECT_EQ(m.loop_mode(), "off");
  // The same numbers on /metrics.
  bool found = false;
  for (const auto& family : server.registry().Collect()) {
    if (family.name != "hapi_monitor_disagreements_total") continue;
    for (const auto& metric : family.metric) {
      found = true;
      EXPECT_EQ(metric.counter.value, expected_disagreements);
    }
  }
  EXPECT_TRUE(found);
}

TEST_F(LiveMonitorTest, FlagsDriftOnShiftedTrafficOnly) {
  const ServerFixture& f = Fixture();
  TestServerOptions options;
  options.monitor = ShadowAll();
  options.monitor.fraction = 0.01;
  options.monitor.drift_window = 100;
  options.monitor.drift_alpha = 0.001;
  TestServer server(options);
  // The reference is the fixture's images themselves: clean traffic of them
  // is homogeneous with it.
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < 100; ++i) Send(server, f.image((i * 7 + round) % f.num_images));
  }
  v1::ServingStatus clean = Status(server);
  EXPECT_EQ(clean.monitor().drift_windows(), 2);
  EXPECT_EQ(clean.monitor().drift_alarms(), 0);
  EXPECT_FALSE(clean.monitor().drift_detected());
  EXPECT_GT(clean.monitor().drift_confidence_p_value(), 0.001);
  for (int i = 0; i < 100; ++i) {
    std::vector<uint8_t> shifted = ShiftedImage(i);
    Send(server, shifted.data());
  }
  v1::ServingStatus drifted = Status(server);
  EXPECT_EQ(drifted.monitor().drift_windows(), 3);
  EXPECT_EQ(drifted.monitor().drift_alarms(), 1);
  EXPECT_TRUE(drifted.monitor().drift_detected());
  EXPECT_LT(std::min(drifted.monitor().drift_exit_p_value(),
                     drifted.monitor().drift_confidence_p_value()),
            0.0005);
}

TEST_F(LiveMonitorTest, AlertsWhenTheBoundExceedsTheSlaAndSaysWhy) {
  const ServerFixture& f = Fixture();
  // v1's design under an SLA that allows no disagreement at all.
  v1::VariantManifest strict = f.Variant("v1");
  strict.set_id("strict");
  strict.mutable_sla()->set_objective(v1::MIN_LATENCY);
  strict.mutable_sla()->set_use_accuracy_drop(true);
  strict.mutable_sla()->set_max_accuracy_drop(0.001);
  WriteVariant(strict);
  TestServerOptions options;
  options.variant = "strict";
  options.monitor = ShadowAll();
  options.monitor.loop = LoopMode::kAlert;
  options.monitor.loop_min_samples = 50;
  options.monitor.cooldown = absl::Hours(1);
  TestServer server(options);
  for (int i = 0; i < 100; ++i) Send(server, f.image(i % f.num_images));
  v1::ServingStatus status =
      WaitFor(server, [](const v1::ServingStatus& s) { return s.monitor().decisions_size() > 0; });
  const v1::LiveMonitorStatus& m = status.monitor();
  EXPECT_DOUBLE_EQ(m.max_disagreement(), 0.001);
  EXPECT_TRUE(m.bound_breached());
  ASSERT_EQ(m.decisions_size(), 1);  // the cooldown holds the next
  EXPECT_EQ(m.decisions(0).reason(), "bound");
  EXPECT_EQ(m.decisions(0).action(), "alert");
  EXPECT_EQ(m.decisions(0).from_variant(), "strict");
  EXPECT_THAT(m.decisions(0).detail(), ::testing::HasSubstr("limit 0.0010"));
  EXPECT_EQ(status.variant(), "strict");  // alert only: nothing swapped
}

TEST_F(LiveMonitorTest, RepairReplansOnLiveTrafficAndSwapsTheNewVariantIn) {
  const ServerFixture& f = Fixture();
  OptimizerOptions opt;
  opt.listen = "127.0.0.1:0";
  opt.repository = f.repository;
  opt.state = absl::StrCat(f.repository, "/optimizer-live-test.db");
  opt.metrics_address = "";
  opt.gnuplot = "";
  opt.profiler = "";
  absl::StatusOr<std::unique_ptr<OptimizerProcess>> optimizer = OptimizerProcess::Create(opt);
  ASSERT_TRUE(optimizer.ok()) << optimizer.status();

  TestServerOptions options;
  options.monitor = ShadowAll();
  options.monitor.drift_window = 100;
  options.monitor.loop = LoopMode::kRepair;
  options.monitor.optimizer = absl::StrCat("127.0.0.1:", (*optimizer)->port());
  options.monitor.loop_min_samples = 100;
  options.monitor.cooldown = absl::ZeroDuration();
  TestServer server(options);
  for (int i = 0; i < 100; ++i) Send(server, f.image(i % f.num_images));
  // Shifted traffic: drift, then a re-plan on what came after it.
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> shifted = ShiftedImage(i);
    Send(server, shifted.data());
  }
  v1::ServingStatus status = WaitFor(server, [](const v1::ServingStatus& s) {
    // The swap is recorded a moment after it takes effect.
    return s.variant() != "v1" && s.monitor().decisions_size() >= 2;
  });
  ASSERT_NE(status.variant(), "v1") << status.monitor().ShortDebugString();
  EXPECT_EQ(status.variant_swaps(), 2);  // the initial load, and the repair
  std::vector<std::string> actions;
  for (const v1::LoopDecision& d : status.monitor().decisions()) {
    EXPECT_EQ(d.reason(), "drift");
    actions.push_back(d.action());
  }
  EXPECT_THAT(actions, ::testing::ElementsAre("replan", "swap"));
  EXPECT_EQ(status.monitor().decisions(1).to_variant(), status.variant());
  // The new variant says what it was planned on, and keeps the table.
  const v1::VariantManifest& planned = server.servables().current()->variant();
  EXPECT_EQ(planned.live_plan().from_variant(), "v1");
  EXPECT_EQ(planned.live_plan().reason(), "drift");
  EXPECT_GE(planned.live_plan().samples(), 100);
  const std::string table_file =
      absl::StrCat(RepositoryLayout(f.repository).VariantDir(planned.id()), "/",
                   planned.live_plan().table_file());
  absl::StatusOr<std::string> bytes = ReadFile(table_file);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_TRUE(CalibrationTable::Parse(*bytes).ok());
  // Its drift reference is that live traffic: shifted requests are at home.
  for (int i = 0; i < 200; ++i) {
    std::vector<uint8_t> shifted = ShiftedImage(i * 7);
    Send(server, shifted.data());
  }
  v1::ServingStatus after = Status(server);
  EXPECT_EQ(after.variant(), status.variant());
  EXPECT_EQ(after.monitor().drift_windows(), 2);
  EXPECT_EQ(after.monitor().drift_alarms(), 0);
}

TEST(LiveMonitorOptionsTest, RefusesOutOfRangeFlagsNamingThem) {
  LiveMonitorOptions o;
  o.fraction = 1.5;
  EXPECT_THAT(ValidateLiveMonitorOptions(o).message(), ::testing::HasSubstr("--monitor_fraction"));
  o.fraction = 0.1;
  o.loop = LoopMode::kRepair;
  EXPECT_THAT(ValidateLiveMonitorOptions(o).message(), ::testing::HasSubstr("--optimizer"));
  o.loop = LoopMode::kAlert;
  o.loop_min_samples = o.window + 1;
  EXPECT_THAT(ValidateLiveMonitorOptions(o).message(), ::testing::HasSubstr("--loop_min_samples"));
  EXPECT_FALSE(ParseLoopMode("sometimes").ok());
  EXPECT_EQ(*ParseLoopMode("repair"), LoopMode::kRepair);
}

}  // namespace
}  // namespace hapi::testing
