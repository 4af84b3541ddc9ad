// hapi-bench-gmacs: how much of one core's fp32 FMA peak each model reaches
// at batch 1, on the direct path (ModelOptions::direct, model/direct_program.h)
// and on LibTorch running the same network (direct=false).
//
//   hapi-bench-gmacs --models=DIR1,DIR2 [--threads=1] [--seconds=S | --samples=N]
//                    [--rounds=3] [--json]
//
// Each model directory (the residual network, or a graph hapi-import wrote) is
// loaded twice, once per path. A measurement runs batch-1 requests through the
// seam exactly as the executor does for the full network (Input, every
// RunStage, the final RunHead), on fixed pseudo-random pixels of the model's
// input_shape(), timing the whole request and each piece of it. Rounds
// alternate the paths (direct first in even rounds, LibTorch first in odd
// ones) so both see the same machine; every latency reported is the median
// over rounds of a round's median, and LibTorch/direct the median over rounds
// of the ratio within a round.
//
// GMAC/s = manifest MACs / median latency (full_network_macs for a request, a
// stage's macs for the stage). The peak is measured here (bench/fma_peak.cc:
// vector FMAs on independent chains, one thread) and derived as lanes x FMA
// units x clock; percentages use the measured one.
//
// Output: with --json, JSON lines ("what": "fma_peak", "model", "stage");
// then markdown tables (models, then stages per model).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "bench/common.h"
#include "bench/fma_peak.h"
#include "core/model.h"
#include "core/status_macros.h"
#include "model/direct_program.h"
#include "model/imported_model.h"
#include "model/torch_model.h"

ABSL_FLAG(std::vector<std::string>, models, {}, "Model directories (comma-separated)");
ABSL_FLAG(int32_t, threads, 1, "Intra-op threads (both paths)");
ABSL_FLAG(double, seconds, 0, "Seconds per measurement (overrides --samples when > 0)");
ABSL_FLAG(int32_t, samples, 200, "Batch-1 requests per measurement");
ABSL_FLAG(int32_t, warmup, 30, "Untimed requests before each measurement");
ABSL_FLAG(int32_t, rounds, 3, "Measurements per path, alternating direct and LibTorch");
ABSL_FLAG(int32_t, images, 16, "Distinct pseudo-random input images, cycled");
ABSL_FLAG(bool, json, true, "Print JSON lines before the tables");
ABSL_FLAG(double, peak_seconds, 1.0,
          "Seconds of ~50 us FMA and clock bursts, before and after the models (medians)");

namespace {

using hapi::bench::Now;

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ---------------------------------------------------------------- FMA peak

struct Peak {
  std::string isa;  // "avx512f" or "avx2"
  int lanes = 0;    // fp32 per vector FMA
  int chains = 0;
  double cpu_mhz = 0;       // /proc/cpuinfo "cpu MHz" (0: not found)
  double clock_hz = 0;      // measured (dependent adds, median burst), one thread
  double measured = 0;      // MAC/s, one thread (median burst)
  double measured_max = 0;  // the fastest burst
  int bursts = 0, sessions = 0;
  std::vector<double> burst_macs_per_s, burst_hz;
  double fma_per_cycle = 0;    // measured / (lanes x measured clock): FMA units busy
  int fma_units = 0;           // fma_per_cycle rounded (at least 1)
  double derived = 0;          // lanes x fma_units x measured clock, MAC/s
  double derived_cpuinfo = 0;  // lanes x fma_units x cpuinfo clock, MAC/s
};

// /proc/cpuinfo's first "flags" and "cpu MHz" lines.
void ReadCpuInfo(std::string* flags, double* mhz) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  bool have_flags = false, have_mhz = false;
  while (std::getline(in, line) && !(have_flags && have_mhz)) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits(':', 1));
    const absl::string_view key = absl::StripAsciiWhitespace(kv.first);
    const absl::string_view value = absl::StripAsciiWhitespace(kv.second);
    if (!have_flags && key == "flags") {
      *flags = std::string(value);
      have_flags = true;
    } else if (!have_mhz && key == "cpu MHz") {
      have_mhz = absl::SimpleAtod(value, mhz);
    }
  }
}

// Adds `seconds` of bursts to `p` (the first call sets it up) and updates the
// medians over all its bursts: called before and after the models, so that
// the peak sees the clock of the whole run (it follows the load of the other
// core).
void MeasurePeak(double seconds, Peak* peak) {
  Peak& p = *peak;
  std::string flags;
  ReadCpuInfo(&flags, &p.cpu_mhz);
  const std::vector<absl::string_view> f = absl::StrSplit(flags, ' ', absl::SkipEmpty());
  const bool avx512 = std::find(f.begin(), f.end(), "avx512f") != f.end();
  p.isa = avx512 ? "avx512f" : "avx2";
  p.lanes = avx512 ? 16 : 8;
  p.chains = avx512 ? hapi::bench::kFmaChainsAvx512 : hapi::bench::kFmaChainsAvx2;
  auto fma = [&](int64_t iterations) {
    return avx512 ? hapi::bench::FmaChainsAvx512(iterations)
                  : hapi::bench::FmaChainsAvx2(iterations);
  };
  // Short bursts (~50 us, like a stage), FMA and the clock loop alternated
  // for `seconds`; the median burst of each. Long runs would be cut by other
  // processes on this shared machine, which the per-stage medians (tens of
  // microseconds each) mostly are not: the same rule for both.
  volatile float fsink = 0;
  volatile uint64_t isink = 0;
  auto per_iteration = [&](auto&& loop, int64_t n) {
    double best = 1e9;
    for (int i = 0; i < 20; ++i) {
      const double t0 = Now();
      loop(n);
      best = std::min(best, (Now() - t0) / n);
    }
    return best;
  };
  auto fma_loop = [&](int64_t n) { fsink = fsink + fma(n); };
  auto add_loop = [&](int64_t n) { isink = isink + hapi::bench::DependentAdds(n); };
  constexpr double kBurst = 50e-6;
  const int64_t fma_n =
      std::max<int64_t>(1, static_cast<int64_t>(kBurst / per_iteration(fma_loop, 1 << 12)));
  const int64_t add_n =
      std::max<int64_t>(1, static_cast<int64_t>(kBurst / per_iteration(add_loop, 1 << 8)));
  std::vector<double>& macs_per_s = p.burst_macs_per_s;
  std::vector<double>& hz = p.burst_hz;
  const double start = Now();
  while (Now() - start < seconds || macs_per_s.size() < 11) {
    double t0 = Now();
    fma_loop(fma_n);
    double dt = Now() - t0;
    macs_per_s.push_back(static_cast<double>(fma_n) * p.chains * p.lanes / dt);
    t0 = Now();
    add_loop(add_n);
    dt = Now() - t0;
    hz.push_back(static_cast<double>(add_n) * hapi::bench::kAddChain / dt);
  }
  p.sessions += 1;
  p.bursts = static_cast<int>(macs_per_s.size());
  p.measured = Median(macs_per_s);
  p.measured_max = *std::max_element(macs_per_s.begin(), macs_per_s.end());
  p.clock_hz = Median(hz);
  p.fma_per_cycle = p.measured / (p.lanes * p.clock_hz);
  p.fma_units = static_cast<int>(std::max(1.0, std::round(p.fma_per_cycle)));
  p.derived = p.lanes * p.fma_units * p.clock_hz;
  p.derived_cpuinfo = p.lanes * p.fma_units * p.cpu_mhz * 1e6;
}

// ---------------------------------------------------------------- models

struct PathTimes {  // one measurement: per request, seconds
  std::vector<double> full, input, head;
  std::vector<std::vector<double>> stage;
};

struct PathResult {  // medians over rounds of each round's median, seconds
  std::vector<double> round_full;
  double full = 0, input = 0, head = 0;
  std::vector<double> stage;
};

struct Loaded {
  std::shared_ptr<const hapi::Model> model;
  std::string direct_in_use;  // "yes", "no", "unknown"
};

std::string DirectInUse(const hapi::Model& model) {
  if (const auto* imported = dynamic_cast<const hapi::ImportedModel*>(&model)) {
    return imported->direct_program() != nullptr ? "yes" : "no";
  }
  return "unknown";  // the residual network exposes no such accessor
}

absl::StatusOr<Loaded> Load(const std::string& dir, bool direct) {
  hapi::ModelOptions options;
  options.direct = direct;
  Loaded l;
  HAPI_ASSIGN_OR_RETURN(l.model, hapi::LoadTorchModel(dir, options));
  l.direct_in_use = DirectInUse(*l.model);
  return l;
}

// One batch-1 request as the executor runs the full network; `t` gets the
// time of each piece when non-null.
absl::Status Request(const hapi::Model& m, const float* pixels, std::vector<float>* probs,
                     PathTimes* t) {
  const double t0 = Now();
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<hapi::Activations> x, m.Input(pixels, 1));
  double prev = Now();
  if (t) t->input.push_back(prev - t0);
  for (int s = 0; s < m.num_stages(); ++s) {
    HAPI_RETURN_IF_ERROR(m.RunStage(s, *x));
    const double now = Now();
    if (t) t->stage[s].push_back(now - prev);
    prev = now;
  }
  HAPI_RETURN_IF_ERROR(m.RunHead(m.final_exit(), *x, probs));
  const double end = Now();
  if (t) {
    t->head.push_back(end - prev);
    t->full.push_back(end - t0);
  }
  return absl::OkStatus();
}

struct Plan {
  double seconds = 0;
  int samples = 200, warmup = 30;
};

absl::StatusOr<PathTimes> Measure(const hapi::Model& m, const std::vector<float>& pixels,
                                  int images, const Plan& plan) {
  const size_t size = m.input_size();
  std::vector<float> probs;
  for (int i = 0; i < plan.warmup; ++i) {
    HAPI_RETURN_IF_ERROR(Request(m, pixels.data() + (i % images) * size, &probs, nullptr));
  }
  PathTimes t;
  t.stage.resize(m.num_stages());
  const double start = Now();
  for (int i = 0;; ++i) {
    if (plan.seconds > 0 ? (i >= 10 && Now() - start >= plan.seconds) : i >= plan.samples) break;
    HAPI_RETURN_IF_ERROR(Request(m, pixels.data() + (i % images) * size, &probs, &t));
  }
  return t;
}

PathResult Summarise(const std::vector<PathTimes>& rounds, int stages) {
  PathResult r;
  std::vector<double> input, head;
  std::vector<std::vector<double>> stage(stages);
  for (const PathTimes& t : rounds) {
    r.round_full.push_back(Median(t.full));
    input.push_back(Median(t.input));
    head.push_back(Median(t.head));
    for (int s = 0; s < stages; ++s) stage[s].push_back(Median(t.stage[s]));
  }
  r.full = Median(r.round_full);
  r.input = Median(input);
  r.head = Median(head);
  for (auto& v : stage) r.stage.push_back(Median(v));
  return r;
}

struct ModelResult {
  std::string dir, name, input, direct_in_use, libtorch_direct;
  int64_t full_macs = 0;
  int64_t head_macs = 0;
  hapi::v1::ModelManifest manifest;
  PathResult direct, libtorch;
  double max_prob_diff = 0;
};

double Gmacs(int64_t macs, double seconds) { return seconds > 0 ? macs / seconds / 1e9 : 0; }

std::string Shape(const hapi::v1::TensorShape& s) {
  return absl::StrCat(s.channels(), "x", s.height(), "x", s.width());
}

std::string Ms(const std::vector<double>& v) {
  std::vector<std::string> out;
  for (double x : v) out.push_back(absl::StrFormat("%.4f", x * 1e3));
  return absl::StrJoin(out, ",");
}

absl::StatusOr<ModelResult> RunModel(const std::string& dir, int rounds, int images,
                                     const Plan& plan) {
  HAPI_ASSIGN_OR_RETURN(Loaded direct, Load(dir, true));
  HAPI_ASSIGN_OR_RETURN(Loaded libtorch, Load(dir, false));
  const hapi::Model& d = *direct.model;
  const hapi::Model& l = *libtorch.model;
  ModelResult r;
  r.dir = dir;
  r.manifest = d.manifest();
  r.name = r.manifest.name();
  r.input = Shape(d.input_shape());
  r.direct_in_use = direct.direct_in_use;
  r.libtorch_direct = libtorch.direct_in_use;
  r.full_macs = r.manifest.full_network_macs();
  r.head_macs = r.manifest.exits(d.final_exit()).macs();
  if (d.input_size() != l.input_size() || d.num_stages() != l.num_stages()) {
    return absl::InternalError(absl::StrCat(dir, ": the two loads disagree"));
  }
  // Fixed pseudo-random pixels in [0,1] of the model's own input shape.
  std::mt19937 rng(20261208);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> pixels(static_cast<size_t>(images) * d.input_size());
  for (float& p : pixels) p = uniform(rng);

  // Both paths compute the same network: compare their probabilities.
  for (int i = 0; i < images; ++i) {
    std::vector<float> pd, pl;
    HAPI_RETURN_IF_ERROR(Request(d, pixels.data() + i * d.input_size(), &pd, nullptr));
    HAPI_RETURN_IF_ERROR(Request(l, pixels.data() + i * l.input_size(), &pl, nullptr));
    if (pd.size() != pl.size()) return absl::InternalError(absl::StrCat(dir, ": class counts"));
    for (size_t k = 0; k < pd.size(); ++k) {
      r.max_prob_diff = std::max(r.max_prob_diff, static_cast<double>(std::fabs(pd[k] - pl[k])));
    }
  }

  std::vector<PathTimes> dt, lt;
  for (int round = 0; round < rounds; ++round) {
    for (int k = 0; k < 2; ++k) {
      const bool run_direct = (k == 0) == (round % 2 == 0);
      HAPI_ASSIGN_OR_RETURN(PathTimes t, Measure(run_direct ? d : l, pixels, images, plan));
      std::fprintf(stderr, "  %s round %d %s: p50 %.4f ms (%zu requests)\n", r.name.c_str(), round,
                   run_direct ? "direct" : "libtorch", Median(t.full) * 1e3, t.full.size());
      (run_direct ? dt : lt).push_back(std::move(t));
    }
  }
  r.direct = Summarise(dt, d.num_stages());
  r.libtorch = Summarise(lt, d.num_stages());
  return r;
}

// ---------------------------------------------------------------- output

// LibTorch / direct of the two measurements of each round, which ran back to
// back: steadier than the ratio of medians when the machine's load changes.
std::vector<double> RoundRatios(const ModelResult& r) {
  std::vector<double> out;
  for (size_t i = 0; i < r.direct.round_full.size() && i < r.libtorch.round_full.size(); ++i) {
    if (r.direct.round_full[i] > 0)
      out.push_back(r.libtorch.round_full[i] / r.direct.round_full[i]);
  }
  return out;
}

void PrintJson(const Peak& p, const std::vector<ModelResult>& results, int threads) {
  absl::PrintF(
      "{\"what\":\"fma_peak\",\"isa\":\"%s\",\"lanes\":%d,\"chains\":%d,\"threads\":1,"
      "\"measured_gmacs\":%.3f,\"max_burst_gmacs\":%.3f,\"bursts\":%d,\"clock_mhz\":%.1f,\"fma_per_"
      "cycle\":%.3f,\"fma_units\":%d,"
      "\"derived_gmacs\":%.3f,\"cpuinfo_mhz\":%.3f,\"derived_cpuinfo_gmacs\":%.3f}\n",
      p.isa, p.lanes, p.chains, p.measured / 1e9, p.measured_max / 1e9, p.bursts, p.clock_hz / 1e6,
      p.fma_per_cycle, p.fma_units, p.derived / 1e9, p.cpu_mhz, p.derived_cpuinfo / 1e9);
  for (const ModelResult& r : results) {
    auto path = [&](const PathResult& x) {
      return absl::StrFormat(
          "{\"p50_ms\":%.4f,\"round_p50_ms\":[%s],\"input_ms\":%.4f,\"head_ms\":%.4f,"
          "\"gmacs\":%.3f,\"peak_pct\":%.2f}",
          x.full * 1e3, Ms(x.round_full), x.input * 1e3, x.head * 1e3, Gmacs(r.full_macs, x.full),
          100 * Gmacs(r.full_macs, x.full) * 1e9 / p.measured);
    };
    absl::PrintF(
        "{\"what\":\"model\",\"model\":\"%s\",\"dir\":\"%s\",\"input\":\"%s\",\"threads\":%d,"
        "\"full_network_macs\":%d,\"direct_in_use\":\"%s\",\"libtorch_load_direct\":\"%s\","
        "\"max_abs_prob_diff\":%.3g,\"direct\":%s,\"libtorch\":%s,"
        "\"libtorch_over_direct\":%.3f,\"round_ratios\":[%s],\"round_ratio_median\":%.3f}\n",
        r.name, r.dir, r.input, threads, r.full_macs, r.direct_in_use, r.libtorch_direct,
        r.max_prob_diff, path(r.direct), path(r.libtorch),
        r.direct.full > 0 ? r.libtorch.full / r.direct.full : 0,
        absl::StrJoin(RoundRatios(r), ",",
                      [](std::string* out, double x) { absl::StrAppendFormat(out, "%.3f", x); }),
        Median(RoundRatios(r)));
    for (int s = 0; s < r.manifest.stages_size(); ++s) {
      const hapi::v1::StageInfo& st = r.manifest.stages(s);
      absl::PrintF(
          "{\"what\":\"stage\",\"model\":\"%s\",\"stage\":%d,\"name\":\"%s\",\"output\":\"%s\","
          "\"layers\":%d,\"macs\":%d,\"direct_p50_ms\":%.4f,\"direct_gmacs\":%.3f,"
          "\"libtorch_p50_ms\":%.4f,\"libtorch_gmacs\":%.3f}\n",
          r.name, s, st.name(), Shape(st.output()), st.layers(), st.macs(), r.direct.stage[s] * 1e3,
          Gmacs(st.macs(), r.direct.stage[s]), r.libtorch.stage[s] * 1e3,
          Gmacs(st.macs(), r.libtorch.stage[s]));
    }
  }
}

// Long ONNX tensor names: keep the informative tail.
std::string ShortName(const std::string& name) {
  constexpr size_t kMax = 36;
  return name.size() <= kMax ? name : absl::StrCat("...", name.substr(name.size() - kMax + 3));
}

void PrintTables(const Peak& p, const std::vector<ModelResult>& results, int threads) {
  absl::PrintF(
      "\nfp32 FMA peak, one thread (%s, %d lanes, %d independent chains): measured %.1f "
      "GMAC/s (median of %d ~50 us bursts before and after the models; fastest %.1f).\n"
      "Derived: %d lanes x %d FMA/cycle x clock. Clock measured (dependent adds) %.0f MHz -> "
      "%.1f GMAC/s (the FMA loop ran %.2f FMA/cycle at that clock); /proc/cpuinfo's cpu MHz "
      "%.0f -> %.1f GMAC/s.\n"
      "%% of peak below uses the measured %.1f GMAC/s.\n\n",
      p.isa, p.lanes, p.chains, p.measured / 1e9, p.bursts, p.measured_max / 1e9, p.lanes,
      p.fma_units, p.clock_hz / 1e6, p.derived / 1e9, p.fma_per_cycle, p.cpu_mhz,
      p.derived_cpuinfo / 1e9, p.measured / 1e9);
  absl::PrintF(
      "| model | input | GMAC | direct p50 ms | LibTorch p50 ms | LibTorch/direct | direct GMAC/s "
      "| %% peak | LibTorch GMAC/s | %% peak | direct path |\n");
  absl::PrintF("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
  for (const ModelResult& r : results) {
    const double gd = Gmacs(r.full_macs, r.direct.full), gl = Gmacs(r.full_macs, r.libtorch.full);
    absl::PrintF("| %s | %s | %.4f | %.3f | %.3f | %.2fx | %.2f | %.1f%% | %.2f | %.1f%% | %s |\n",
                 r.name, r.input, r.full_macs / 1e9, r.direct.full * 1e3, r.libtorch.full * 1e3,
                 Median(RoundRatios(r)), gd, 100 * gd * 1e9 / p.measured, gl,
                 100 * gl * 1e9 / p.measured, r.direct_in_use);
  }
  absl::PrintF(
      "\n(batch 1, %d intra-op thread(s); latencies: medians over rounds of per-round medians; "
      "LibTorch/direct: median over rounds of the round's ratio)\n",
      threads);
  for (const ModelResult& r : results) {
    absl::PrintF("\n%s: per stage (medians inside full requests)\n\n", r.name);
    absl::PrintF(
        "| stage | name | output | layers | MMAC | direct ms | direct GMAC/s | LibTorch ms | "
        "LibTorch GMAC/s |\n");
    absl::PrintF("|---:|---|---|---:|---:|---:|---:|---:|---:|\n");
    absl::PrintF("| in | Input | %s | | | %.4f | | %.4f | |\n", r.input, r.direct.input * 1e3,
                 r.libtorch.input * 1e3);
    for (int s = 0; s < r.manifest.stages_size(); ++s) {
      const hapi::v1::StageInfo& st = r.manifest.stages(s);
      absl::PrintF("| %d | %s | %s | %d | %.3f | %.4f | %.2f | %.4f | %.2f |\n", s,
                   ShortName(st.name()), Shape(st.output()), st.layers(), st.macs() / 1e6,
                   r.direct.stage[s] * 1e3, Gmacs(st.macs(), r.direct.stage[s]),
                   r.libtorch.stage[s] * 1e3, Gmacs(st.macs(), r.libtorch.stage[s]));
    }
    absl::PrintF(
        "| head | final exit + softmax | %d classes | | %.3f | %.4f | %.2f | %.4f | %.2f |\n",
        r.manifest.class_names_size(), r.head_macs / 1e6, r.direct.head * 1e3,
        Gmacs(r.head_macs, r.direct.head), r.libtorch.head * 1e3,
        Gmacs(r.head_macs, r.libtorch.head));
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::vector<std::string> dirs = absl::GetFlag(FLAGS_models);
  if (dirs.empty()) {
    std::fprintf(stderr, "hapi-bench-gmacs: --models=DIR1,DIR2,... is required\n");
    return 2;
  }
  const int threads = absl::GetFlag(FLAGS_threads);
  Plan plan;
  plan.seconds = absl::GetFlag(FLAGS_seconds);
  plan.samples = absl::GetFlag(FLAGS_samples);
  plan.warmup = absl::GetFlag(FLAGS_warmup);
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  const int images = std::max(1, absl::GetFlag(FLAGS_images));

  Peak peak;
  MeasurePeak(absl::GetFlag(FLAGS_peak_seconds), &peak);
  std::fprintf(stderr, "FMA peak (%s, one thread): %.2f GMAC/s, clock %.0f MHz\n", peak.isa.c_str(),
               peak.measured / 1e9, peak.clock_hz / 1e6);
  hapi::SetIntraOpThreads(threads);
  std::vector<ModelResult> results;
  for (const std::string& dir : dirs) {
    std::fprintf(stderr, "%s\n", dir.c_str());
    absl::StatusOr<ModelResult> r = RunModel(dir, rounds, images, plan);
    if (!r.ok()) {
      std::fprintf(stderr, "hapi-bench-gmacs: %s: %s\n", dir.c_str(),
                   std::string(r.status().message()).c_str());
      return 1;
    }
    results.push_back(*std::move(r));
  }
  MeasurePeak(absl::GetFlag(FLAGS_peak_seconds), &peak);
  std::fprintf(stderr, "FMA peak, before and after: %.2f GMAC/s, clock %.0f MHz\n",
               peak.measured / 1e9, peak.clock_hz / 1e6);
  if (absl::GetFlag(FLAGS_json)) PrintJson(peak, results, threads);
  PrintTables(peak, results, threads);
  return 0;
}
