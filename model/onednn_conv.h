// 2-D convolution for inference through oneDNN directly. Internal to model/
// (includes LibTorch).
#pragma once

#include <torch/torch.h>

#include <array>

namespace hapi {

struct Conv2dParams {
  std::array<int64_t, 2> stride = {1, 1};
  // Top, left, bottom, right. oneDNN pads symmetrically; asymmetric pads are
  // applied to the input first.
  std::array<int64_t, 4> pads = {0, 0, 0, 0};
  std::array<int64_t, 2> dilation = {1, 1};
  int64_t groups = 1;
  bool onednn = true;  // false: LibTorch's choice (torch::conv2d)
};

// x (N x C x H x W, any memory format) convolved with `weight` (O x C/groups
// x kH x kW); `bias` may be undefined. LibTorch's own heuristic sends small
// batch-1 convolutions to im2col + BLAS, which is far slower on the machines
// measured (docs/executor-bench.md): at::mkldnn_convolution calls oneDNN.
torch::Tensor Conv2d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     const Conv2dParams& params);

}  // namespace hapi
