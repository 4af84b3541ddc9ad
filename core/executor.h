// Runs a design of the early-exit network: stops each sample at the first
// enabled exit whose score clears its threshold; batches are compacted after
// every exit so samples that left cost no more compute. Knows the model only
// through the model seam (core/model.h).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/design.h"
#include "core/model.h"

namespace hapi {

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
  bool cut_short = false;       // answered before its exit because may_continue said no
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
      std::shared_ptr<const Model> model, const Design& design);

  // `pixels`: n samples of model().input_size() floats in [0,1], row-major.
  absl::StatusOr<std::vector<SampleResult>> Run(const float* pixels, int n,
                                                const RunHooks& hooks = {}) const;

  // Runs every stage and every head of the design once on a batch of zeros:
  // the first pass through a model builds its kernels (oneDNN primitives,
  // scratch buffers), and a server pays that before it serves a variant, not
  // in its first requests.
  absl::Status WarmUp(int batch_size = 1) const;

  const Design& design() const { return design_; }
  const Model& model() const { return *model_; }
  const std::shared_ptr<const Model>& shared_model() const { return model_; }

 private:
  EarlyExitExecutor(std::shared_ptr<const Model> model, Design design)
      : model_(std::move(model)), design_(std::move(design)) {}

  absl::Status RunDepths(Activations& x, std::vector<int>& active, const RunHooks& hooks,
                         std::vector<SampleResult>& results) const;
  void Answer(int sample, bool cut_short, const RunHooks& hooks, SampleResult& result) const;

  // Both constant after construction.
  std::shared_ptr<const Model> model_;
  Design design_;
};

}  // namespace hapi
