#include "model/imported_exits.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/exit_policy.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "core/model_metadata.h"
#include "core/model_report.h"
#include "core/progress_bar.h"
#include "core/status_macros.h"
#include "model/imported_activations.h"
#include "model/imported_model.h"
#include "model/network.h"

namespace hapi {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

constexpr int kSmallestConv = 8;        // halving the head conv stops here
constexpr int kReadBatch = 256;         // samples per pass through the stages
constexpr float kBatchNormEps = 1e-5f;  // torch::nn::BatchNorm2d's default

absl::Status CheckOptions(const ImportedExitOptions& o) {
  if (o.epochs < 1 || o.batch_size < 1 || !(o.learning_rate > 0) ||
      !(o.max_head_macs_fraction > 0) || o.exit_conv_channels < 0 || o.train_limit < 0 ||
      o.calibration_limit < 0 || o.feature_cache_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "invalid exit training options: epochs %d, batch %d, rate %g, head "
        "budget %g, conv %d, limits %d/%d, cache %d bytes",
        o.epochs, o.batch_size, o.learning_rate, o.max_head_macs_fraction, o.exit_conv_channels,
        o.train_limit, o.calibration_limit, o.feature_cache_bytes));
  }
  return absl::OkStatus();
}

// Linear warm-up over `warmup` steps, then cosine decay to zero (as the
// native trainer schedules its exits).
double ScheduledRate(double base, int64_t step, int64_t total, int64_t warmup) {
  if (step < warmup) return base * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const double progress = static_cast<double>(step - warmup) /
                          static_cast<double>(std::max<int64_t>(1, total - warmup));
  return 0.5 * base * (1.0 + std::cos(M_PI * progress));
}

// A data set that fits the model: its images are the model's input shape and
// its classes are the model's.
absl::Status CheckData(const Model& model, const LabelledSplits& data) {
  const v1::InputSpec& spec = model.input_spec();
  for (const auto& [split, images] :
       {std::pair{"train", data.train.get()}, std::pair{"validation", data.validation.get()},
        std::pair{"test", data.test.get()}}) {
    if (images == nullptr || images->size() == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("data set ", data.dataset, " has no ", split, " images"));
    }
    const v1::TensorShape shape = images->shape();
    if (shape.channels() != spec.channels() || shape.height() != spec.height() ||
        shape.width() != spec.width()) {
      return absl::InvalidArgumentError(
          absl::StrCat("data set ", data.dataset, "'s ", split, " images are ",
                       ShapeString(shape.channels(), shape.height(), shape.width()), " but model ",
                       model.manifest().name(), " eats ", ShapeString(spec)));
    }
  }
  if (static_cast<int>(data.class_names.size()) != model.num_classes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("data set ", data.dataset, " has ", data.class_names.size(),
                     " classes but model ", model.manifest().name(), " has ", model.num_classes()));
  }
  return absl::OkStatus();
}

// Per-sample floats the trainer keeps for a head: the stage output for a head
// with a conv; for one without, the output already average-pooled to its
// pool x pool (a fixed, parameter-free first step), which is far smaller.
int64_t CachedFloats(const v1::TensorShape& stage, const ExitHeadChoice& h) {
  if (h.conv_channels > 0) return int64_t{stage.channels()} * stage.height() * stage.width();
  return int64_t{stage.channels()} * h.pool * h.pool;
}

// The training images' features at every early exit, computed by the
// imported model's inference path (its stages, as the server runs them).
struct FeatureCache {
  std::vector<torch::Tensor> inputs;  // per head: N x C x H x W (NCHW, contiguous)
  std::vector<int64_t> labels;
};

absl::StatusOr<FeatureCache> ComputeFeatures(const ImportedModel& model,
                                             const LabelledImages& images,
                                             const std::vector<ExitHeadChoice>& heads,
                                             bool progress) {
  const v1::ModelManifest& m = model.manifest();
  const int n = images.size();
  FeatureCache cache;
  cache.labels.resize(n);
  for (const ExitHeadChoice& h : heads) {
    const v1::TensorShape& s = m.stages(model.ExitStage(h.exit)).output();
    const int64_t side_h = h.conv_channels > 0 ? s.height() : h.pool;
    const int64_t side_w = h.conv_channels > 0 ? s.width() : h.pool;
    cache.inputs.push_back(torch::empty({n, s.channels(), side_h, side_w}));
  }
  const int last_stage = model.ExitStage(heads.back().exit);
  std::unique_ptr<ProgressBar> bar;
  if (progress) bar = std::make_unique<ProgressBar>("features", n);
  std::vector<float> pixels;
  const int64_t sample_size = model.input_size();
  torch::NoGradGuard no_grad;
  for (int begin = 0; begin < n; begin += kReadBatch) {
    const int count = std::min(kReadBatch, n - begin);
    pixels.resize(static_cast<size_t>(count) * sample_size);
    for (int i = 0; i < count; ++i) {
      images.Read(begin + i, pixels.data() + i * sample_size);
      cache.labels[begin + i] = images.label(begin + i);
    }
    HAPI_ASSIGN_OR_RETURN(std::unique_ptr<Activations> x, model.Input(pixels.data(), count));
    size_t next = 0;  // the next head to fill
    for (int s = 0; s <= last_stage; ++s) {
      HAPI_RETURN_IF_ERROR(model.RunStage(s, *x));
      for (; next < heads.size() && model.ExitStage(heads[next].exit) == s; ++next) {
        const ExitHeadChoice& h = heads[next];
        const torch::Tensor t = ImportedTensor(model, *x);
        torch::Tensor features =
            h.conv_channels > 0 ? t : torch::adaptive_avg_pool2d(t, {h.pool, h.pool});
        cache.inputs[next].narrow(0, begin, count).copy_(features);
      }
    }
    if (bar) bar->Update(begin + count);
  }
  if (bar) bar->Finish();
  return cache;
}

// Trains every head jointly (the sum of their cross-entropies; they share no
// parameters, so each learns as if alone) with Adam.
struct TrainedHeads {
  std::vector<ExitHead> modules;
  std::vector<double> epoch_seconds;
  std::vector<double> epoch_loss;
  std::vector<double> last_epoch_accuracy;
};

// The heads' modules, built in order (their initial weights drawn from the
// generator as seeded), and all their parameters, for the optimizer.
std::vector<ExitHead> BuildHeads(const ImportedModel& model,
                                 const std::vector<ExitHeadChoice>& heads,
                                 std::vector<torch::Tensor>* parameters) {
  const v1::ModelManifest& m = model.manifest();
  std::vector<ExitHead> modules;
  for (const ExitHeadChoice& h : heads) {
    const v1::TensorShape& s = m.stages(model.ExitStage(h.exit)).output();
    ExitHead head(s.channels(), std::min(s.height(), s.width()), h.conv_channels, h.pool,
                  model.num_classes());
    for (const auto& p : head->parameters()) parameters->push_back(p);
    modules.push_back(head);
  }
  return modules;
}

// The learning-rate schedule's step counts.
struct StepSchedule {
  int64_t per_epoch = 0;
  int64_t total = 0;
  int64_t warmup = 0;
};

// One optimizer step of every head on the samples order[begin, begin + count)
// at `rate`: adds each head's correct predictions to `hits` and returns the
// summed loss.
double TrainStep(std::vector<ExitHead>& modules, torch::optim::Adam& optimizer,
                 const FeatureCache& cache, const torch::Tensor& labels,
                 const std::vector<int>& order, int begin, int count, double rate,
                 std::vector<int64_t>* hits) {
  const torch::Tensor index =
      torch::tensor(std::vector<int64_t>(order.begin() + begin, order.begin() + begin + count));
  const torch::Tensor y = labels.index_select(0, index);
  for (auto& group : optimizer.param_groups()) group.options().set_lr(rate);
  optimizer.zero_grad();
  torch::Tensor loss = torch::zeros({});
  for (size_t k = 0; k < modules.size(); ++k) {
    const torch::Tensor logits = modules[k]->forward(cache.inputs[k].index_select(0, index));
    loss = loss + torch::nn::functional::cross_entropy(logits, y);
    (*hits)[k] += logits.argmax(1).eq(y).sum().item<int64_t>();
  }
  loss.backward();
  optimizer.step();
  return loss.item<double>();
}

// One epoch over the cached features in a seeded order; records its time,
// mean loss and the heads' accuracies in `out`.
void TrainEpoch(int epoch, const FeatureCache& cache, const torch::Tensor& labels,
                const StepSchedule& schedule, const ImportedExitOptions& options,
                torch::optim::Adam& optimizer, int64_t* step, TrainedHeads* out) {
  const int n = static_cast<int>(cache.labels.size());
  const int num_heads = static_cast<int>(out->modules.size());
  const Clock::time_point epoch_start = Clock::now();
  for (auto& head : out->modules) head->train(true);
  std::unique_ptr<ProgressBar> bar;
  if (options.progress) {
    bar = std::make_unique<ProgressBar>(
        absl::StrFormat("exits epoch %d/%d", epoch + 1, options.epochs), schedule.per_epoch);
  }
  const std::vector<int> order = SeededPermutation(n, options.seed * 1000 + 500 + epoch);
  double loss_sum = 0;
  std::vector<int64_t> hits(num_heads, 0);
  int64_t seen = 0;
  for (int begin = 0; begin < n; begin += options.batch_size) {
    const int count = std::min(options.batch_size, n - begin);
    const double rate =
        ScheduledRate(options.learning_rate, *step, schedule.total, schedule.warmup);
    const double loss =
        TrainStep(out->modules, optimizer, cache, labels, order, begin, count, rate, &hits);
    loss_sum += loss / num_heads * count;
    seen += count;
    ++*step;
    if (bar) {
      bar->Update(begin / options.batch_size + 1,
                  absl::StrFormat("mean loss %.3f first-exit acc %.1f%% last-exit acc %.1f%%",
                                  loss_sum / seen, 100.0 * hits.front() / seen,
                                  100.0 * hits.back() / seen));
    }
  }
  out->epoch_seconds.push_back(SecondsSince(epoch_start));
  out->epoch_loss.push_back(loss_sum / std::max<int64_t>(1, seen));
  out->last_epoch_accuracy.clear();
  for (int64_t h : hits) out->last_epoch_accuracy.push_back(static_cast<double>(h) / seen);
  if (bar) bar->Finish(absl::StrFormat("mean loss %.3f", out->epoch_loss.back()));
}

TrainedHeads TrainHeads(const ImportedModel& model, const FeatureCache& cache,
                        const std::vector<ExitHeadChoice>& heads,
                        const ImportedExitOptions& options) {
  torch::manual_seed(options.seed);
  TrainedHeads out;
  std::vector<torch::Tensor> parameters;
  out.modules = BuildHeads(model, heads, &parameters);
  torch::optim::Adam optimizer(parameters, torch::optim::AdamOptions(options.learning_rate));
  const int n = static_cast<int>(cache.labels.size());
  const torch::Tensor labels = torch::tensor(cache.labels);
  StepSchedule schedule;
  schedule.per_epoch = (n + options.batch_size - 1) / options.batch_size;
  schedule.total = schedule.per_epoch * options.epochs;
  schedule.warmup = std::min<int64_t>(schedule.per_epoch / 4 + 1, schedule.total);
  int64_t step = 0;
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    TrainEpoch(epoch, cache, labels, schedule, options, optimizer, &step, &out);
  }
  for (auto& head : out.modules) head->eval();
  return out;
}

Weight ToWeight(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().contiguous();
  Weight w;
  w.dims = c.sizes().vec();
  w.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return w;
}

// The head for inference: batch norm folded into the conv (its running
// statistics, as the native network folds its heads).
ExitHeadWeights FoldHead(ExitHead& head, const ExitHeadChoice& choice) {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> t;
  for (const auto& p : head->named_parameters()) t[p.key()] = p.value();
  for (const auto& b : head->named_buffers()) t[b.key()] = b.value();
  ExitHeadWeights w;
  w.pool = choice.pool;
  if (choice.conv_channels > 0) {
    const torch::Tensor scale =
        t.at("bn.weight") / torch::sqrt(t.at("bn.running_var") + kBatchNormEps);
    w.conv_weight = ToWeight(t.at("conv.weight") * scale.view({-1, 1, 1, 1}));
    w.conv_bias = ToWeight(t.at("bn.bias") - t.at("bn.running_mean") * scale);
  }
  w.fc_weight = ToWeight(t.at("fc.weight"));
  w.fc_bias = ToWeight(t.at("fc.bias"));
  return w;
}

// The manifest with the heads: their costs in the exits, the files, what
// trained them on which data.
v1::ModelManifest ManifestWithHeads(v1::ModelManifest m, const std::vector<ExitHeadChoice>& heads,
                                    const LabelledSplits& data, int train_samples,
                                    const ImportedExitOptions& options) {
  int64_t to_stage = 0;
  std::vector<int64_t> cumulative;  // MACs of stages 0..s
  for (const auto& s : m.stages()) cumulative.push_back(to_stage += s.macs());
  const double full = static_cast<double>(std::max<int64_t>(1, m.full_network_macs()));
  for (const ExitHeadChoice& h : heads) {
    v1::ExitInfo* e = m.mutable_exits(h.exit);
    e->set_macs(h.macs);
    e->set_params(h.params);
    e->set_layers(h.layers);
    e->set_cumulative_macs_fraction(static_cast<double>(cumulative[e->after_stage()] + h.macs) /
                                    full);
  }
  m.clear_report();  // a retraining's report starts afresh
  m.set_exit_weights(kExitsFile);
  m.set_validation_calibration(kValidationCalibrationFile);
  m.set_test_calibration(kTestCalibrationFile);
  if (m.dataset().empty()) m.set_dataset(data.dataset);
  v1::TrainingConfig* t = m.mutable_training();
  t->Clear();
  t->set_seed(options.seed);
  t->set_exit_epochs(options.epochs);
  t->set_batch_size(options.batch_size);
  t->set_exit_learning_rate(options.learning_rate);
  t->set_train_limit(options.train_limit);
  t->set_threads(torch::get_num_threads());
  t->set_augment(false);  // features are cached: every epoch sees the same inputs
  v1::DatasetSplit* split = m.mutable_split();
  split->set_train(train_samples);
  split->set_validation(data.validation->size());
  split->set_test(data.test->size());
  split->set_split_seed(data.split_seed);
  return m;
}

}  // namespace

absl::StatusOr<std::vector<ExitHeadChoice>> ChooseExitHeads(const v1::ModelManifest& manifest,
                                                            const ImportedExitOptions& options) {
  const int classes = manifest.class_names_size();
  const double budget =
      options.max_head_macs_fraction * static_cast<double>(manifest.backbone_macs());
  std::vector<ExitHeadChoice> chosen;
  for (const v1::ExitInfo& exit : manifest.exits()) {
    if (exit.is_final()) continue;
    const v1::TensorShape& stage = manifest.stages(exit.after_stage()).output();
    const int size = std::min(stage.height(), stage.width());
    std::vector<std::pair<int, int>> candidates;  // conv channels, pool; preferred first
    if (options.exit_conv_channels > 0 && size > options.exit_conv_min_size) {
      const int pooled = (size - 1) / 2 + 1;
      for (int c = options.exit_conv_channels;
           c >= std::min(kSmallestConv, options.exit_conv_channels); c /= 2) {
        candidates.push_back({c, pooled >= 8 ? 4 : 2});
      }
    }
    for (int pool : {4, 2, 1}) {
      if (pool == 1 || pool <= (size >= 8 ? 4 : 2)) candidates.push_back({0, pool});
    }
    bool found = false;
    for (const auto& [conv, pool] : candidates) {
      const ExitHeadCost cost = HeadCost(stage, conv, pool, classes);
      if (static_cast<double>(cost.macs) > budget) continue;
      ExitHeadChoice h;
      h.exit = exit.index();
      h.conv_channels = conv;
      h.pool = pool;
      h.macs = cost.macs;
      h.params = cost.params;
      h.layers = cost.layers;
      chosen.push_back(h);
      found = true;
      break;
    }
    if (!found) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "model %s: exit %d (after stage %s, %dx%dx%d): even a linear head (%d MACs) is over "
          "%.1f%% of the backbone's %d MACs; restrict the exits (hapi-import --exits)",
          manifest.name(), exit.index(), manifest.stages(exit.after_stage()).name(),
          stage.channels(), stage.height(), stage.width(), HeadCost(stage, 0, 1, classes).macs,
          100 * options.max_head_macs_fraction, manifest.backbone_macs()));
    }
  }
  return chosen;
}

absl::StatusOr<CalibrationTable> CalibrateOnImages(const Model& model, const LabelledImages& images,
                                                   const std::string& label) {
  const int n = images.size(), classes = model.num_classes();
  if (n == 0) return absl::InvalidArgumentError("calibration needs images");
  if (classes > CalibrationTable::kMaxClasses) {
    return absl::InvalidArgumentError(absl::StrCat("the model has ", classes,
                                                   " classes; a calibration table holds at most ",
                                                   CalibrationTable::kMaxClasses));
  }
  CalibrationTable table(n, model.num_exits(), classes);
  std::unique_ptr<ProgressBar> bar;
  if (!label.empty()) bar = std::make_unique<ProgressBar>(label, n);
  const int64_t sample_size = model.input_size();
  std::vector<float> pixels, probabilities;
  for (int begin = 0; begin < n; begin += kReadBatch) {
    const int count = std::min(kReadBatch, n - begin);
    pixels.resize(static_cast<size_t>(count) * sample_size);
    for (int i = 0; i < count; ++i) {
      images.Read(begin + i, pixels.data() + i * sample_size);
      const int truth = images.label(begin + i);
      if (truth < 0 || truth >= classes) {
        return absl::InvalidArgumentError(absl::StrCat("sample ", begin + i, " has label ", truth,
                                                       "; the model has ", classes, " classes"));
      }
      table.SetTrueLabel(begin + i, truth);
    }
    HAPI_ASSIGN_OR_RETURN(std::unique_ptr<Activations> x, model.Input(pixels.data(), count));
    for (int e = 0, stage = 0; e < model.num_exits(); ++e) {
      for (; stage <= model.ExitStage(e); ++stage) HAPI_RETURN_IF_ERROR(model.RunStage(stage, *x));
      HAPI_RETURN_IF_ERROR(model.RunHead(e, *x, &probabilities));
      for (int i = 0; i < count; ++i) {
        table.Set(e, begin + i, ScoreProbabilities(probabilities.data() + i * classes, classes));
      }
    }
    if (bar) bar->Update(begin + count);
  }
  if (bar) bar->Finish();
  return table;
}

namespace {

// Sizes the cache of the training images' features at the heads into
// `summary`; an error if it is over the options' allowance.
absl::Status SizeFeatureCache(const ImportedModel& backbone, const LabelledImages& train,
                              const ImportedExitOptions& options, ImportedExitsSummary* summary) {
  const v1::ModelManifest& manifest = backbone.manifest();
  int64_t per_sample = 0;
  for (const ExitHeadChoice& h : summary->heads) {
    per_sample += CachedFloats(manifest.stages(backbone.ExitStage(h.exit)).output(), h);
  }
  summary->feature_cache_bytes = per_sample * static_cast<int64_t>(sizeof(float)) * train.size();
  if (summary->feature_cache_bytes > options.feature_cache_bytes) {
    const int64_t fits = options.feature_cache_bytes / (per_sample * int64_t{sizeof(float)});
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the features of %d training samples take %.0f MB (%d floats each), over the %.0f MB "
        "allowed for the cache: train on at most %d samples or allow more memory",
        train.size(), summary->feature_cache_bytes / 1e6, per_sample,
        options.feature_cache_bytes / 1e6, fits));
  }
  return absl::OkStatus();
}

// Computes the features, trains the heads on them and folds them for
// inference into `heads`; the times, losses and accuracies go into `summary`
// and the per-epoch times into `epoch_seconds`.
absl::Status TrainAndFoldHeads(const ImportedModel& backbone, const LabelledImages& train,
                               const ImportedExitOptions& options, ImportedExitsSummary* summary,
                               std::vector<ExitHeadWeights>* heads,
                               std::vector<double>* epoch_seconds) {
  try {
    Clock::time_point start = Clock::now();
    HAPI_ASSIGN_OR_RETURN(FeatureCache cache,
                          ComputeFeatures(backbone, train, summary->heads, options.progress));
    summary->feature_seconds = SecondsSince(start);
    start = Clock::now();
    TrainedHeads trained = TrainHeads(backbone, cache, summary->heads, options);
    summary->train_seconds = SecondsSince(start);
    summary->epoch_loss = trained.epoch_loss;
    summary->last_epoch_accuracy = trained.last_epoch_accuracy;
    *epoch_seconds = trained.epoch_seconds;
    for (size_t k = 0; k < summary->heads.size(); ++k) {
      heads->push_back(FoldHead(trained.modules[k], summary->heads[k]));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("training the exits of model ",
                                            backbone.manifest().name(), ": ",
                                            e.what_without_backtrace()));
  }
  return absl::OkStatus();
}

// What the retrained model's directory holds before calibration: its
// manifest (with the heads and the report's sizes) and its weight files.
struct ExitFiles {
  v1::ModelManifest manifest;
  std::string heads_bytes;
  std::string graph_bytes;
};

absl::StatusOr<ExitFiles> AssembleFiles(const std::string& model_dir,
                                        const v1::ModelManifest& manifest,
                                        const std::vector<ExitHeadChoice>& chosen,
                                        const LabelledSplits& data, int train_samples,
                                        const ImportedExitOptions& options,
                                        const std::vector<ExitHeadWeights>& heads,
                                        const std::vector<double>& epoch_seconds) {
  ExitFiles files;
  v1::ModelManifest& m = files.manifest;
  m = ManifestWithHeads(manifest, chosen, data, train_samples, options);
  for (double s : epoch_seconds) m.mutable_report()->add_exit_epoch_seconds(s);
  HAPI_ASSIGN_OR_RETURN(files.heads_bytes, SerializeExitHeads(heads));
  HAPI_ASSIGN_OR_RETURN(files.graph_bytes,
                        ReadFile(absl::StrCat(model_dir, "/", m.backbone_weights())));
  int64_t params = 0;
  for (const auto& s : m.stages()) params += s.params();
  for (const auto& e : m.exits()) params += e.params();
  m.mutable_report()->set_num_parameters(params);
  m.mutable_report()->set_weights_bytes(
      static_cast<int64_t>(files.graph_bytes.size() + files.heads_bytes.size()));
  return files;
}

// Writes the files into `staging`, calibrates the model from there through
// the model loader (the server's path, heads attached from the file), writes
// the calibrations, report and final manifest, and publishes `staging` as
// `model_dir` in one rename.
absl::Status WriteCalibrateAndPublish(const std::string& staging, const std::string& model_dir,
                                      const LabelledSplits& data,
                                      const ImportedExitOptions& options,
                                      const std::vector<ExitHeadChoice>& chosen, ExitFiles* files) {
  v1::ModelManifest& m = files->manifest;
  auto write = [&](const std::string& file, absl::string_view bytes) {
    return WriteFileAtomically(absl::StrCat(staging, "/", file), bytes);
  };
  HAPI_RETURN_IF_ERROR(write(m.backbone_weights(), files->graph_bytes));
  HAPI_RETURN_IF_ERROR(write(m.exit_weights(), files->heads_bytes));
  HAPI_RETURN_IF_ERROR(WriteTextProtoAtomically(absl::StrCat(staging, "/", kManifestFile), m));
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const Model> served, LoadImportedModel(staging));
  const std::shared_ptr<const LabelledImages> validation =
      FirstImages(data.validation, options.calibration_limit);
  const std::shared_ptr<const LabelledImages> test =
      FirstImages(data.test, options.calibration_limit);
  HAPI_ASSIGN_OR_RETURN(
      CalibrationTable validation_table,
      CalibrateOnImages(*served, *validation, options.progress ? "calibrate validation" : ""));
  HAPI_ASSIGN_OR_RETURN(
      CalibrationTable test_table,
      CalibrateOnImages(*served, *test, options.progress ? "calibrate test" : ""));
  m.mutable_split()->set_validation(validation->size());
  m.mutable_split()->set_test(test->size());
  FillExitReports(validation_table, test_table, &m);
  HAPI_RETURN_IF_ERROR(write(m.validation_calibration(), validation_table.Serialize()));
  HAPI_RETURN_IF_ERROR(write(m.test_calibration(), test_table.Serialize()));
  HAPI_RETURN_IF_ERROR(
      write(kReportFile, FormatImportedExitsReport(m, chosen, options.max_head_macs_fraction)));
  HAPI_RETURN_IF_ERROR(WriteTextProtoAtomically(absl::StrCat(staging, "/", kManifestFile), m));
  return PublishDirectory(staging, model_dir);
}

}  // namespace

absl::StatusOr<ImportedExitsSummary> TrainImportedExits(const std::string& model_dir,
                                                        const LabelledSplits& data,
                                                        const ImportedExitOptions& options) {
  HAPI_RETURN_IF_ERROR(CheckOptions(options));
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<ImportedModel> backbone,
                        OpenImportedModel(model_dir, ModelOptions{}, /*attach_heads=*/false));
  const v1::ModelManifest& manifest = backbone->manifest();
  HAPI_RETURN_IF_ERROR(CheckData(*backbone, data));
  ImportedExitsSummary summary;
  HAPI_ASSIGN_OR_RETURN(summary.heads, ChooseExitHeads(manifest, options));
  if (summary.heads.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("model ", manifest.name(), " has no early exits to train"));
  }
  const std::shared_ptr<const LabelledImages> train = FirstImages(data.train, options.train_limit);
  summary.train_samples = train->size();
  HAPI_RETURN_IF_ERROR(SizeFeatureCache(*backbone, *train, options, &summary));
  torch::set_num_threads(options.threads > 0
                             ? options.threads
                             : std::max(1, static_cast<int>(std::thread::hardware_concurrency())));

  std::vector<ExitHeadWeights> heads;
  std::vector<double> epoch_seconds;
  HAPI_RETURN_IF_ERROR(
      TrainAndFoldHeads(*backbone, *train, options, &summary, &heads, &epoch_seconds));
  HAPI_ASSIGN_OR_RETURN(ExitFiles files,
                        AssembleFiles(model_dir, manifest, summary.heads, data, train->size(),
                                      options, heads, epoch_seconds));

  // Written in a staging directory, calibrated from there, then published in
  // one rename.
  HAPI_ASSIGN_OR_RETURN(const std::string staging, MakeStagingDirectory(model_dir));
  const Clock::time_point calibration_start = Clock::now();
  absl::Status st =
      WriteCalibrateAndPublish(staging, model_dir, data, options, summary.heads, &files);
  if (!st.ok()) {
    std::error_code ec;
    std::filesystem::remove_all(staging, ec);
    return st;
  }
  summary.calibration_seconds = SecondsSince(calibration_start);
  summary.manifest = std::move(files.manifest);
  return summary;
}

std::string FormatImportedExitsReport(const v1::ModelManifest& m,
                                      const std::vector<ExitHeadChoice>& heads,
                                      double max_head_macs_fraction) {
  const v1::TrainingReport& r = m.report();
  std::string out =
      absl::StrFormat("# Model `%s` (imported, %s)\n\n", m.name(), m.backbone_weights());
  absl::StrAppendFormat(&out,
                        "Input %s; %d stages cut at the graph's cut points, %d exits (the last "
                        "is the graph's own classifier). Backbone %.2f M MACs, full network "
                        "%.2f M MACs, %d parameters with the heads, %.2f MB of weights.\n",
                        ShapeString(m.input()), m.stages_size(), m.exits_size(),
                        m.backbone_macs() / 1e6, m.full_network_macs() / 1e6, r.num_parameters(),
                        r.weights_bytes() / 1e6);
  absl::StrAppendFormat(
      &out,
      "Exit heads: [3x3/2 conv -> BN -> ReLU] -> adaptive average pool -> linear, each the "
      "largest of the family within %.1f%% of the backbone's MACs (conv halved, then dropped, "
      "then the pool shrunk until it fits); trained with the backbone frozen on the features "
      "its inference path computes, BN folded after training.\n",
      100 * max_head_macs_fraction);
  absl::StrAppendFormat(&out,
                        "Data: %s, train %d / validation %d (split seed %d) / test %d. Seed %d, "
                        "%d epochs, batch %d, Adam, peak rate %g, no augmentation (cached "
                        "features).\n\n",
                        m.dataset(), m.split().train(), m.split().validation(),
                        m.split().split_seed(), m.split().test(), m.training().seed(),
                        m.training().exit_epochs(), m.training().batch_size(),
                        m.training().exit_learning_rate());
  out +=
      "| exit | after stage | stage output | head | val acc | test acc | MACs to here (of full) "
      "| head MACs (of backbone) |\n";
  out += "|---|---|---|---|---|---|---|---|\n";
  for (int i = 0; i < r.exits_size(); ++i) {
    const v1::ExitReport& e = r.exits(i);
    const v1::ExitInfo& info = m.exits(i);
    const v1::TensorShape& s = m.stages(info.after_stage()).output();
    std::string head = "graph's classifier";
    for (const ExitHeadChoice& h : heads) {
      if (h.exit != i) continue;
      head = h.conv_channels > 0 ? absl::StrFormat("conv %d, pool %d", h.conv_channels, h.pool)
                                 : absl::StrFormat("pool %d", h.pool);
    }
    absl::StrAppendFormat(&out, "| %s | %d (%s) | %s | %s | %.2f%% | %.2f%% | %.1f%% | %.2f%% |\n",
                          e.name(), info.after_stage(), m.stages(info.after_stage()).name(),
                          ShapeString(s.channels(), s.height(), s.width()), head,
                          100 * e.accuracy().validation(), 100 * e.accuracy().test(),
                          100 * e.cumulative_macs_fraction(), 100 * e.head_macs_fraction());
  }
  absl::StrAppendFormat(&out,
                        "\nOf the test samples the final classifier gets wrong, %.1f%% are "
                        "classified correctly by at least one earlier exit.\n",
                        100 * r.final_errors_fixed_by_earlier_exit());
  double seconds = 0;
  for (double s : r.exit_epoch_seconds()) seconds += s;
  absl::StrAppendFormat(&out, "\nExit training: %.0f s (%.1f s/epoch), %d threads.\n", seconds,
                        seconds / std::max(1, r.exit_epoch_seconds_size()), m.training().threads());
  return out;
}

}  // namespace hapi
