#include "core/fake_model.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/files.h"
#include "core/model_metadata.h"
#include "core/status_macros.h"

namespace hapi {
namespace {

constexpr char kFakeDataset[] = "fake";

// One value per row: the sample's mean pixel.
class FakeActivations : public Activations {
 public:
  explicit FakeActivations(std::vector<float> means) : means(std::move(means)) {}
  int batch_size() const override { return static_cast<int>(means.size()); }
  void KeepRows(const std::vector<int>& rows) override {
    std::vector<float> kept;
    kept.reserve(rows.size());
    for (int r : rows) kept.push_back(means[r]);
    means.swap(kept);
  }
  std::vector<float> means;
  int stages_run = 0;
};

class FakeModel : public Model {
 public:
  FakeModel(v1::ModelManifest manifest, absl::Duration stage_time)
      : manifest_(std::move(manifest)), stage_time_(stage_time) {}

  const v1::ModelManifest& manifest() const override { return manifest_; }

  absl::StatusOr<std::unique_ptr<Activations>> Input(const float* pixels, int n) const override {
    const int size = input_size();
    std::vector<float> means(n);
    for (int i = 0; i < n; ++i) {
      double sum = 0;
      for (int p = 0; p < size; ++p) sum += pixels[static_cast<size_t>(i) * size + p];
      means[i] = static_cast<float>(sum / size);
    }
    return std::make_unique<FakeActivations>(std::move(means));
  }

  absl::Status RunStage(int stage, Activations& x) const override {
    auto& a = static_cast<FakeActivations&>(x);
    if (stage != a.stages_run) {
      return absl::FailedPreconditionError(
          absl::StrCat("fake model: stage ", stage, " after ", a.stages_run, " stages"));
    }
    ++a.stages_run;
    if (stage_time_ > absl::ZeroDuration()) absl::SleepFor(stage_time_);
    return absl::OkStatus();
  }

  absl::Status RunHead(int exit, const Activations& x,
                       std::vector<float>* probabilities) const override {
    const auto& a = static_cast<const FakeActivations&>(x);
    if (exit < 0 || exit >= num_exits() || a.stages_run != ExitStage(exit) + 1) {
      return absl::FailedPreconditionError(
          absl::StrCat("fake model: exit ", exit, " after ", a.stages_run, " stages"));
    }
    probabilities->clear();
    for (float m : a.means) {
      std::vector<float> p = FakeProbabilities(manifest_, exit, m);
      probabilities->insert(probabilities->end(), p.begin(), p.end());
    }
    return absl::OkStatus();
  }

 private:
  const v1::ModelManifest manifest_;
  const absl::Duration stage_time_;
};

}  // namespace

v1::ModelManifest FakeModelManifest(const FakeModelSpec& spec) {
  v1::ModelManifest m;
  m.set_name(spec.name);
  m.set_dataset(kFakeDataset);
  *m.mutable_input() = MakeInputSpec(spec.channels, spec.height, spec.width, 0.0f, 1.0f);
  m.mutable_input()->set_resize(spec.resize);
  for (int c = 0; c < spec.num_classes; ++c) m.add_class_names(absl::StrCat("class-", c));
  m.mutable_backbone()->set_num_classes(spec.num_classes);
  int64_t macs = 0;
  const int64_t head_macs = 100;
  for (int s = 0; s < spec.num_stages; ++s) {
    v1::StageInfo* stage = m.add_stages();
    stage->set_index(s);
    stage->set_name(absl::StrCat("stage", s));
    // The fake keeps the input's shape throughout.
    *stage->mutable_output() = InputShape(m.input());
    stage->set_macs(1000 * (s + 1));
    stage->set_layers(1);
    macs += stage->macs();
  }
  m.set_backbone_macs(macs);
  m.set_full_network_macs(macs + head_macs);
  int64_t cumulative = 0;
  for (int e = 0; e < spec.num_stages; ++e) {
    cumulative += m.stages(e).macs();
    v1::ExitInfo* exit = m.add_exits();
    exit->set_index(e);
    exit->set_after_stage(e);
    exit->set_name(absl::StrCat("exit", e));
    exit->set_macs(head_macs);
    exit->set_layers(1);
    exit->set_is_final(e == spec.num_stages - 1);
    exit->set_cumulative_macs_fraction(static_cast<double>(cumulative + head_macs) /
                                       m.full_network_macs());
  }
  return m;
}

std::vector<float> FakeProbabilities(const v1::ModelManifest& manifest, int exit, float mean) {
  const int k = manifest.class_names_size();
  const float scaled = std::clamp(mean, 0.0f, 1.0f) * k;
  const int bin = std::min(k - 1, static_cast<int>(scaled));
  const float margin = 1.0f - 2.0f * std::abs(scaled - bin - 0.5f);  // 1 at the bin centre
  const int depth = manifest.exits(exit).after_stage() + 1;
  const bool is_final = manifest.exits(exit).is_final();
  // Deeper exits are surer: margin^(stages/depth) rises towards margin.
  const float sureness = std::pow(margin, static_cast<float>(manifest.stages_size()) / depth);
  const float confidence = 1.0f / k + (1.0f - 1.0f / k) * (0.05f + 0.9f * sureness);
  const int label = !is_final && margin < 0.2f ? (bin + 1) % k : bin;
  std::vector<float> p(k, (1.0f - confidence) / (k - 1));
  p[label] = confidence;
  return p;
}

absl::StatusOr<std::shared_ptr<const Model>> MakeFakeModel(const v1::ModelManifest& manifest,
                                                           absl::Duration stage_time) {
  if (manifest.dataset() != kFakeDataset || manifest.stages_size() == 0 ||
      manifest.exits_size() != manifest.stages_size() || manifest.class_names_size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("model '", manifest.name(), "' is not a fake model's manifest"));
  }
  HAPI_RETURN_IF_ERROR(EffectiveInputSpec(manifest).status());
  return std::make_shared<FakeModel>(manifest, stage_time);
}

ModelLoader FakeModelLoader(absl::Duration stage_time) {
  return [stage_time](const std::string& model_dir,
                      const ModelOptions&) -> absl::StatusOr<std::shared_ptr<const Model>> {
    v1::ModelManifest manifest;
    HAPI_RETURN_IF_ERROR(ReadTextProto(absl::StrCat(model_dir, "/", kManifestFile), &manifest));
    return MakeFakeModel(manifest, stage_time);
  };
}

absl::StatusOr<std::shared_ptr<const Model>> LoadFakeModel(const std::string& model_dir,
                                                           const ModelOptions& options) {
  return FakeModelLoader(absl::ZeroDuration())(model_dir, options);
}

}  // namespace hapi
