#include "core/executor.h"

#include "core/exit_policy.h"
#include "core/status_macros.h"

namespace hapi {
namespace {

// Drops the rows of `x` whose sample left, keeping `active` (the sample index
// of each row) in step. `keep` holds ascending row indices.
void Compact(const std::vector<int>& keep, Activations& x, std::vector<int>& active) {
  if (keep.size() == active.size()) return;
  std::vector<int> still;
  still.reserve(keep.size());
  for (int row : keep) still.push_back(active[row]);
  active.swap(still);
  if (!keep.empty()) x.KeepRows(keep);
}

}  // namespace

absl::StatusOr<std::unique_ptr<EarlyExitExecutor>> EarlyExitExecutor::Create(
    std::shared_ptr<const Model> model, const Design& design) {
  if (model == nullptr) return absl::InvalidArgumentError("executor needs a model");
  HAPI_RETURN_IF_ERROR(ValidateDesign(design, model->num_exits()));
  return std::unique_ptr<EarlyExitExecutor>(new EarlyExitExecutor(std::move(model), design));
}

absl::Status EarlyExitExecutor::WarmUp(int batch_size) const {
  const std::vector<float> zeros(static_cast<size_t>(batch_size) * model_->input_size(), 0.0f);
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<Activations> x, model_->Input(zeros.data(), batch_size));
  std::vector<int> heads = design_.exits;
  heads.push_back(model_->final_exit());
  std::vector<float> probs;
  int stage = 0;
  for (int exit : heads) {
    for (const int last = model_->ExitStage(exit); stage <= last; ++stage) {
      HAPI_RETURN_IF_ERROR(model_->RunStage(stage, *x));
    }
    HAPI_RETURN_IF_ERROR(model_->RunHead(exit, *x, &probs));
  }
  return absl::OkStatus();
}

void EarlyExitExecutor::Answer(int sample, bool cut_short, const RunHooks& hooks,
                               SampleResult& r) const {
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
}

absl::StatusOr<std::vector<SampleResult>> EarlyExitExecutor::Run(const float* pixels, int n,
                                                                 const RunHooks& hooks) const {
  if (n <= 0) return std::vector<SampleResult>{};
  std::vector<SampleResult> results(n);
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<Activations> x, model_->Input(pixels, n));
  std::vector<int> active(n);  // sample index of each row of x
  for (int i = 0; i < n; ++i) active[i] = i;
  HAPI_RETURN_IF_ERROR(RunDepths(*x, active, hooks, results));
  return results;
}

absl::Status EarlyExitExecutor::RunDepths(Activations& x, std::vector<int>& active,
                                          const RunHooks& hooks,
                                          std::vector<SampleResult>& results) const {
  const int depths = static_cast<int>(design_.exits.size()) + 1;
  const int num_classes = model_->num_classes();
  std::vector<float> probs;
  std::vector<int> keep;
  int stage = 0;
  for (int depth = 0; depth < depths && !active.empty(); ++depth) {
    const bool is_final = depth == depths - 1;
    const int exit = is_final ? model_->final_exit() : design_.exits[depth];
    if (hooks.may_continue) {
      keep.clear();
      for (size_t row = 0; row < active.size(); ++row) {
        if (hooks.may_continue(active[row], depth + 1)) {
          keep.push_back(static_cast<int>(row));
        } else {
          Answer(active[row], /*cut_short=*/true, hooks, results[active[row]]);
        }
      }
      Compact(keep, x, active);
      if (active.empty()) break;
    }
    for (const int last = model_->ExitStage(exit); stage <= last; ++stage) {
      HAPI_RETURN_IF_ERROR(model_->RunStage(stage, x));
    }
    HAPI_RETURN_IF_ERROR(model_->RunHead(exit, x, &probs));
    keep.clear();
    for (size_t row = 0; row < active.size(); ++row) {
      const int sample = active[row];
      ExitScores scores = ScoreProbabilities(probs.data() + row * num_classes, num_classes);
      ExitStep step{exit, depth + 1, scores.label, scores.score(ExitPolicy::kMaxSoftmax),
                    scores.score(design_.policy)};
      results[sample].steps.push_back(step);
      if (hooks.on_step) hooks.on_step(sample, step);
      if (is_final || step.score >= design_.thresholds[depth]) {
        Answer(sample, /*cut_short=*/false, hooks, results[sample]);
      } else {
        keep.push_back(static_cast<int>(row));
      }
    }
    Compact(keep, x, active);
  }
  return absl::OkStatus();
}

}  // namespace hapi
