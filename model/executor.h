// Runs a design of the early-exit network: stops each sample at the first
// enabled exit whose score clears its threshold; batches are compacted after
// every exit so samples that left cost no more compute. Torch-free header.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/design.h"
#include "model/early_exit_model.h"

namespace hapi {

class InferenceNetwork;

struct ExecutorOptions {
  bool fuse_batch_norm = true;  // fold BN into convolutions (measured: see docs)
  bool channels_last = true;     // NHWC activations (docs/executor-bench.md)
  bool onednn = true;            // oneDNN convolutions instead of LibTorch's choice
};

// One exit evaluated for one sample.
struct ExitStep {
  int exit_index = 0;  // model exit
  int depth = 0;       // 1-based among the design's exits (final = exits+1)
  int label = 0;
  float confidence = 0;  // max softmax
  float score = 0;       // the design policy's score
};

struct SampleResult {
  int label = 0;
  float confidence = 0;  // max softmax at the answering exit
  float score = 0;
  int exit_index = 0;
  int depth = 0;
  int exits_evaluated = 0;
  bool cut_short = false;  // answered before its exit because may_continue said no
  std::vector<ExitStep> steps;  // every exit evaluated, in order
};

struct RunHooks {
  // Called for every exit evaluated on every sample, in order.
  std::function<void(int sample, const ExitStep& step)> on_step;
  // Called once per sample as soon as it has its answer (before the rest of
  // the batch finishes).
  std::function<void(int sample, const SampleResult& result)> on_answer;
  // Asked before running the stages that lead to the exit at `next_depth`;
  // false answers the sample from its most confident evaluated exit (or, if
  // none was evaluated, with exits_evaluated == 0 and cut_short == true).
  std::function<bool(int sample, int next_depth)> may_continue;
};

class EarlyExitExecutor {
 public:
  static absl::StatusOr<std::unique_ptr<EarlyExitExecutor>> Create(
      std::shared_ptr<EarlyExitModel> model, const Design& design,
      const ExecutorOptions& options = {});
  ~EarlyExitExecutor();

  // `pixels`: n images of 28x28 floats in [0,1], row-major.
  absl::StatusOr<std::vector<SampleResult>> Run(const float* pixels, int n,
                                                const RunHooks& hooks = {}) const;

  const Design& design() const { return design_; }
  const EarlyExitModel& model() const { return *model_; }
  InferenceNetwork& network() const { return *network_; }

 private:
  EarlyExitExecutor() = default;

  std::shared_ptr<EarlyExitModel> model_;
  Design design_;
  std::unique_ptr<InferenceNetwork> network_;
  int num_classes_ = 0;
};

// The number of intra-op threads LibTorch uses in this process.
void SetIntraOpThreads(int threads);
int IntraOpThreads();

}  // namespace hapi
