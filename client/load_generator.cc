#include "client/load_generator.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/latency_statistic.h"

namespace hapi {
namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double Percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return NearestRankPercentile(v, q);
}

// gRPC's status codes are absl's, names and all; a code outside them shows as "?".
std::string CodeName(int code) {
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? "?" : name;
}

// One run of the load generator: what its client threads share.
class LoadRun {
 public:
  LoadRun(LoadClient* client, int num_images, const std::vector<int>& labels,
          const LoadOptions& options)
      : client_(client), num_images_(num_images), labels_(labels), options_(options) {}

  LoadReport Run();

 private:
  // The number of one more request (0, 1, ... in the order they go out), or
  // -1 once --count requests have, or once --duration has passed.
  int64_t ClaimRequest();
  // Requests claimed and not refused.
  int64_t Sent() const;
  // The images of request i, cycling through the list (its shifted half from
  // shift_after on).
  std::vector<int64_t> ImagesOf(int64_t i) const;
  void Record(const std::vector<int64_t>& images, double start_s, const grpc::Status& status,
              const std::vector<LoadClient::Answer>& answers);

  // N clients with one request each in flight: the rate is what the server
  // sustains.
  void RunClosedLoop();
  // Requests at fixed times whatever the answers do, so queueing shows.
  void RunOpenLoop();
  void ShowProgress(absl::Notification* finished);
  // Calls options_.observe as requests pass its marks, until finished_.
  void Observe();

  // Constant after construction; the caller's, which outlive Run().
  LoadClient* const client_;
  const int num_images_;
  const std::vector<int>& labels_;
  const LoadOptions& options_;
  const Clock::time_point t0_ = Clock::now();  // every time in the report is since this
  // Atomic: every client thread counts, and the progress line reads them.
  std::atomic<int64_t> issued_{0}, done_{0};
  absl::Mutex mu_;
  std::vector<LoadSample> samples_ ABSL_GUARDED_BY(mu_);
  // What the observer waits for.
  absl::Mutex observe_mu_;
  int64_t marked_ ABSL_GUARDED_BY(observe_mu_) = 0;  // the latest mark passed
  bool finished_ ABSL_GUARDED_BY(observe_mu_) = false;
};

int64_t LoadRun::ClaimRequest() {
  int64_t n;
  if (options_.count > 0) {
    n = issued_.fetch_add(1);
    if (n >= options_.count) return -1;
  } else {
    if (Since(t0_) >= options_.duration_s) return -1;
    n = issued_.fetch_add(1);
  }
  if (options_.observe_every > 0 && (n + 1) % options_.observe_every == 0) {
    absl::MutexLock lock(&observe_mu_);
    marked_ = std::max(marked_, n + 1);
  }
  return n;
}

int64_t LoadRun::Sent() const {
  const int64_t issued = issued_.load();
  return options_.count > 0 ? std::min(issued, options_.count) : issued;
}

std::vector<int64_t> LoadRun::ImagesOf(int64_t i) const {
  const int batch = std::max(1, options_.batch);
  const bool shifted = options_.shift_after >= 0 && i >= options_.shift_after;
  std::vector<int64_t> images(batch);
  for (int k = 0; k < batch; ++k) {
    images[k] = (i * batch + k) % num_images_ + (shifted ? num_images_ : 0);
  }
  return images;
}

void LoadRun::Record(const std::vector<int64_t>& images, double start_s, const grpc::Status& status,
                     const std::vector<LoadClient::Answer>& answers) {
  const double latency_s = Since(t0_) - start_s;
  absl::MutexLock lock(&mu_);
  for (size_t k = 0; k < images.size(); ++k) {
    LoadSample s;
    s.start_s = start_s;
    s.latency_s = latency_s;
    s.code = status.error_code();
    s.truth = labels_[images[k] % labels_.size()];
    s.shifted = images[k] >= num_images_;
    if (status.ok() && k < answers.size()) {
      const LoadClient::Answer& a = answers[k];
      s.label = a.label;
      s.exit_index = a.exit_index;
      s.cut_by_deadline = a.cut_by_deadline;
      s.server_s = a.server_s;
      s.queue_s = a.queue_s;
    }
    samples_.push_back(s);
  }
  ++done_;
}

void LoadRun::RunClosedLoop() {
  const int clients = std::max(1, options_.concurrency);
  std::vector<std::thread> threads;
  threads.reserve(clients);
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([this] {
      for (int64_t i; (i = ClaimRequest()) >= 0;) {
        const std::vector<int64_t> images = ImagesOf(i);
        const double start_s = Since(t0_);
        std::vector<LoadClient::Answer> answers;
        grpc::Status status = client_->Call(images, &answers);
        Record(images, start_s, status, answers);
      }
    });
  }
  for (auto& t : threads) t.join();
}

void LoadRun::RunOpenLoop() {
  std::atomic<int64_t> in_flight{0};
  const double interval = 1.0 / options_.rate;
  for (int64_t i; (i = ClaimRequest()) >= 0;) {
    double due = i * interval;
    double now = Since(t0_);
    if (due > now) std::this_thread::sleep_for(std::chrono::duration<double>(due - now));
    std::vector<int64_t> images = ImagesOf(i);
    const double start_s = Since(t0_);
    ++in_flight;
    client_->Send(images,
                  [this, images, start_s, &in_flight](
                      const grpc::Status& status, const std::vector<LoadClient::Answer>& answers) {
                    Record(images, start_s, status, answers);
                    --in_flight;
                  });
  }
  while (in_flight.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

void LoadRun::ShowProgress(absl::Notification* finished) {
  while (options_.progress && !finished->WaitForNotificationWithTimeout(absl::Milliseconds(500))) {
    double t = Since(t0_);
    std::fprintf(stderr, "\r\033[K%.1fs  %lld done  %.0f req/s", t,
                 static_cast<long long>(done_.load()), t > 0 ? done_.load() / t : 0.0);
  }
}

void LoadRun::Observe() {
  int64_t observed = 0;
  while (true) {
    int64_t mark;
    {
      absl::MutexLock lock(&observe_mu_);
      auto ready = [this, observed]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(observe_mu_) {
        return finished_ || marked_ > observed;
      };
      observe_mu_.Await(absl::Condition(&ready));
      if (marked_ <= observed) break;  // finished
      mark = marked_;
    }
    options_.observe(LoadProgress{mark, done_.load(), Since(t0_)});
    observed = mark;
  }
  if (const int64_t sent = Sent(); sent > observed) {
    options_.observe(LoadProgress{sent, done_.load(), Since(t0_)});
  }
}

LoadReport LoadRun::Run() {
  absl::Notification finished;
  std::thread progress([this, &finished] { ShowProgress(&finished); });
  std::thread observer;
  if (options_.observe_every > 0 && options_.observe) observer = std::thread([this] { Observe(); });
  if (options_.rate <= 0) {
    RunClosedLoop();
  } else {
    RunOpenLoop();
  }
  LoadReport report;
  report.seconds = Since(t0_);
  report.batch = std::max(1, options_.batch);
  finished.Notify();
  progress.join();
  if (observer.joinable()) {
    {
      absl::MutexLock lock(&observe_mu_);
      finished_ = true;
    }
    observer.join();
  }
  if (options_.progress) std::fprintf(stderr, "\r\033[K");
  {
    absl::MutexLock lock(&mu_);
    report.samples = std::move(samples_);
  }
  std::sort(report.samples.begin(), report.samples.end(),
            [](const LoadSample& a, const LoadSample& b) { return a.start_s < b.start_s; });
  return report;
}

}  // namespace

LoadReport RunLoad(LoadClient* client, int num_images, const std::vector<int>& labels,
                   const LoadOptions& options) {
  return LoadRun(client, num_images, labels, options).Run();
}

namespace {

// Everything the summaries print, computed once over the samples.
struct LoadStats {
  std::vector<double> latency, server, queue;  // OK answers only, seconds
  std::map<int, int64_t> codes, exits;
  int64_t ok = 0, labelled = 0, correct = 0, cut = 0;
  // Labelled OK answers to clean and to shifted images, and how many right.
  int64_t clean = 0, clean_correct = 0, shifted = 0, shifted_correct = 0;
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
      (s.shifted ? st.shifted : st.clean) += 1;
      (s.shifted ? st.shifted_correct : st.clean_correct) += s.label == s.truth;
    }
  }
  return st;
}

// "93.10% (4000)"; "-" when none.
std::string AccuracyOf(int64_t correct, int64_t labelled) {
  return labelled > 0 ? absl::StrFormat("%.2f%% (%d)", 100.0 * correct / labelled, labelled) : "-";
}

std::string JsonRatio(int64_t correct, int64_t labelled) {
  return labelled > 0 ? absl::StrFormat("%.6f", static_cast<double>(correct) / labelled) : "null";
}

double Mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / v.size();
}

}  // namespace

std::string SummariseLoad(const LoadReport& r) {
  const LoadStats st = Stats(r);
  std::string out =
      absl::StrFormat("requests %d in %.2f s: %.1f req/s", r.requests(), r.seconds, r.throughput());
  if (r.batch > 1) {
    absl::StrAppendFormat(&out, " of %d images (%.1f images/s)", r.batch, r.images_per_s());
  }
  absl::StrAppendFormat(
      &out,
      "\nlatency ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  mean %.3f\nserver-side ms: mean "
      "%.3f (queue %.3f)  p50 %.3f\n",
      1e3 * Percentile(st.latency, 0.5), 1e3 * Percentile(st.latency, 0.9),
      1e3 * Percentile(st.latency, 0.99), 1e3 * Percentile(st.latency, 1.0), 1e3 * Mean(st.latency),
      1e3 * Mean(st.server), 1e3 * Mean(st.queue), 1e3 * Percentile(st.server, 0.5));
  out += "codes:";
  for (auto [code, n] : st.codes) absl::StrAppendFormat(&out, " %s=%d", CodeName(code), n);
  out += "\nexits:";
  for (auto [exit, n] : st.exits) {
    absl::StrAppendFormat(&out, " %d:%.1f%%", exit, 100.0 * n / std::max<int64_t>(1, st.ok));
  }
  if (st.cut > 0) absl::StrAppendFormat(&out, "  (cut short by deadline: %d)", st.cut);
  if (st.labelled > 0) {
    absl::StrAppendFormat(&out, "\naccuracy %.2f%% (%d labelled)", 100.0 * st.correct / st.labelled,
                          st.labelled);
  }
  if (st.shifted > 0) {
    absl::StrAppend(&out, "\naccuracy before the shift ", AccuracyOf(st.clean_correct, st.clean),
                    ", after ", AccuracyOf(st.shifted_correct, st.shifted));
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
      "{\"requests\": %d, \"batch\": %d, \"images_per_s\": %.3f, \"seconds\": %.6f, "
      "\"throughput_rps\": %.3f, \"ok\": %d, "
      "\"latency_ms\": {\"mean\": %.4f, \"p50\": %.4f, \"p90\": %.4f, \"p99\": %.4f, "
      "\"max\": %.4f}, \"server_ms\": {\"mean\": %.4f, \"p50\": %.4f, \"queue_mean\": %.4f}, "
      "\"accuracy\": %s, \"codes\": {",
      r.requests(), r.batch, r.images_per_s(), r.seconds, r.throughput(), st.ok,
      1e3 * Mean(st.latency), 1e3 * Percentile(st.latency, 0.5), 1e3 * Percentile(st.latency, 0.9),
      1e3 * Percentile(st.latency, 0.99), 1e3 * Percentile(st.latency, 1.0), 1e3 * Mean(st.server),
      1e3 * Percentile(st.server, 0.5), 1e3 * Mean(st.queue),
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
  out += "}";
  if (st.shifted > 0) {
    absl::StrAppendFormat(&out,
                          ", \"shift\": {\"clean\": %d, \"clean_accuracy\": %s, \"shifted\": %d, "
                          "\"shifted_accuracy\": %s}",
                          st.clean, JsonRatio(st.clean_correct, st.clean), st.shifted,
                          JsonRatio(st.shifted_correct, st.shifted));
  }
  return out + "}\n";
}

}  // namespace hapi
