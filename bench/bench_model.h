// Shared by the bench/ commands that run the stored model: loading it (served
// through LibTorch) with Fashion-MNIST, and the batch-1 timing loop. Kept apart
// from bench/common.h so that commands without a model need not link one.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/common.h"
#include "core/executor.h"
#include "core/fashion_mnist.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "model/early_exit_model.h"
#include "model/torch_model.h"

namespace hapi::bench {

inline absl::StatusOr<std::shared_ptr<EarlyExitModel>> LoadRepositoryModel(
    const std::string& repository, const std::string& name) {
  return EarlyExitModel::Load(RepositoryLayout(repository).ModelDir(name));
}

// A command's --repository, --model and --data_dir.
struct ModelSource {
  std::string repository;
  std::string model;
  std::string data_dir;
  bool int8 = false;  // serve with the model directory's int8 ranges (hapi-quantize)
};

struct BenchModel {
  std::shared_ptr<EarlyExitModel> model;
  std::shared_ptr<const Model> served;  // `model` as hapi-server loads it (precision: source)
  FashionMnist data;
};

inline absl::StatusOr<BenchModel> LoadBenchModel(const ModelSource& source) {
  BenchModel bench;
  HAPI_ASSIGN_OR_RETURN(bench.model, LoadRepositoryModel(source.repository, source.model));
  ModelOptions options;
  options.int8 = source.int8;
  HAPI_ASSIGN_OR_RETURN(
      bench.served,
      LoadTorchModel(RepositoryLayout(source.repository).ModelDir(source.model), options));
  HAPI_ASSIGN_OR_RETURN(bench.data, LoadFashionMnist(source.data_dir));
  return bench;
}

struct BatchOneTimes {
  Stats seconds;    // per request
  int correct = 0;  // answers equal to `labels`
};

// Runs images [0, samples) of `pixels` (each the executor's model's input
// size) one request each, after `warmup`
// untimed requests (cycling over the images) so that first-call allocations
// and cold caches stay out of the numbers.
inline absl::StatusOr<BatchOneTimes> TimeBatchOne(const EarlyExitExecutor& executor,
                                                  const std::vector<float>& pixels,
                                                  const std::vector<uint8_t>& labels, int samples,
                                                  int warmup) {
  const size_t sample_size = executor.model().input_size();
  const size_t images = pixels.size() / sample_size;
  for (int i = 0; i < warmup; ++i) {
    (void)executor.Run(pixels.data() + (i % images) * sample_size, 1);
  }
  std::vector<double> times;
  times.reserve(samples);
  BatchOneTimes out;
  for (int s = 0; s < samples; ++s) {
    double t0 = Now();
    auto r = executor.Run(pixels.data() + s * sample_size, 1);
    times.push_back(Now() - t0);
    if (!r.ok()) return r.status();
    out.correct += (*r)[0].label == labels[s];
  }
  out.seconds = Summarise(std::move(times));
  return out;
}

}  // namespace hapi::bench
