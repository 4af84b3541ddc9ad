// hapi-bench-ort-reference: the project's side of bench/compare_ort.sh and of
// docs/performance.md, through the model seam (core/model.h) and the
// executor, exactly as hapi-server runs them.
//
//   --probs_out=F   final-exit class probabilities of the first --samples
//                   test images (float32, samples x classes), to check an
//                   exported ONNX graph against (bench/ort/check.js)
//   --time          batch-1 latency of EarlyExitExecutor::Run for the full
//                   network and, with --exits, an early-exit design; one JSON
//                   line per design (mean/p50/p99 ms, accuracy, exit counts)
//   --components    batch-1 median time of each piece the executor calls:
//                   Input (normalise + layout), every RunStage, every RunHead
//                   (head + softmax + copy out); one JSON line
//   --loop_seconds  runs the full network (or the design) at batch 1 for that
//                   long and nothing else: a steady state for perf record and
//                   ONEDNN_VERBOSE
//   --torch_trace   with --loop_seconds: LibTorch's (legacy) profiler over
//                   the loop, written as a Chrome trace (per-op self times:
//                   bench/ort/op_table.py)
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/bench_model.h"
#include "bench/common.h"
#include "core/executor.h"
#include "core/status_macros.h"

ABSL_FLAG(std::string, repository, "repository", "Repository root");
ABSL_FLAG(std::string, model, "fmnist-resnet", "Model");
ABSL_FLAG(std::string, data_dir, hapi::kDefaultFashionMnistDir, "Fashion-MNIST directory");
ABSL_FLAG(int32_t, threads, 1, "Intra-op threads");
ABSL_FLAG(int32_t, samples, 10000, "Test images (probabilities, timing)");
ABSL_FLAG(std::string, probs_out, "", "Write final-exit probabilities here");
ABSL_FLAG(bool, time, false, "Time EarlyExitExecutor::Run at batch 1");
ABSL_FLAG(bool, components, false, "Time Input, each stage and each head at batch 1");
ABSL_FLAG(double, loop_seconds, 0, "Run batch-1 requests for this long (profiling)");
ABSL_FLAG(std::string, torch_trace, "", "With --loop_seconds: LibTorch profiler trace here");
ABSL_FLAG(int32_t, int8_calibration, 0,
          "> 0: int8 convolutions calibrated on this many training images (the residual network)");
ABSL_FLAG(bool, exit_accuracy, false, "Test accuracy of every exit alone");
ABSL_FLAG(bool, direct, true, "The direct oneDNN path (ModelOptions::direct); false: LibTorch");
ABSL_FLAG(int32_t, warmup, 200, "Untimed batch-1 requests first");
ABSL_FLAG(std::vector<std::string>, exits, {}, "Early-exit design: enabled exits (empty: none)");
ABSL_FLAG(std::vector<std::string>, thresholds, {},
          "One threshold per exit, or one shared (max softmax)");

namespace {

struct Options {
  hapi::bench::ModelSource source;
  int threads = 1;
  int samples = 10000;
  std::string probs_out;
  bool time = false, components = false;
  double loop_seconds = 0;
  std::string torch_trace;
  int warmup = 200;
  std::vector<int> exits;
  std::vector<float> thresholds;
};

absl::StatusOr<hapi::Design> EarlyDesign(const Options& o) {
  if (o.exits.empty()) return hapi::Design::FinalOnly();
  hapi::Design d;
  d.exits = o.exits;
  if (o.thresholds.size() == 1) {
    d.thresholds.assign(o.exits.size(), o.thresholds[0]);
  } else if (o.thresholds.size() == o.exits.size()) {
    d.thresholds = o.thresholds;
  } else {
    return absl::InvalidArgumentError("--thresholds: one, or one per exit");
  }
  return d;
}

absl::Status WriteProbabilities(const hapi::Model& model, const std::vector<float>& pixels, int n,
                                const std::string& path) {
  std::ofstream out(path, std::ios::binary);
  if (!out) return absl::InternalError(absl::StrCat("cannot write ", path));
  constexpr int kBatch = 100;
  for (int begin = 0; begin < n; begin += kBatch) {
    const int count = std::min(kBatch, n - begin);
    HAPI_ASSIGN_OR_RETURN(
        std::unique_ptr<hapi::Activations> x,
        model.Input(pixels.data() + static_cast<size_t>(begin) * model.input_size(), count));
    for (int s = 0; s < model.num_stages(); ++s) HAPI_RETURN_IF_ERROR(model.RunStage(s, *x));
    std::vector<float> probs;
    HAPI_RETURN_IF_ERROR(model.RunHead(model.final_exit(), *x, &probs));
    out.write(reinterpret_cast<const char*>(probs.data()),
              static_cast<std::streamsize>(probs.size() * sizeof(float)));
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("writing ", path, " failed"));
  std::fprintf(stderr, "wrote %d x %d probabilities to %s\n", n, model.num_classes(), path.c_str());
  return absl::OkStatus();
}

// Test accuracy of every exit alone (each sample through every stage and
// head), as one JSON line.
absl::Status ExitAccuracy(const hapi::Model& model, const hapi::ImageSet& test,
                          const std::vector<float>& pixels) {
  constexpr int kBatch = 100;
  std::vector<int> correct(model.num_exits(), 0);
  for (int begin = 0; begin < test.size(); begin += kBatch) {
    const int count = std::min(kBatch, test.size() - begin);
    HAPI_ASSIGN_OR_RETURN(
        std::unique_ptr<hapi::Activations> x,
        model.Input(pixels.data() + static_cast<size_t>(begin) * model.input_size(), count));
    for (int s = 0; s < model.num_stages(); ++s) {
      HAPI_RETURN_IF_ERROR(model.RunStage(s, *x));
      for (int e = 0; e < model.num_exits(); ++e) {
        if (model.ExitStage(e) != s) continue;
        std::vector<float> p;
        HAPI_RETURN_IF_ERROR(model.RunHead(e, *x, &p));
        const int classes = model.num_classes();
        for (int i = 0; i < count; ++i) {
          const float* row = p.data() + i * classes;
          const int label = static_cast<int>(std::max_element(row, row + classes) - row);
          correct[e] += label == test.labels[begin + i];
        }
      }
    }
  }
  std::printf("{\"what\":\"exit_accuracy\",\"samples\":%d,\"accuracy\":[", test.size());
  for (int e = 0; e < model.num_exits(); ++e) {
    std::printf("%s%.4f", e > 0 ? "," : "", static_cast<double>(correct[e]) / test.size());
  }
  std::printf("]}\n");
  return absl::OkStatus();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

absl::Status TimeDesign(const std::string& name, std::shared_ptr<const hapi::Model> model,
                        const hapi::Design& design, const hapi::ImageSet& test,
                        const std::vector<float>& pixels, int warmup) {
  HAPI_ASSIGN_OR_RETURN(auto executor, hapi::EarlyExitExecutor::Create(model, design));
  HAPI_ASSIGN_OR_RETURN(
      hapi::bench::BatchOneTimes t,
      hapi::bench::TimeBatchOne(*executor, pixels, test.labels, test.size(), warmup));
  // Which exit answered, over the same images (untimed).
  std::vector<int> exit_counts(model->num_exits(), 0);
  for (int s = 0; s < test.size(); ++s) {
    HAPI_ASSIGN_OR_RETURN(auto r, executor->Run(pixels.data() + s * model->input_size(), 1));
    ++exit_counts[r[0].exit_index];
  }
  absl::PrintF(
      "{\"what\":\"executor\",\"design\":\"%s\",\"samples\":%d,\"mean_ms\":%.4f,"
      "\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"accuracy\":%.4f,\"exit_counts\":[%s]}\n",
      name, test.size(), t.seconds.mean * 1e3, t.seconds.p50 * 1e3, t.seconds.p99 * 1e3,
      static_cast<double>(t.correct) / test.size(), absl::StrJoin(exit_counts, ","));
  std::fflush(stdout);
  return absl::OkStatus();
}

// Median batch-1 time of every piece the executor calls, each timed alone.
absl::Status TimeComponents(const hapi::Model& model, const std::vector<float>& pixels, int n,
                            int warmup) {
  const int stages = model.num_stages(), exits = model.num_exits();
  std::vector<double> input_t, full_t;
  std::vector<std::vector<double>> stage_t(stages), head_t(exits);
  std::vector<float> probs;
  for (int i = -warmup; i < n; ++i) {
    const float* p = pixels.data() + static_cast<size_t>((i + n) % n) * model.input_size();
    double t0 = hapi::bench::Now();
    HAPI_ASSIGN_OR_RETURN(std::unique_ptr<hapi::Activations> x, model.Input(p, 1));
    double t1 = hapi::bench::Now();
    if (i >= 0) input_t.push_back(t1 - t0);
    double total = t1 - t0;
    for (int s = 0; s < stages; ++s) {
      double a = hapi::bench::Now();
      HAPI_RETURN_IF_ERROR(model.RunStage(s, *x));
      double b = hapi::bench::Now();
      total += b - a;
      if (i >= 0) stage_t[s].push_back(b - a);
      // Every head reading this stage's output.
      for (int e = 0; e < exits; ++e) {
        if (model.ExitStage(e) != s) continue;
        double c = hapi::bench::Now();
        HAPI_RETURN_IF_ERROR(model.RunHead(e, *x, &probs));
        double d = hapi::bench::Now();
        if (i >= 0) head_t[e].push_back(d - c);
        if (e == model.final_exit()) total += d - c;
      }
    }
    if (i >= 0) full_t.push_back(total);
  }
  std::vector<std::string> st, hd;
  for (auto& v : stage_t) st.push_back(absl::StrFormat("%.4f", Median(v) * 1e3));
  for (auto& v : head_t) hd.push_back(absl::StrFormat("%.4f", Median(v) * 1e3));
  absl::PrintF(
      "{\"what\":\"components\",\"samples\":%d,\"input_ms\":%.4f,\"stage_ms\":[%s],"
      "\"head_ms\":[%s],\"input_stages_final_head_ms\":%.4f}\n",
      n, Median(input_t) * 1e3, absl::StrJoin(st, ","), absl::StrJoin(hd, ","),
      Median(full_t) * 1e3);
  std::fflush(stdout);
  return absl::OkStatus();
}

absl::Status Loop(std::shared_ptr<const hapi::Model> model, const hapi::Design& design,
                  const std::vector<float>& pixels, int n, double seconds,
                  const std::string& trace) {
  HAPI_ASSIGN_OR_RETURN(auto executor, hapi::EarlyExitExecutor::Create(model, design));
  HAPI_RETURN_IF_ERROR(executor->WarmUp(1));
  for (int i = 0; i < 50; ++i) (void)executor->Run(pixels.data() + i * model->input_size(), 1);
  std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
  if (!trace.empty()) profile = std::make_unique<torch::autograd::profiler::RecordProfile>(trace);
  const double t0 = hapi::bench::Now();
  int64_t requests = 0;
  while (hapi::bench::Now() - t0 < seconds) {
    HAPI_RETURN_IF_ERROR(
        executor->Run(pixels.data() + (requests % n) * model->input_size(), 1).status());
    ++requests;
  }
  const double elapsed = hapi::bench::Now() - t0;
  profile.reset();
  std::printf("{\"what\":\"loop\",\"requests\":%lld,\"seconds\":%.3f,\"mean_ms\":%.4f}\n",
              static_cast<long long>(requests), elapsed, elapsed / requests * 1e3);
  return absl::OkStatus();
}

absl::Status Run(const Options& o) {
  hapi::SetIntraOpThreads(o.threads);
  hapi::ModelOptions options;
  options.direct = absl::GetFlag(FLAGS_direct);
  HAPI_ASSIGN_OR_RETURN(hapi::FashionMnist data, hapi::LoadFashionMnist(o.source.data_dir));
  if (const int n = absl::GetFlag(FLAGS_int8_calibration); n > 0) {
    data.train.Truncate(n);
    options.int8_calibration =
        std::make_shared<const std::vector<float>>(hapi::bench::ToFloatPixels(data.train));
  }
  // Any model directory (the residual network, or a graph hapi-import wrote),
  // as hapi-server loads it.
  HAPI_ASSIGN_OR_RETURN(
      std::shared_ptr<const hapi::Model> served,
      hapi::LoadTorchModel(hapi::RepositoryLayout(o.source.repository).ModelDir(o.source.model),
                           options));
  hapi::ImageSet test = std::move(data.test);
  test.Truncate(o.samples);
  const std::vector<float> pixels = hapi::bench::ToFloatPixels(test);
  HAPI_ASSIGN_OR_RETURN(hapi::Design design, EarlyDesign(o));
  if (!o.probs_out.empty()) {
    HAPI_RETURN_IF_ERROR(WriteProbabilities(*served, pixels, test.size(), o.probs_out));
  }
  if (o.loop_seconds > 0) {
    HAPI_RETURN_IF_ERROR(Loop(served, design, pixels, test.size(), o.loop_seconds, o.torch_trace));
  }
  if (o.components) {
    HAPI_RETURN_IF_ERROR(TimeComponents(*served, pixels, test.size(), o.warmup));
  }
  if (absl::GetFlag(FLAGS_exit_accuracy)) HAPI_RETURN_IF_ERROR(ExitAccuracy(*served, test, pixels));
  if (o.time) {
    HAPI_RETURN_IF_ERROR(
        TimeDesign("full", served, hapi::Design::FinalOnly(), test, pixels, o.warmup));
    if (!o.exits.empty()) {
      HAPI_RETURN_IF_ERROR(TimeDesign(absl::StrCat("exits ", absl::StrJoin(o.exits, ",")), served,
                                      design, test, pixels, o.warmup));
    }
  }
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  Options o;
  o.source = {absl::GetFlag(FLAGS_repository), absl::GetFlag(FLAGS_model),
              absl::GetFlag(FLAGS_data_dir)};
  o.threads = absl::GetFlag(FLAGS_threads);
  o.samples = absl::GetFlag(FLAGS_samples);
  o.probs_out = absl::GetFlag(FLAGS_probs_out);
  o.time = absl::GetFlag(FLAGS_time);
  o.components = absl::GetFlag(FLAGS_components);
  o.loop_seconds = absl::GetFlag(FLAGS_loop_seconds);
  o.torch_trace = absl::GetFlag(FLAGS_torch_trace);
  o.warmup = absl::GetFlag(FLAGS_warmup);
  for (const std::string& s : absl::GetFlag(FLAGS_exits)) {
    int e;
    if (!absl::SimpleAtoi(s, &e)) {
      std::fprintf(stderr, "hapi-bench-ort-reference: bad --exits\n");
      return 2;
    }
    o.exits.push_back(e);
  }
  for (const std::string& s : absl::GetFlag(FLAGS_thresholds)) {
    float t;
    if (!absl::SimpleAtof(s, &t)) {
      std::fprintf(stderr, "hapi-bench-ort-reference: bad --thresholds\n");
      return 2;
    }
    o.thresholds.push_back(t);
  }
  if (absl::Status st = Run(o); !st.ok()) {
    std::fprintf(stderr, "hapi-bench-ort-reference: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
