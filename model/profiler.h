// Measures a model's per-part latencies on this machine: the DeviceProfile
// the latency model reads. Torch-free header.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/executor.h"
#include "core/fashion_mnist.h"
#include "core/model.h"
#include "hapi/v1/device.pb.h"

namespace hapi {

struct ProfilerOptions {
  std::vector<int> batch_sizes = {1};
  int threads = 1;  // intra-op threads while measuring
  int warmup_iterations = 50;
  int iterations = 400;  // timed passes per batch size
  bool progress = true;
  // What the model runs in (the tables are marked with it); the caller
  // loads the model in that precision.
  v1::Precision precision = v1::FP32;
};

// Runs the whole network with every exit, part after part as the executor
// does, timing each stage and each exit head (logits, softmax and scoring) in
// sequence on real images from `inputs`. The fixed per-request cost outside
// the parts (input tensor, result assembly) is measured as the executor's
// final-only latency minus its parts. Median, p95 and mean per part.
absl::StatusOr<v1::DeviceProfile> ProfileDevice(std::shared_ptr<const Model> model,
                                                const std::string& device_name,
                                                const ImageSet& inputs,
                                                const ProfilerOptions& options);

}  // namespace hapi

namespace hapi {
// Attainable multiply-accumulates per second of this CPU at the current
// thread count: a large float GEMM, the best case for any convolution.
double MeasureGemmMacsPerSecond();
}  // namespace hapi
