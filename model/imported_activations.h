// The tensor behind an imported model's Activations (model/imported_model.h),
// for code in model/ that trains on what the inference path computes.
// Includes LibTorch: only model/ sources include this header.
#pragma once

#include <torch/torch.h>

#include "core/model.h"
#include "model/imported_model.h"

namespace hapi {

// `x` must come from `model`'s Input (and RunStage): the batch the inference
// path computed, N x C x H x W (a copy when the direct path holds it in its
// own layout; else the tensor itself, valid while `x` lives and is not run
// further).
torch::Tensor ImportedTensor(const ImportedModel& model, const Activations& x);

}  // namespace hapi
