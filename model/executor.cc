#include "model/executor.h"

#include "absl/strings/str_cat.h"
#include "core/exit_policy.h"
#include "core/status_macros.h"
#include "model/inference_network.h"

namespace hapi {

void SetIntraOpThreads(int threads) {
  if (threads > 0) torch::set_num_threads(threads);
}
int IntraOpThreads() { return torch::get_num_threads(); }

EarlyExitExecutor::~EarlyExitExecutor() = default;

absl::StatusOr<std::unique_ptr<EarlyExitExecutor>> EarlyExitExecutor::Create(
    std::shared_ptr<EarlyExitModel> model, const Design& design, const ExecutorOptions& options) {
  if (model == nullptr) return absl::InvalidArgumentError("executor needs a model");
  HAPI_RETURN_IF_ERROR(ValidateDesign(design, model->manifest().exits_size()));
  std::unique_ptr<EarlyExitExecutor> executor(new EarlyExitExecutor());
  executor->design_ = design;
  executor->num_classes_ = model->manifest().backbone().num_classes();
  try {
    InferenceOptions io;
    io.fuse_batch_norm = options.fuse_batch_norm;
    io.channels_last = options.channels_last;
    io.onednn = options.onednn;
    executor->network_ = std::make_unique<InferenceNetwork>(*model, io);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("preparing model ", model->manifest().name(),
                                            " for inference: ", e.what_without_backtrace()));
  } catch (const std::out_of_range& e) {
    return absl::DataLossError(absl::StrCat("model ", model->manifest().name(),
                                            " lacks a tensor its manifest needs"));
  }
  executor->model_ = std::move(model);
  return executor;
}

absl::StatusOr<std::vector<SampleResult>> EarlyExitExecutor::Run(const float* pixels, int n,
                                                                 const RunHooks& hooks) const {
  if (n <= 0) return std::vector<SampleResult>{};
  std::vector<SampleResult> results(n);
  const int final_exit = network_->num_exits() - 1;
  const int depths = static_cast<int>(design_.exits.size()) + 1;
  auto answer = [&](int sample, bool cut_short) {
    SampleResult& r = results[sample];
    r.cut_short = cut_short;
    if (!r.steps.empty()) {
      // Normally the last exit evaluated; when cut short, the most confident.
      const ExitStep* best = &r.steps.back();
      if (cut_short) {
        for (const ExitStep& s : r.steps) {
          if (s.score > best->score) best = &s;
        }
      }
      r.label = best->label;
      r.confidence = best->confidence;
      r.score = best->score;
      r.exit_index = best->exit_index;
      r.depth = best->depth;
    }
    r.exits_evaluated = static_cast<int>(r.steps.size());
    if (hooks.on_answer) hooks.on_answer(sample, r);
  };

  try {
    torch::InferenceMode guard;
    torch::Tensor x = network_->Input(pixels, n);
    std::vector<int64_t> active(n);  // sample index of each row of x
    for (int i = 0; i < n; ++i) active[i] = i;
    int stage = 0;
    for (int depth = 0; depth < depths && !active.empty(); ++depth) {
      const int exit = depth < depths - 1 ? design_.exits[depth] : final_exit;
      if (hooks.may_continue) {
        std::vector<int64_t> keep;
        for (size_t row = 0; row < active.size(); ++row) {
          if (hooks.may_continue(static_cast<int>(active[row]), depth + 1)) {
            keep.push_back(static_cast<int64_t>(row));
          } else {
            answer(static_cast<int>(active[row]), /*cut_short=*/true);
          }
        }
        if (keep.size() != active.size()) {
          if (keep.empty()) break;
          x = x.index_select(0, torch::tensor(keep));
          std::vector<int64_t> still;
          for (int64_t row : keep) still.push_back(active[row]);
          active.swap(still);
        }
      }
      for (; stage <= exit; ++stage) x = network_->Stage(stage, x);
      torch::Tensor probs = torch::softmax(network_->ExitLogits(exit, x), 1).contiguous();
      const float* p = probs.data_ptr<float>();
      const bool is_final = depth == depths - 1;
      std::vector<int64_t> keep;
      for (size_t row = 0; row < active.size(); ++row) {
        int sample = static_cast<int>(active[row]);
        ExitScores scores = ScoreProbabilities(p + row * num_classes_, num_classes_);
        ExitStep step{exit, depth + 1, scores.label,
                      scores.score(ExitPolicy::kMaxSoftmax), scores.score(design_.policy)};
        results[sample].steps.push_back(step);
        if (hooks.on_step) hooks.on_step(sample, step);
        if (is_final || step.score >= design_.thresholds[depth]) {
          answer(sample, /*cut_short=*/false);
        } else {
          keep.push_back(static_cast<int64_t>(row));
        }
      }
      if (keep.size() != active.size() && !keep.empty()) {
        // Compaction: only the samples still in flight go through later stages.
        x = x.index_select(0, torch::tensor(keep));
        std::vector<int64_t> still;
        for (int64_t row : keep) still.push_back(active[row]);
        active.swap(still);
      } else if (keep.empty()) {
        active.clear();
      }
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("running model ", model_->manifest().name(), ": ",
                                            e.what_without_backtrace()));
  }
  return results;
}

}  // namespace hapi
