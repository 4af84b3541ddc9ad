#include "model/profiler.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/exit_policy.h"
#include "core/files.h"
#include "core/latency_statistic.h"
#include "core/progress_bar.h"
#include "core/status_macros.h"
#include "model/labelled_images.h"
#include "model/torch_model.h"

namespace hapi {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

v1::PartLatency Summarise(std::vector<double> samples) {
  v1::PartLatency p;
  if (samples.empty()) return p;
  std::sort(samples.begin(), samples.end());
  p.set_median_s(NearestRankPercentile(samples, 0.5));
  p.set_p95_s(NearestRankPercentile(samples, 0.95));
  p.set_mean_s(std::accumulate(samples.begin(), samples.end(), 0.0) / samples.size());
  return p;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

std::string Hostname() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "unknown";
  return buf;
}

}  // namespace

namespace {

// Per-part timings of one batch size, in seconds.
struct PartTimes {
  std::vector<std::vector<double>> stages, exits;
  std::vector<double> overhead;
};

// One in-sequence pass over every stage and every exit head, as the executor
// runs them, then the executor end to end (final exit only) on the same
// input. Returns the parts' time on the final exit's path, or an error.
absl::StatusOr<double> TimePass(const Model& model, const EarlyExitExecutor& final_only,
                                const float* in, int batch, PartTimes* times) {
  const int classes = model.num_classes();
  double parts_final_path = 0;
  std::vector<float> probs;
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<Activations> x, model.Input(in, batch));
  for (int e = 0, stage = 0; e < model.num_exits(); ++e) {
    for (; stage <= model.ExitStage(e); ++stage) {
      auto t0 = Clock::now();
      HAPI_RETURN_IF_ERROR(model.RunStage(stage, *x));
      const double seconds = Seconds(t0, Clock::now());
      if (times) times->stages[stage].push_back(seconds);
      parts_final_path += seconds;
    }
    auto t1 = Clock::now();
    HAPI_RETURN_IF_ERROR(model.RunHead(e, *x, &probs));
    for (int r = 0; r < batch; ++r) ScoreProbabilities(probs.data() + r * classes, classes);
    const double seconds = Seconds(t1, Clock::now());
    if (times) times->exits[e].push_back(seconds);
    if (e == model.final_exit()) parts_final_path += seconds;
  }
  auto r0 = Clock::now();
  HAPI_RETURN_IF_ERROR(final_only.Run(in, batch).status());
  // Not clamped per pass: the difference of two noisy timings is often
  // negative, and clamping each pass would bias the mean upwards (by ~6 us
  // on this machine, 10-15% of a design that answers most samples at the
  // first exit). Its summary is clamped at 0 instead.
  const double overhead = Seconds(r0, Clock::now()) - parts_final_path;
  if (times) times->overhead.push_back(overhead);
  return overhead;
}

absl::Status ProfileBatch(const Model& model, const EarlyExitExecutor& final_only,
                          const std::vector<float>& pixels, int num_images, int batch,
                          const ProfilerOptions& options, v1::BatchProfile* out) {
  if (batch <= 0 || batch > num_images) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch size ", batch, " not in 1..", num_images));
  }
  PartTimes times;
  times.stages.resize(model.num_stages());
  times.exits.resize(model.num_exits());
  std::unique_ptr<ProgressBar> bar;
  const int passes = options.warmup_iterations + options.iterations;
  if (options.progress) {
    bar = std::make_unique<ProgressBar>(absl::StrFormat("profile batch %d", batch), passes);
  }
  const size_t sample_size = model.input_size();
  for (int it = 0; it < passes; ++it) {
    const int first = (it * batch) % (num_images - batch + 1);
    const bool timed = it >= options.warmup_iterations;
    HAPI_RETURN_IF_ERROR(TimePass(model, final_only, pixels.data() + first * sample_size, batch,
                                  timed ? &times : nullptr)
                             .status());
    if (bar) bar->Update(it + 1);
  }
  if (bar) bar->Finish();
  out->set_batch_size(batch);
  out->set_precision(options.precision);
  for (auto& s : times.stages) *out->add_stages() = Summarise(std::move(s));
  for (auto& e : times.exits) *out->add_exits() = Summarise(std::move(e));
  v1::PartLatency overhead = Summarise(std::move(times.overhead));
  overhead.set_median_s(std::max(0.0, overhead.median_s()));
  overhead.set_p95_s(std::max(0.0, overhead.p95_s()));
  overhead.set_mean_s(std::max(0.0, overhead.mean_s()));
  *out->mutable_overhead() = overhead;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::DeviceProfile> ProfileDevice(std::shared_ptr<const Model> model,
                                                const std::string& device_name,
                                                const ImageSet& inputs,
                                                const ProfilerOptions& options) {
  HAPI_RETURN_IF_ERROR(ValidateName(device_name, "device name"));
  if (inputs.size() == 0) return absl::InvalidArgumentError("profiling needs input images");
  if (options.iterations <= 0 || options.warmup_iterations < 0 || options.batch_sizes.empty()) {
    return absl::InvalidArgumentError("profiling needs iterations > 0 and a batch size");
  }
  SetIntraOpThreads(options.threads);
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<EarlyExitExecutor> final_only,
                        EarlyExitExecutor::Create(model, Design::FinalOnly()));
  const v1::ModelManifest& manifest = model->manifest();
  v1::DeviceProfile profile;
  profile.set_name(device_name);
  profile.set_model(manifest.name());
  profile.set_model_macs(manifest.full_network_macs());
  profile.set_intra_op_threads(IntraOpThreads());
  v1::MeasuredSource* src = profile.mutable_measured();
  src->set_hostname(Hostname());
  src->set_cpu_model(CpuModel());
  src->set_warmup_iterations(options.warmup_iterations);
  src->set_iterations(options.iterations);
  src->set_measured_at(absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone()));

  // The images as the model eats them, in [0,1]: grey 28x28 replicated into
  // its channels and resized as the server converts them.
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const LabelledImages> converted,
                        IdxImagesFor(inputs, model->input_spec(), ImageConversion{}));
  const std::vector<float> pixels = ReadAll(*converted, model->input_size());
  for (int batch : options.batch_sizes) {
    HAPI_RETURN_IF_ERROR(ProfileBatch(*model, *final_only, pixels, inputs.size(), batch, options,
                                      profile.add_batches()));
  }
  return profile;
}

}  // namespace hapi

namespace hapi {
double MeasureGemmMacsPerSecond() {
  torch::InferenceMode guard;
  constexpr int64_t kN = 1024;
  torch::Tensor a = torch::rand({kN, kN}), b = torch::rand({kN, kN});
  for (int i = 0; i < 3; ++i) torch::mm(a, b);
  std::vector<double> rates;
  for (int i = 0; i < 10; ++i) {
    auto t0 = Clock::now();
    torch::Tensor c = torch::mm(a, b);
    double s = Seconds(t0, Clock::now());
    rates.push_back(static_cast<double>(kN * kN * kN) / s);
  }
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}
}  // namespace hapi
