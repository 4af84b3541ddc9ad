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
#include "core/progress_bar.h"
#include "core/status_macros.h"
#include "model/inference_network.h"

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
  auto at = [&](double q) {
    size_t rank = static_cast<size_t>(std::ceil(q * samples.size()));
    return samples[std::max<size_t>(rank, 1) - 1];
  };
  p.set_median_s(at(0.5));
  p.set_p95_s(at(0.95));
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

absl::StatusOr<v1::DeviceProfile> ProfileDevice(std::shared_ptr<EarlyExitModel> model,
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
                        EarlyExitExecutor::Create(model, Design::FinalOnly(), options.executor));
  InferenceNetwork& net = final_only->network();
  const v1::ModelManifest& manifest = model->manifest();
  const int stages = net.num_stages(), exits = net.num_exits();
  const int classes = manifest.backbone().num_classes();

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

  // Float copies of the input images, in [0,1].
  std::vector<float> pixels(static_cast<size_t>(inputs.size()) * kImagePixels);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = inputs.pixels[i] / 255.0f;

  for (int batch : options.batch_sizes) {
    if (batch <= 0 || batch > inputs.size()) {
      return absl::InvalidArgumentError(absl::StrCat("batch size ", batch, " not in 1..",
                                                     inputs.size()));
    }
    std::vector<std::vector<double>> stage_t(stages), exit_t(exits);
    std::vector<double> overhead_t;
    std::unique_ptr<ProgressBar> bar;
    if (options.progress) {
      bar = std::make_unique<ProgressBar>(absl::StrFormat("profile batch %d", batch),
                                          options.warmup_iterations + options.iterations);
    }
    try {
      torch::InferenceMode guard;
      for (int it = 0; it < options.warmup_iterations + options.iterations; ++it) {
        const bool timed = it >= options.warmup_iterations;
        int first = (it * batch) % (inputs.size() - batch + 1);
        const float* in = pixels.data() + static_cast<size_t>(first) * kImagePixels;
        // In-sequence pass over every part, as the executor runs them.
        double parts_final_path = 0;
        torch::Tensor x = net.Input(in, batch);
        auto t = Clock::now();
        for (int s = 0; s < stages; ++s) {
          x = net.Stage(s, x);
          auto t1 = Clock::now();
          torch::Tensor probs = torch::softmax(net.ExitLogits(s, x), 1).contiguous();
          const float* p = probs.data_ptr<float>();
          for (int r = 0; r < batch; ++r) ScoreProbabilities(p + r * classes, classes);
          auto t2 = Clock::now();
          if (timed) {
            stage_t[s].push_back(Seconds(t, t1));
            exit_t[s].push_back(Seconds(t1, t2));
          }
          parts_final_path += Seconds(t, t1);
          if (s == exits - 1) parts_final_path += Seconds(t1, t2);
          t = t2;
        }
        // The executor end to end on the same input, final exit only.
        auto r0 = Clock::now();
        auto result = final_only->Run(in, batch);
        auto r1 = Clock::now();
        if (!result.ok()) return result.status();
        if (timed) overhead_t.push_back(std::max(0.0, Seconds(r0, r1) - parts_final_path));
        if (bar) bar->Update(it + 1);
      }
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("profiling model ", manifest.name(), ": ",
                                              e.what_without_backtrace()));
    }
    if (bar) bar->Finish();
    v1::BatchProfile* b = profile.add_batches();
    b->set_batch_size(batch);
    for (auto& s : stage_t) *b->add_stages() = Summarise(std::move(s));
    for (auto& e : exit_t) *b->add_exits() = Summarise(std::move(e));
    *b->mutable_overhead() = Summarise(std::move(overhead_t));
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
