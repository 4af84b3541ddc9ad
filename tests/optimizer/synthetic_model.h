// Synthetic early-exit models for the optimizer tests: a calibration table
// drawn from a fixed-seed RNG (deeper exits more accurate and more
// confident), a matching manifest, a hand-made device profile, and a writer
// for repository/models/<name>/. Header-only, no LibTorch, no gRPC.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "core/calibration_table.h"
#include "core/exit_policy.h"
#include "core/files.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "hapi/v1/device.pb.h"
#include "hapi/v1/model.pb.h"

namespace hapi {
namespace testing {

// `num_exits` exits (the last one is the final classifier). Every sample has
// a difficulty shared by all exits; exit e adds a signal to the true class's
// logit that grows with depth, and sharpens its softmax with depth, so deeper
// exits are both more accurate and more confident.
inline CalibrationTable MakeSyntheticTable(int num_samples, int num_exits, int num_classes,
                                           uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  CalibrationTable table(num_samples, num_exits, num_classes);
  std::vector<float> probs(num_classes);
  std::vector<double> logits(num_classes);
  for (int s = 0; s < num_samples; ++s) {
    const int label = static_cast<int>(rng() % static_cast<uint64_t>(num_classes));
    table.SetTrueLabel(s, label);
    const double difficulty = uniform(rng);
    for (int e = 0; e < num_exits; ++e) {
      const double depth = static_cast<double>(e + 1) / num_exits;  // (0, 1]
      const double strength = 0.6 + 4.0 * depth;
      const double sharpness = 0.9 + 0.8 * depth;
      for (int c = 0; c < num_classes; ++c) logits[c] = normal(rng);
      logits[label] += strength * (1.4 - difficulty);
      double max_logit = *std::max_element(logits.begin(), logits.end());
      double sum = 0;
      for (int c = 0; c < num_classes; ++c) sum += std::exp(sharpness * (logits[c] - max_logit));
      for (int c = 0; c < num_classes; ++c) {
        probs[c] = static_cast<float>(std::exp(sharpness * (logits[c] - max_logit)) / sum);
      }
      table.Set(e, s, ScoreProbabilities(probs.data(), num_classes));
    }
  }
  return table;
}

// Stage s is followed by exit s (the last exit is the final classifier), as
// in model/network.cc. MACs grow with depth; heads are small.
inline v1::ModelManifest MakeSyntheticManifest(const std::string& name, int num_exits,
                                               int num_classes = 10, int64_t mac_scale = 1000) {
  v1::ModelManifest m;
  m.set_name(name);
  m.set_dataset("synthetic");
  for (int c = 0; c < num_classes; ++c) m.add_class_names(absl::StrCat("class", c));
  m.mutable_backbone()->set_num_classes(num_classes);
  int64_t backbone = 0;
  for (int s = 0; s < num_exits; ++s) {
    v1::StageInfo* stage = m.add_stages();
    stage->set_index(s);
    stage->set_name(absl::StrCat("stage", s));
    stage->set_macs(mac_scale * (10 + 2 * s));
    stage->set_layers(2);
    backbone += stage->macs();
  }
  const int64_t final_head = mac_scale;
  m.set_backbone_macs(backbone);
  m.set_full_network_macs(backbone + final_head);
  int64_t cumulative = 0;
  for (int e = 0; e < num_exits; ++e) {
    cumulative += m.stages(e).macs();
    v1::ExitInfo* exit = m.add_exits();
    exit->set_index(e);
    exit->set_after_stage(e);
    exit->set_is_final(e == num_exits - 1);
    exit->set_name(exit->is_final() ? "final" : absl::StrCat("exit", e));
    exit->set_macs(exit->is_final() ? final_head : mac_scale * (1 + e));
    exit->set_layers(1);
    exit->set_cumulative_macs_fraction(static_cast<double>(cumulative + exit->macs()) /
                                       static_cast<double>(m.full_network_macs()));
  }
  m.set_validation_calibration(kValidationCalibrationFile);
  m.set_test_calibration(kTestCalibrationFile);
  m.set_created_at("2024-01-01T00:00:00Z");
  return m;
}

inline v1::PartLatency PartMs(double ms) {
  v1::PartLatency p;
  p.set_mean_s(ms * 1e-3);
  p.set_median_s(ms * 1e-3);
  p.set_p95_s(ms * 1e-3 * 1.1);
  return p;
}

// A measured-looking batch-1 profile: stage s costs (0.4 + 0.1 s) * scale ms,
// early head e costs (0.04 + 0.02 e) * scale ms, the final head 0.02 ms,
// overhead 0.05 ms.
inline v1::DeviceProfile MakeSyntheticProfile(const std::string& device,
                                              const v1::ModelManifest& manifest,
                                              double scale = 1.0) {
  v1::DeviceProfile p;
  p.set_name(device);
  p.set_model(manifest.name());
  p.set_model_macs(manifest.full_network_macs());
  p.set_intra_op_threads(1);
  p.mutable_measured()->set_hostname("test-host");
  p.mutable_measured()->set_iterations(100);
  v1::BatchProfile* b = p.add_batches();
  b->set_batch_size(1);
  const int n = manifest.exits_size();
  for (int s = 0; s < manifest.stages_size(); ++s) {
    *b->add_stages() = PartMs((0.4 + 0.1 * s) * scale);
  }
  for (int e = 0; e < n; ++e) {
    *b->add_exits() = PartMs(e == n - 1 ? 0.02 * scale : (0.04 + 0.02 * e) * scale);
  }
  *b->mutable_overhead() = PartMs(0.05 * scale);
  return p;
}

// Writes repository/models/<name>/ (manifest + both calibration tables) the
// way the trainer does, without weights: the optimizer never reads them.
inline absl::Status WriteSyntheticModel(const std::string& repository, const std::string& name,
                                        int num_exits, int num_samples, uint64_t seed,
                                        int64_t mac_scale = 1000) {
  const std::string dir = RepositoryLayout(repository).ModelDir(name);
  if (absl::Status st = MakeDirectories(dir); !st.ok()) return st;
  v1::ModelManifest manifest = MakeSyntheticManifest(name, num_exits, 10, mac_scale);
  CalibrationTable validation = MakeSyntheticTable(num_samples, num_exits, 10, seed);
  CalibrationTable test = MakeSyntheticTable(num_samples, num_exits, 10, seed + 1000003);
  if (absl::Status st = WriteFileAtomically(absl::StrCat(dir, "/", kValidationCalibrationFile),
                                            validation.Serialize());
      !st.ok()) {
    return st;
  }
  if (absl::Status st =
          WriteFileAtomically(absl::StrCat(dir, "/", kTestCalibrationFile), test.Serialize());
      !st.ok()) {
    return st;
  }
  return WriteTextProtoAtomically(absl::StrCat(dir, "/", kManifestFile), manifest);
}

// The same samples as `fp32` with each prediction, at every exit,
// independently replaced by a wrong class with probability `flip` (its
// scores kept): an int8 path that loses some accuracy. flip 0 is an exact
// copy. The fp32 table is its reference (CalibrationTable::SetReference).
inline CalibrationTable MakeInt8Table(const CalibrationTable& fp32, double flip, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  CalibrationTable out(fp32.num_samples(), fp32.num_exits(), fp32.num_classes());
  for (int s = 0; s < fp32.num_samples(); ++s) {
    out.SetTrueLabel(s, fp32.true_label(s));
    for (int e = 0; e < fp32.num_exits(); ++e) {
      ExitScores scores;
      scores.label = fp32.predicted(e, s);
      for (int p = 0; p < kNumExitPolicies; ++p) {
        scores.scores[p] = fp32.score(static_cast<ExitPolicy>(p), e, s);
      }
      if (uniform(rng) < flip) scores.label = (fp32.true_label(s) + 1) % fp32.num_classes();
      out.Set(e, s, scores);
    }
  }
  (void)out.SetReference(fp32);
  return out;
}

// Adds int8 calibration tables (MakeInt8Table of the fp32 ones) to a model
// WriteSyntheticModel wrote, and names them in its manifest, as
// hapi-quantize does.
inline absl::Status AddSyntheticInt8Tables(const std::string& repository, const std::string& name,
                                           double flip, uint64_t seed) {
  const std::string dir = RepositoryLayout(repository).ModelDir(name);
  absl::StatusOr<ModelMetadata> m = LoadModelMetadata(dir);
  if (!m.ok()) return m.status();
  for (auto [table, file] : {std::pair{&m->validation, kInt8ValidationCalibrationFile},
                             std::pair{&m->test, kInt8TestCalibrationFile}}) {
    if (absl::Status st = WriteFileAtomically(absl::StrCat(dir, "/", file),
                                              MakeInt8Table(*table, flip, seed).Serialize());
        !st.ok()) {
      return st;
    }
  }
  m->manifest.set_int8_validation_calibration(kInt8ValidationCalibrationFile);
  m->manifest.set_int8_test_calibration(kInt8TestCalibrationFile);
  return WriteTextProtoAtomically(absl::StrCat(dir, "/", kManifestFile), m->manifest);
}

// Adds an INT8 batch-1 table to `profile`: its FP32 one times `scale`.
inline void AddInt8Latencies(v1::DeviceProfile* profile, double scale) {
  v1::BatchProfile int8 = profile->batches(0);
  int8.set_precision(v1::INT8);
  auto times = [&](v1::PartLatency* p) {
    p->set_mean_s(p->mean_s() * scale);
    p->set_median_s(p->median_s() * scale);
    p->set_p95_s(p->p95_s() * scale);
  };
  for (auto& s : *int8.mutable_stages()) times(&s);
  for (auto& e : *int8.mutable_exits()) times(&e);
  times(int8.mutable_overhead());
  *profile->add_batches() = std::move(int8);
}

}  // namespace testing
}  // namespace hapi
