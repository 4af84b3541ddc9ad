// How hapi-client shows the live monitor (client/monitor_report.h): the block
// of `status`, and the rows of `bench --timeline`.
#include "client/monitor_report.h"

#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hapi::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

v1::LiveMonitorStatus Monitor() {
  v1::LiveMonitorStatus m;
  m.set_sample_fraction(0.02);
  m.set_samples(1234);
  m.set_skipped(5);
  m.set_window_samples(500);
  m.set_window_disagreements(12);
  m.set_disagreement_rate(0.024);
  m.set_disagreement_upper(0.0371);
  m.set_confidence(0.9);
  m.set_max_disagreement(0.05);
  m.set_drift_exit_statistic(3.2);
  m.set_drift_exit_p_value(0.41);
  m.set_drift_confidence_statistic(40.5);
  m.set_drift_confidence_p_value(2.5e-7);
  m.set_drift_alpha(0.001);
  m.set_drift_detected(true);
  m.set_drift_windows(12);
  m.set_drift_alarms(1);
  m.set_loop_mode("repair");
  return m;
}

v1::LoopDecision Decision(const std::string& action, const std::string& to,
                          const std::string& detail) {
  v1::LoopDecision d;
  d.set_time("2024-05-01T10:00:00Z");
  d.set_reason("drift");
  d.set_action(action);
  d.set_from_variant("v-old");
  d.set_to_variant(to);
  d.set_job("job-7");
  d.set_detail(detail);
  return d;
}

std::vector<std::string> Fields(const std::string& row) {
  EXPECT_EQ(row.back(), '\n');
  return absl::StrSplit(row.substr(0, row.size() - 1), ',');
}

TEST(MonitorReportTest, StatusBlockShowsWindowBoundDriftAndLastDecisions) {
  v1::LiveMonitorStatus m = Monitor();
  for (int i = 0; i < 7; ++i)
    *m.add_decisions() = Decision("alert", "", "decision " + std::to_string(i));
  *m.add_decisions() = Decision("swap", "v-new", "p=2.5e-07");
  const std::string block = DescribeLiveMonitor(m, 3);
  EXPECT_THAT(block, HasSubstr("fraction 0.02, 1234 shadowed, 5 skipped"));
  EXPECT_THAT(block, HasSubstr("500 samples, 12 disagree: rate 0.0240, upper bound 0.0371 at 90%"));
  EXPECT_THAT(block, HasSubstr("limit     0.0500: held"));
  EXPECT_THAT(block, HasSubstr("DETECTED: exit ratios p=0.41"));
  EXPECT_THAT(block, HasSubstr("first-exit confidence p=2.5e-07"));
  EXPECT_THAT(block, HasSubstr("12 windows, 1 alarms"));
  EXPECT_THAT(block, HasSubstr("loop      repair, 8 decisions"));
  // The last three, oldest first.
  EXPECT_THAT(block, Not(HasSubstr("decision 4")));
  EXPECT_THAT(block, HasSubstr("drift alert  v-old -> -  job job-7  decision 5\n"));
  EXPECT_THAT(block, HasSubstr("drift alert  v-old -> -  job job-7  decision 6\n"));
  EXPECT_THAT(
      block, HasSubstr("2024-05-01T10:00:00Z  drift swap  v-old -> v-new  job job-7  p=2.5e-07\n"));
  EXPECT_LT(block.find("decision 6"), block.find("v-new"));
}

TEST(MonitorReportTest, StatusBlockSaysWhatIsNotThereYet) {
  v1::LiveMonitorStatus m = Monitor();
  m.set_max_disagreement(-1);
  m.set_drift_windows(0);
  m.set_bound_breached(false);
  std::string block = DescribeLiveMonitor(m);
  EXPECT_THAT(block, HasSubstr("limit     none (the SLA bounds no accuracy)"));
  EXPECT_THAT(block, HasSubstr("drift     no complete window yet (alpha 0.001)"));
  m.set_max_disagreement(0.03);
  m.set_bound_breached(true);
  block = DescribeLiveMonitor(m);
  EXPECT_THAT(block, HasSubstr("limit     0.0300: BREACHED"));
}

TEST(MonitorReportTest, TimelineRowsHaveTheHeadersColumns) {
  const std::vector<std::string> header = Fields(TimelineCsvHeader());
  EXPECT_THAT(header, ElementsAre("requests_sent", "seconds", "shifted", "variant",
                                  "window_samples", "disagreement_rate", "disagreement_upper",
                                  "max_disagreement", "drift_detected", "drift_exit_p_value",
                                  "drift_confidence_p_value", "loop_decisions", "throughput_rps"));
  TimelinePoint point;
  point.requests_sent = 3000;
  point.seconds = 6.25;
  point.shifted = true;
  point.throughput = 480;

  v1::ServingStatus status;
  status.set_variant("v-old");
  *status.mutable_monitor() = Monitor();
  *status.mutable_monitor()->add_decisions() = Decision("replan", "", "");
  EXPECT_THAT(Fields(TimelineCsvRow(point, &status)),
              ElementsAre("3000", "6.250", "1", "v-old", "500", "0.024", "0.0371", "0.05", "1",
                          "0.41", "2.5e-07", "1", "480.0"));

  // Monitor off: its columns empty.
  status.clear_monitor();
  EXPECT_THAT(Fields(TimelineCsvRow(point, &status)),
              ElementsAre("3000", "6.250", "1", "v-old", "", "", "", "", "", "", "", "", "480.0"));
  // The poll failed: the server's columns empty.
  point.shifted = false;
  EXPECT_THAT(Fields(TimelineCsvRow(point, nullptr)),
              ElementsAre("3000", "6.250", "0", "", "", "", "", "", "", "", "", "", "480.0"));
  // An empty window has no rate, and no complete drift window no p-values.
  *status.mutable_monitor() = Monitor();
  status.mutable_monitor()->set_window_samples(0);
  status.mutable_monitor()->set_drift_windows(0);
  status.mutable_monitor()->set_drift_detected(false);
  EXPECT_THAT(
      Fields(TimelineCsvRow(point, &status)),
      ElementsAre("3000", "6.250", "0", "v-old", "0", "", "", "0.05", "0", "", "", "0", "480.0"));
}

}  // namespace
}  // namespace hapi::client
