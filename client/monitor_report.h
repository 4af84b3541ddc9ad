// How hapi-client shows a server's live accuracy monitor and drift detector
// (ServingStatus.monitor, docs/live-monitor.md): the block `status` prints,
// and the rows of `bench --timeline`, one per poll of GetServingStatus while
// the load runs.
#pragma once

#include <cstdint>
#include <string>

#include "hapi/v1/inference.pb.h"

namespace hapi::client {

// The monitor block of `status`: sampling, the window's disagreement and its
// upper bound against the SLA's limit, the drift tests, the loop's mode and its
// `last_decisions` most recent decisions. Lines end in '\n'.
std::string DescribeLiveMonitor(const v1::LiveMonitorStatus& monitor, int last_decisions = 5);

// One poll of the server during a bench run.
struct TimelinePoint {
  int64_t requests_sent = 0;  // requests the bench had sent when it polled
  double seconds = 0;         // since the run began
  bool shifted = false;       // some of those requests carried shifted images
  double throughput = 0;      // answered requests per second so far
};

// The CSV columns, with '\n':
// requests_sent,seconds,shifted,variant,window_samples,disagreement_rate,
// disagreement_upper,max_disagreement,drift_detected,drift_exit_p_value,
// drift_confidence_p_value,loop_decisions,throughput_rps
std::string TimelineCsvHeader();

// One row, with '\n'. `status` null (the poll failed) leaves the server's
// columns empty; a status without a monitor (it is off) leaves the monitor's
// empty; so is the rate and its bound while the window holds no sample, and
// the p-values until a drift window is complete.
std::string TimelineCsvRow(const TimelinePoint& point, const v1::ServingStatus* status);

}  // namespace hapi::client
