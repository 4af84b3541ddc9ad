// The project's residual network behind the model seam (core/model.h).
// Torch-free header; LibTorch stays inside model/.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "core/model.h"
#include "model/early_exit_model.h"

namespace hapi {

// Prepares `model` for inference (a copy of its weights, batch norm folded as
// `options` say): later changes to `model` do not reach the result.
absl::StatusOr<std::shared_ptr<const Model>> MakeTorchModel(EarlyExitModel& model,
                                                            const ModelOptions& options = {});

// A ModelLoader for every model directory: the implementation follows the
// manifest (a graph written by hapi-import, model/imported_model.h, or the
// residual network written by EarlyExitModel::Save).
absl::StatusOr<std::shared_ptr<const Model>> LoadTorchModel(const std::string& model_dir,
                                                            const ModelOptions& options = {});

// The int8 ranges (hapi.v1.Int8Ranges, kInt8RangesFile) of the model in
// `model_dir` (the residual network or an imported graph): its direct path's
// tensors on `n` samples of the training split (`pixels`, input_shape()
// floats each, in [0,1]).
absl::StatusOr<v1::Int8Ranges> CalibrateInt8Ranges(const std::string& model_dir,
                                                   const float* pixels, int n);

// The number of intra-op threads LibTorch uses in this process.
void SetIntraOpThreads(int threads);
int IntraOpThreads();

}  // namespace hapi
