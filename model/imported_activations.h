// The tensor behind an imported model's Activations (model/imported_model.h),
// for code in model/ that trains on what the inference path computes.
// Includes LibTorch: only model/ sources include this header.
#pragma once

#include <torch/torch.h>

#include "core/model.h"

namespace hapi {

// `x` must come from ImportedModel::Input (and RunStage): the batch as the
// inference path holds it (N x C x H x W, channels-last unless the model's
// options said otherwise). Valid while `x` lives and is not run further.
const torch::Tensor& ImportedTensor(const Activations& x);

}  // namespace hapi
