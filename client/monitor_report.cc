#include "client/monitor_report.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace hapi::client {
namespace {

std::string DecisionLine(const v1::LoopDecision& d) {
  std::string line =
      absl::StrCat("    ", d.time().empty() ? "-" : d.time(), "  ", d.reason(), " ", d.action());
  if (!d.from_variant().empty() || !d.to_variant().empty()) {
    absl::StrAppend(&line, "  ", d.from_variant().empty() ? "?" : d.from_variant(), " -> ",
                    d.to_variant().empty() ? "-" : d.to_variant());
  }
  if (!d.job().empty()) absl::StrAppend(&line, "  job ", d.job());
  if (!d.detail().empty()) absl::StrAppend(&line, "  ", d.detail());
  return line + "\n";
}

// Full precision for the CSV: p-values of drift can be tiny.
std::string Number(double v) { return absl::StrFormat("%.6g", v); }

}  // namespace

std::string DescribeLiveMonitor(const v1::LiveMonitorStatus& m, int last_decisions) {
  std::string out = "live monitor\n";
  absl::StrAppendFormat(&out, "  sampling  fraction %.4g, %d shadowed, %d skipped\n",
                        m.sample_fraction(), m.samples(), m.skipped());
  absl::StrAppendFormat(&out,
                        "  window    %d samples, %d disagree: rate %.4f, upper bound %.4f at "
                        "%.0f%% confidence\n",
                        m.window_samples(), m.window_disagreements(), m.disagreement_rate(),
                        m.disagreement_upper(), 100 * m.confidence());
  if (m.max_disagreement() < 0) {
    out += "  limit     none (the SLA bounds no accuracy)\n";
  } else {
    absl::StrAppendFormat(&out, "  limit     %.4f: %s\n", m.max_disagreement(),
                          m.bound_breached() ? "BREACHED (upper bound above it)" : "held");
  }
  if (m.drift_windows() == 0) {
    absl::StrAppendFormat(&out, "  drift     no complete window yet (alpha %g)\n", m.drift_alpha());
  } else {
    absl::StrAppendFormat(
        &out,
        "  drift     %s: exit ratios p=%.3g (chi2 %.2f), first-exit confidence p=%.3g (chi2 "
        "%.2f), alpha %g; %d windows, %d alarms\n",
        m.drift_detected() ? "DETECTED" : "none", m.drift_exit_p_value(), m.drift_exit_statistic(),
        m.drift_confidence_p_value(), m.drift_confidence_statistic(), m.drift_alpha(),
        m.drift_windows(), m.drift_alarms());
  }
  absl::StrAppendFormat(&out, "  loop      %s, %d decisions\n",
                        m.loop_mode().empty() ? "?" : m.loop_mode(), m.decisions_size());
  const int first = std::max(0, m.decisions_size() - std::max(0, last_decisions));
  for (int i = first; i < m.decisions_size(); ++i) out += DecisionLine(m.decisions(i));
  return out;
}

std::string TimelineCsvHeader() {
  return "requests_sent,seconds,shifted,variant,window_samples,disagreement_rate,"
         "disagreement_upper,max_disagreement,drift_detected,drift_exit_p_value,"
         "drift_confidence_p_value,loop_decisions,throughput_rps\n";
}

std::string TimelineCsvRow(const TimelinePoint& p, const v1::ServingStatus* status) {
  std::string row = absl::StrFormat("%d,%.3f,%d,", p.requests_sent, p.seconds, p.shifted ? 1 : 0);
  // A variant id is [a-z0-9._-]: nothing to quote.
  if (status != nullptr) row += status->variant();
  if (status != nullptr && status->has_monitor()) {
    const v1::LiveMonitorStatus& m = status->monitor();
    const bool sampled = m.window_samples() > 0, tested = m.drift_windows() > 0;
    absl::StrAppend(
        &row, ",", m.window_samples(), ",", sampled ? Number(m.disagreement_rate()) : "", ",",
        sampled ? Number(m.disagreement_upper()) : "", ",", Number(m.max_disagreement()), ",",
        m.drift_detected() ? 1 : 0, ",", tested ? Number(m.drift_exit_p_value()) : "", ",",
        tested ? Number(m.drift_confidence_p_value()) : "", ",", m.decisions_size());
  } else {
    row += ",,,,,,,,";
  }
  return absl::StrCat(row, ",", absl::StrFormat("%.1f", p.throughput), "\n");
}

}  // namespace hapi::client
