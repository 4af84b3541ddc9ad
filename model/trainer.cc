#include "model/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "absl/strings/str_format.h"
#include "core/exit_policy.h"
#include "core/input_spec.h"
#include "core/model_report.h"
#include "core/progress_bar.h"
#include "core/status_macros.h"
#include "model/inference_network.h"
#include "model/network.h"

namespace hapi {
namespace {

constexpr int kShift = 2;  // augmentation: random translation of up to 2 px

// Copies samples order[begin, end) into `out` (uint8), optionally shifted and
// flipped at random.
void GatherBatch(const ImageSet& set, const std::vector<int>& order, int begin, int end,
                 bool augment, std::mt19937_64* rng, std::vector<uint8_t>* out,
                 std::vector<int64_t>* labels) {
  int n = end - begin;
  out->assign(static_cast<size_t>(n) * kImagePixels, 0);
  labels->resize(n);
  std::uniform_int_distribution<int> shift(-kShift, kShift);
  std::bernoulli_distribution flip(0.5);
  for (int i = 0; i < n; ++i) {
    int idx = order[begin + i];
    (*labels)[i] = set.labels[idx];
    const uint8_t* src = set.image(idx);
    uint8_t* dst = out->data() + static_cast<size_t>(i) * kImagePixels;
    if (!augment) {
      std::copy_n(src, kImagePixels, dst);
      continue;
    }
    int dy = shift(*rng), dx = shift(*rng);
    bool mirror = flip(*rng);
    for (int y = 0; y < kImageSide; ++y) {
      int sy = y - dy;
      if (sy < 0 || sy >= kImageSide) continue;
      for (int x = 0; x < kImageSide; ++x) {
        int sx = x - dx;
        if (sx < 0 || sx >= kImageSide) continue;
        int tx = mirror ? kImageSide - 1 - x : x;
        dst[y * kImageSide + tx] = src[sy * kImageSide + sx];
      }
    }
  }
}

// Linear warm-up over `warmup` steps, then cosine decay to zero.
double ScheduledRate(double base, int64_t step, int64_t total, int64_t warmup) {
  if (step < warmup) return base * static_cast<double>(step + 1) / static_cast<double>(warmup);
  double progress = static_cast<double>(step - warmup) / std::max<int64_t>(1, total - warmup);
  return 0.5 * base * (1.0 + std::cos(M_PI * progress));
}

template <typename Optimizer>
void SetRate(Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

double ElapsedSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

absl::Status CheckTrainingConfig(const v1::TrainingConfig& c) {
  if (c.batch_size() <= 0 || c.backbone_epochs() < 0 || c.exit_epochs() < 0 ||
      !(c.learning_rate() > 0) || !(c.exit_learning_rate() > 0) ||
      !(c.exit_distillation() >= 0 && c.exit_distillation() <= 1) ||
      (c.exit_distillation() > 0 && !(c.distillation_temperature() > 0))) {
    return absl::InvalidArgumentError(
        absl::StrFormat("invalid training config: %s", c.ShortDebugString()));
  }
  return absl::OkStatus();
}

// The spec of a model trained here: Fashion-MNIST images, 1 x 28 x 28.
absl::StatusOr<v1::InputSpec> FashionMnistInput(const EarlyExitModel& model) {
  HAPI_ASSIGN_OR_RETURN(v1::InputSpec input, EffectiveInputSpec(model.manifest()));
  if (input.channels() != 1 || input.height() != kImageSide || input.width() != kImageSide) {
    return absl::InvalidArgumentError(
        absl::StrFormat("model %s eats %s; Fashion-MNIST images are %s", model.manifest().name(),
                        ShapeString(input), ShapeString(1, kImageSide, kImageSide)));
  }
  return input;
}

// Final-classifier accuracy on `set`, eval mode.
double FinalAccuracy(EarlyExitNetwork& net, const ImageSet& set, const v1::InputSpec& input) {
  torch::InferenceMode guard;
  int hits = 0;
  for (int begin = 0; begin < set.size(); begin += 1000) {
    int n = std::min(1000, set.size() - begin);
    torch::Tensor pred = net.ForwardFinal(ImagesToTensor(set.image(begin), n, input)).argmax(1);
    auto acc = pred.accessor<int64_t, 1>();
    for (int i = 0; i < n; ++i) hits += acc[i] == set.labels[begin + i];
  }
  return set.size() == 0 ? 0.0 : static_cast<double>(hits) / set.size();
}

// Where a training stage is in its learning-rate schedule: linear warm-up,
// then cosine decay over all of the stage's steps.
struct RateSchedule {
  RateSchedule(double base, const ImageSet& train, const v1::TrainingConfig& config, int epochs)
      : base_rate(base),
        steps_per_epoch((train.size() + config.batch_size() - 1) / config.batch_size()),
        total_steps(steps_per_epoch * epochs) {}

  double Rate() const { return ScheduledRate(base_rate, step, total_steps, warmup_steps); }
  // The progress bar's count: steps done in `epoch`, this one included.
  int64_t StepInEpoch(int epoch) const { return step - epoch * steps_per_epoch + 1; }

  double base_rate;
  int64_t steps_per_epoch;
  int64_t total_steps;
  int64_t warmup_steps = 0;
  int64_t step = 0;  // steps taken so far in the stage
};

// What an epoch has seen so far, for the progress bar and the report.
struct EpochTotals {
  explicit EpochTotals(int classifiers) : hits(classifiers, 0) {}

  double MeanLoss() const { return loss_sum / std::max<int64_t>(1, seen); }
  double AccuracyPercent(int classifier) const { return 100.0 * hits[classifier] / seen; }

  double loss_sum = 0;  // per-sample loss, summed over the samples seen
  int64_t seen = 0;
  std::vector<int64_t> hits;  // correct answers, per classifier trained
};

std::unique_ptr<ProgressBar> EpochBar(const TrainerOptions& options, const char* stage, int epoch,
                                      int epochs, int64_t steps) {
  if (!options.progress) return nullptr;
  return std::make_unique<ProgressBar>(absl::StrFormat("%s epoch %d/%d", stage, epoch + 1, epochs),
                                       steps);
}

struct Batch {
  torch::Tensor x;  // normalised images
  torch::Tensor y;  // labels; a view of the caller's buffer, valid during the step only
  int size = 0;
};

// One epoch's pass over `train` in `order`, a batch at a time, gathered
// (augmented when `config` says so) and normalised.
template <typename Step>
void ForEachBatch(const ImageSet& train, const std::vector<int>& order,
                  const v1::TrainingConfig& config, const v1::InputSpec& input,
                  std::mt19937_64* rng, Step&& step) {
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  for (int begin = 0; begin < train.size(); begin += config.batch_size()) {
    int end = std::min(train.size(), begin + config.batch_size());
    GatherBatch(train, order, begin, end, config.augment(), rng, &pixels, &labels);
    Batch b;
    b.size = end - begin;
    b.x = ImagesToTensor(pixels.data(), b.size, input);
    b.y = torch::from_blob(labels.data(), {b.size}, torch::kInt64);
    step(b);
  }
}

struct Distillation {
  double weight;  // of the distillation term in each head's loss; 0: none
  double temperature;
};

// The frozen backbone's output at every early exit and, when distilling, the
// final classifier's softened probabilities (the teacher).
struct FrozenFeatures {
  std::vector<torch::Tensor> features;
  torch::Tensor teacher;
};

FrozenFeatures RunFrozenBackbone(EarlyExitNetwork& net, torch::Tensor x,
                                 const Distillation& distillation) {
  const int num_heads = net.num_exits() - 1;
  FrozenFeatures out;
  torch::NoGradGuard no_grad;
  for (int s = 0; s < num_heads; ++s) {
    x = net.ForwardStage(s, x);
    out.features.push_back(x);
  }
  if (distillation.weight > 0) {
    torch::Tensor final_logits = net.ExitLogits(net.final_exit(), net.ForwardStage(num_heads, x));
    out.teacher = torch::softmax(final_logits / distillation.temperature, 1);
  }
  return out;
}

// The sum of every head's loss (cross-entropy, blended with distillation from
// the teacher); counts each head's correct answers into `totals`.
torch::Tensor ExitHeadsLoss(EarlyExitNetwork& net, const FrozenFeatures& frozen,
                            const torch::Tensor& y, const Distillation& distillation,
                            EpochTotals* totals) {
  const double distill = distillation.weight, temperature = distillation.temperature;
  torch::Tensor loss = torch::zeros({});
  for (int e = 0; e < static_cast<int>(frozen.features.size()); ++e) {
    torch::Tensor logits = net.ExitLogits(e, frozen.features[e]);
    torch::Tensor head_loss = torch::nn::functional::cross_entropy(logits, y);
    if (distill > 0) {
      torch::Tensor kl = torch::nn::functional::kl_div(
          torch::log_softmax(logits / temperature, 1), frozen.teacher,
          torch::nn::functional::KLDivFuncOptions().reduction(torch::kBatchMean));
      head_loss = (1 - distill) * head_loss + distill * temperature * temperature * kl;
    }
    loss = loss + head_loss;
    totals->hits[e] += logits.argmax(1).eq(y).sum().item<int64_t>();
  }
  return loss;
}

}  // namespace

v1::TrainingConfig DefaultTrainingConfig() {
  v1::TrainingConfig c;
  c.set_seed(7);
  c.set_backbone_epochs(20);
  c.set_exit_epochs(32);
  c.set_batch_size(128);
  c.set_learning_rate(0.1);
  c.set_momentum(0.9);
  c.set_weight_decay(5e-4);
  c.set_exit_learning_rate(2e-3);
  c.set_threads(0);
  c.set_augment(true);
  return c;
}

absl::Status TrainBackbone(const v1::TrainingConfig& config, const ImageSet& train,
                           const ImageSet& validation, const TrainerOptions& options,
                           EarlyExitModel* model) {
  HAPI_RETURN_IF_ERROR(CheckTrainingConfig(config));
  if (train.size() == 0) return absl::InvalidArgumentError("empty training set");
  EarlyExitNetwork& net = model->network();
  HAPI_ASSIGN_OR_RETURN(const v1::InputSpec input, FashionMnistInput(*model));
  v1::TrainingReport* report = model->mutable_manifest()->mutable_report();
  torch::manual_seed(config.seed());
  std::mt19937_64 rng(config.seed());
  torch::optim::SGD optimizer(net.backbone()->parameters(),
                              torch::optim::SGDOptions(config.learning_rate())
                                  .momentum(config.momentum())
                                  .nesterov(true)
                                  .weight_decay(config.weight_decay()));
  RateSchedule schedule(config.learning_rate(), train, config, config.backbone_epochs());
  schedule.warmup_steps = std::min<int64_t>(schedule.steps_per_epoch, schedule.total_steps / 5 + 1);
  for (int epoch = 0; epoch < config.backbone_epochs(); ++epoch) {
    auto start = std::chrono::steady_clock::now();
    net.SetTraining(true, false);
    std::vector<int> order = SeededPermutation(train.size(), config.seed() * 1000 + epoch);
    std::unique_ptr<ProgressBar> bar =
        EpochBar(options, "backbone", epoch, config.backbone_epochs(), schedule.steps_per_epoch);
    EpochTotals totals(1);
    ForEachBatch(train, order, config, input, &rng, [&](const Batch& b) {
      SetRate(optimizer, schedule.Rate());
      optimizer.zero_grad();
      torch::Tensor logits = net.ForwardFinal(b.x);
      torch::Tensor loss = torch::nn::functional::cross_entropy(logits, b.y);
      loss.backward();
      optimizer.step();
      totals.loss_sum += loss.item<double>() * b.size;
      totals.hits[0] += logits.argmax(1).eq(b.y).sum().item<int64_t>();
      totals.seen += b.size;
      if (bar) {
        bar->Update(
            schedule.StepInEpoch(epoch),
            absl::StrFormat("loss %.3f acc %.1f%%", totals.MeanLoss(), totals.AccuracyPercent(0)));
      }
      ++schedule.step;
    });
    // Eval mode: batch-norm uses (and keeps) its running statistics, so the
    // validation images neither change the backbone nor see batch statistics.
    net.SetTraining(false, false);
    double val_acc = FinalAccuracy(net, validation, input);
    double seconds = ElapsedSince(start);
    report->add_backbone_epoch_seconds(seconds);
    report->add_backbone_epoch_train_loss(totals.MeanLoss());
    report->add_backbone_epoch_val_accuracy(val_acc);
    if (bar) {
      bar->Finish(absl::StrFormat("loss %.3f train acc %.1f%% val acc %.2f%%", totals.MeanLoss(),
                                  totals.AccuracyPercent(0), 100 * val_acc));
    }
  }
  net.SetTraining(false, false);
  return absl::OkStatus();
}

absl::Status TrainExits(const v1::TrainingConfig& config, const ImageSet& train,
                        const TrainerOptions& options, EarlyExitModel* model) {
  HAPI_RETURN_IF_ERROR(CheckTrainingConfig(config));
  if (train.size() == 0) return absl::InvalidArgumentError("empty training set");
  EarlyExitNetwork& net = model->network();
  HAPI_ASSIGN_OR_RETURN(const v1::InputSpec input, FashionMnistInput(*model));
  v1::TrainingReport* report = model->mutable_manifest()->mutable_report();
  net.FreezeBackbone();
  torch::manual_seed(config.seed() + 1);
  std::mt19937_64 rng(config.seed() + 1);
  torch::optim::Adam optimizer(net.exit_heads()->parameters(),
                               torch::optim::AdamOptions(config.exit_learning_rate()));
  const int num_heads = net.num_exits() - 1;
  const Distillation distillation{config.exit_distillation(), config.distillation_temperature()};
  RateSchedule schedule(config.exit_learning_rate(), train, config, config.exit_epochs());
  schedule.warmup_steps = std::min<int64_t>(schedule.steps_per_epoch / 4 + 1, schedule.total_steps);
  for (int epoch = 0; epoch < config.exit_epochs(); ++epoch) {
    auto start = std::chrono::steady_clock::now();
    // Backbone in eval mode: batch-norm running statistics stay fixed.
    net.SetTraining(false, true);
    std::vector<int> order = SeededPermutation(train.size(), config.seed() * 1000 + 500 + epoch);
    std::unique_ptr<ProgressBar> bar =
        EpochBar(options, "exits", epoch, config.exit_epochs(), schedule.steps_per_epoch);
    EpochTotals totals(num_heads);
    ForEachBatch(train, order, config, input, &rng, [&](const Batch& b) {
      const FrozenFeatures frozen = RunFrozenBackbone(net, b.x, distillation);
      SetRate(optimizer, schedule.Rate());
      optimizer.zero_grad();
      torch::Tensor loss = ExitHeadsLoss(net, frozen, b.y, distillation, &totals);
      loss.backward();
      optimizer.step();
      totals.loss_sum += loss.item<double>() / num_heads * b.size;
      totals.seen += b.size;
      if (bar) {
        bar->Update(schedule.StepInEpoch(epoch),
                    absl::StrFormat("mean loss %.3f first-exit acc %.1f%% last-exit acc %.1f%%",
                                    totals.MeanLoss(), totals.AccuracyPercent(0),
                                    totals.AccuracyPercent(num_heads - 1)));
      }
      ++schedule.step;
    });
    report->add_exit_epoch_seconds(ElapsedSince(start));
    if (bar) bar->Finish(absl::StrFormat("mean loss %.3f", totals.MeanLoss()));
  }
  net.SetTraining(false, false);
  return absl::OkStatus();
}

absl::StatusOr<CalibrationTable> Calibrate(EarlyExitModel& model, const ImageSet& set) {
  HAPI_ASSIGN_OR_RETURN(const v1::InputSpec input, FashionMnistInput(model));
  model.network().SetTraining(false, false);
  const int num_classes = model.manifest().backbone().num_classes();
  CalibrationTable table(set.size(), model.manifest().exits_size(), num_classes);
  try {
    // The same inference network (folded batch norm) the executor serves
    // with, so the table predicts the served answers.
    InferenceNetwork net(model, input, InferenceOptions{});
    torch::InferenceMode guard;
    constexpr int kBatch = 500;
    std::vector<float> pixels;
    for (int begin = 0; begin < set.size(); begin += kBatch) {
      int n = std::min(kBatch, set.size() - begin);
      pixels.resize(static_cast<size_t>(n) * kImagePixels);
      const uint8_t* src = set.image(begin);
      for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = src[i] / 255.0f;
      torch::Tensor x = net.Input(pixels.data(), n);
      for (int e = 0; e < net.num_exits(); ++e) {
        x = net.Stage(e, x);
        torch::Tensor probs = torch::softmax(net.ExitLogits(e, x), 1).contiguous();
        const float* p = probs.data_ptr<float>();
        for (int i = 0; i < n; ++i) {
          table.Set(e, begin + i, ScoreProbabilities(p + i * num_classes, num_classes));
        }
      }
      for (int i = 0; i < n; ++i) table.SetTrueLabel(begin + i, set.labels[begin + i]);
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrFormat("calibrating model %s: %s", model.manifest().name(),
                                               e.what_without_backtrace()));
  }
  return table;
}

namespace {
// Sets the intra-op threads for training (LibTorch here defaults to one; use
// every core unless told) and returns the training images to use.
ImageSet PrepareTraining(const v1::TrainingConfig& config, const FashionMnist& data) {
  torch::set_num_threads(config.threads() > 0
                             ? config.threads()
                             : std::max(1, static_cast<int>(std::thread::hardware_concurrency())));
  ImageSet train = data.train;
  if (config.train_limit() > 0) train.Truncate(config.train_limit());
  return train;
}
}  // namespace

absl::StatusOr<std::unique_ptr<EarlyExitModel>> TrainEarlyExitModel(
    const std::string& name, const v1::BackboneConfig& backbone, const v1::TrainingConfig& config,
    const FashionMnist& data, const TrainerOptions& options) {
  HAPI_RETURN_IF_ERROR(CheckTrainingConfig(config));
  const ImageSet train = PrepareTraining(config, data);
  torch::manual_seed(config.seed());
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<EarlyExitModel> model,
                        EarlyExitModel::Create(name, backbone));
  v1::ModelManifest* m = model->mutable_manifest();
  *m->mutable_input() = MakeInputSpec(1, kImageSide, kImageSide, m->input_mean(), m->input_std());
  *m->mutable_training() = config;
  m->mutable_training()->set_threads(torch::get_num_threads());
  m->mutable_split()->set_train(train.size());
  m->mutable_split()->set_validation(data.validation.size());
  m->mutable_split()->set_test(data.test.size());
  m->mutable_split()->set_split_seed(data.split_seed);
  m->mutable_report()->set_num_parameters(model->network().NumParameters());
  try {
    HAPI_RETURN_IF_ERROR(TrainBackbone(config, train, data.validation, options, model.get()));
    HAPI_RETURN_IF_ERROR(TrainExits(config, train, options, model.get()));
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrFormat("training model %s: %s", name, e.what_without_backtrace()));
  }
  HAPI_RETURN_IF_ERROR(CalibrateModel(data, model.get()));
  return model;
}

absl::Status CalibrateModel(const FashionMnist& data, EarlyExitModel* model) {
  HAPI_ASSIGN_OR_RETURN(CalibrationTable validation, Calibrate(*model, data.validation));
  HAPI_ASSIGN_OR_RETURN(CalibrationTable test, Calibrate(*model, data.test));
  FillExitReports(validation, test, model->mutable_manifest());
  model->set_calibration(std::move(validation), std::move(test));
  return absl::OkStatus();
}

absl::Status RetrainExits(const v1::TrainingConfig& config, const FashionMnist& data,
                          const TrainerOptions& options, EarlyExitModel* model) {
  HAPI_RETURN_IF_ERROR(CheckTrainingConfig(config));
  const ImageSet train = PrepareTraining(config, data);
  v1::ModelManifest* m = model->mutable_manifest();
  v1::TrainingConfig* stored = m->mutable_training();
  stored->set_exit_epochs(config.exit_epochs());
  stored->set_exit_learning_rate(config.exit_learning_rate());
  stored->set_exit_distillation(config.exit_distillation());
  stored->set_distillation_temperature(config.distillation_temperature());
  stored->set_threads(torch::get_num_threads());
  m->mutable_report()->clear_exit_epoch_seconds();
  try {
    model->network().ResetExitHeads();
    HAPI_RETURN_IF_ERROR(TrainExits(config, train, options, model));
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrFormat("training the exits of model %s: %s", m->name(),
                                               e.what_without_backtrace()));
  }
  return CalibrateModel(data, model);
}

}  // namespace hapi
