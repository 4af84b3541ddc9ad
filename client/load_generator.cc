#include "client/load_generator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <numeric>
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

namespace hapi {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t rank = static_cast<size_t>(std::ceil(q * v.size()));
  return v[std::max<size_t>(rank, 1) - 1];
}

const char* CodeName(int code) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                 "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                 "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kNames[code] : "?";
}

}  // namespace

LoadReport RunLoad(v1::Inference::Stub* stub, const std::vector<std::string>& images,
                   const std::vector<int>& labels, const LoadOptions& options,
                   const std::string& token) {
  LoadReport report;
  absl::Mutex mu;
  std::atomic<int64_t> issued{0}, done{0};
  const auto t0 = Clock::now();
  auto more = [&]() {
    if (options.count > 0) return issued.fetch_add(1) < options.count;
    if (Since(t0) >= options.duration_s) return false;
    issued.fetch_add(1);
    return true;
  };
  auto make_context = [&](grpc::ClientContext* ctx) {
    if (options.deadline_ms > 0) {
      ctx->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::microseconds(static_cast<int64_t>(options.deadline_ms * 1000)));
    }
    if (!token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  };
  auto record = [&](int64_t i, double start, const grpc::Status& st, const v1::ClassifyResponse& r) {
    LoadSample s;
    s.start_s = start;
    s.latency_s = Since(t0) - start;
    s.code = st.error_code();
    s.truth = labels[i % labels.size()];
    if (st.ok()) {
      s.label = r.label();
      s.exit_index = r.exit().exit_index();
      s.cut_by_deadline = r.cut_by_deadline();
      s.server_s = r.server_latency_s();
      s.queue_s = r.queue_s();
    }
    absl::MutexLock lock(&mu);
    report.samples.push_back(s);
    ++done;
  };

  absl::Notification finished;
  std::thread progress([&] {
    while (options.progress && !finished.WaitForNotificationWithTimeout(absl::Milliseconds(500))) {
      double t = Since(t0);
      std::fprintf(stderr, "\r\033[K%.1fs  %lld done  %.0f req/s", t,
                   static_cast<long long>(done.load()), t > 0 ? done.load() / t : 0.0);
    }
  });

  if (options.rate <= 0) {
    std::vector<std::thread> clients;
    for (int c = 0; c < std::max(1, options.concurrency); ++c) {
      clients.emplace_back([&, c] {
        int64_t i = c;
        while (more()) {
          v1::ClassifyRequest req;
          req.mutable_image()->set_raw_uint8(images[i % images.size()]);
          v1::ClassifyResponse resp;
          grpc::ClientContext ctx;
          make_context(&ctx);
          double start = Since(t0);
          grpc::Status st = stub->Classify(&ctx, req, &resp);
          record(i, start, st, resp);
          i += std::max(1, options.concurrency);
        }
      });
    }
    for (auto& t : clients) t.join();
  } else {
    // Open loop: issue at fixed times with the async callback API.
    struct Call {
      grpc::ClientContext ctx;
      v1::ClassifyRequest req;
      v1::ClassifyResponse resp;
      double start = 0;
      int64_t i = 0;
    };
    std::atomic<int64_t> in_flight{0};
    const double interval = 1.0 / options.rate;
    int64_t i = 0;
    while (more()) {
      double due = i * interval;
      double now = Since(t0);
      if (due > now) std::this_thread::sleep_for(std::chrono::duration<double>(due - now));
      auto* call = new Call();
      call->req.mutable_image()->set_raw_uint8(images[i % images.size()]);
      make_context(&call->ctx);
      call->start = Since(t0);
      call->i = i;
      ++in_flight;
      stub->async()->Classify(&call->ctx, &call->req, &call->resp, [&, call](grpc::Status st) {
        record(call->i, call->start, st, call->resp);
        delete call;
        --in_flight;
      });
      ++i;
    }
    while (in_flight.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  report.seconds = Since(t0);
  finished.Notify();
  progress.join();
  if (options.progress) std::fprintf(stderr, "\r\033[K");
  std::sort(report.samples.begin(), report.samples.end(),
            [](const LoadSample& a, const LoadSample& b) { return a.start_s < b.start_s; });
  return report;
}

namespace {

// Everything the summaries print, computed once over the samples.
struct LoadStats {
  std::vector<double> latency, server, queue;  // OK answers only, seconds
  std::map<int, int64_t> codes, exits;
  int64_t ok = 0, labelled = 0, correct = 0, cut = 0;
};

LoadStats Stats(const LoadReport& r) {
  LoadStats st;
  for (const LoadSample& s : r.samples) {
    ++st.codes[s.code];
    if (s.code != 0) continue;
    ++st.ok;
    st.latency.push_back(s.latency_s);
    st.server.push_back(s.server_s);
    st.queue.push_back(s.queue_s);
    ++st.exits[s.exit_index];
    st.cut += s.cut_by_deadline;
    if (s.truth >= 0) {
      ++st.labelled;
      st.correct += s.label == s.truth;
    }
  }
  return st;
}

double Mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / v.size();
}

}  // namespace

std::string SummariseLoad(const LoadReport& r) {
  const LoadStats st = Stats(r);
  std::string out = absl::StrFormat(
      "requests %d in %.2f s: %.1f req/s\nlatency ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  "
      "mean %.3f\nserver-side ms: mean %.3f (queue %.3f)  p50 %.3f\n",
      r.samples.size(), r.seconds, r.throughput(), 1e3 * Percentile(st.latency, 0.5),
      1e3 * Percentile(st.latency, 0.9), 1e3 * Percentile(st.latency, 0.99),
      1e3 * Percentile(st.latency, 1.0), 1e3 * Mean(st.latency), 1e3 * Mean(st.server),
      1e3 * Mean(st.queue), 1e3 * Percentile(st.server, 0.5));
  out += "codes:";
  for (auto [code, n] : st.codes) absl::StrAppendFormat(&out, " %s=%d", CodeName(code), n);
  out += "\nexits:";
  for (auto [exit, n] : st.exits) {
    absl::StrAppendFormat(&out, " %d:%.1f%%", exit, 100.0 * n / std::max<int64_t>(1, st.ok));
  }
  if (st.cut > 0) absl::StrAppendFormat(&out, "  (cut short by deadline: %d)", st.cut);
  if (st.labelled > 0) {
    absl::StrAppendFormat(&out, "\naccuracy %.2f%% (%d labelled)",
                          100.0 * st.correct / st.labelled, st.labelled);
  }
  return out + "\n";
}

std::string LoadReportCsv(const LoadReport& r) {
  std::string out = "start_s,latency_s,server_s,queue_s,code,label,truth,exit,cut_by_deadline\n";
  for (const LoadSample& s : r.samples) {
    absl::StrAppendFormat(&out, "%.6f,%.6f,%.6f,%.6f,%d,%d,%d,%d,%d\n", s.start_s, s.latency_s,
                          s.server_s, s.queue_s, s.code, s.label, s.truth, s.exit_index,
                          s.cut_by_deadline ? 1 : 0);
  }
  return out;
}

std::string LoadReportJson(const LoadReport& r) {
  const LoadStats st = Stats(r);
  std::string out = absl::StrFormat(
      "{\"requests\": %d, \"seconds\": %.6f, \"throughput_rps\": %.3f, \"ok\": %d, "
      "\"latency_ms\": {\"mean\": %.4f, \"p50\": %.4f, \"p90\": %.4f, \"p99\": %.4f, "
      "\"max\": %.4f}, \"server_ms\": {\"mean\": %.4f, \"p50\": %.4f, \"queue_mean\": %.4f}, "
      "\"accuracy\": %s, \"codes\": {",
      r.samples.size(), r.seconds, r.throughput(), st.ok, 1e3 * Mean(st.latency),
      1e3 * Percentile(st.latency, 0.5), 1e3 * Percentile(st.latency, 0.9),
      1e3 * Percentile(st.latency, 0.99), 1e3 * Percentile(st.latency, 1.0),
      1e3 * Mean(st.server), 1e3 * Percentile(st.server, 0.5), 1e3 * Mean(st.queue),
      st.labelled > 0 ? absl::StrFormat("%.6f", static_cast<double>(st.correct) / st.labelled)
                      : "null");
  bool first = true;
  for (auto [code, n] : st.codes) {
    absl::StrAppendFormat(&out, "%s\"%s\": %d", first ? "" : ", ", CodeName(code), n);
    first = false;
  }
  out += "}, \"exits\": {";
  first = true;
  for (auto [e, n] : st.exits) {
    absl::StrAppendFormat(&out, "%s\"%d\": %d", first ? "" : ", ", e, n);
    first = false;
  }
  return out + "}}\n";
}

}  // namespace hapi
