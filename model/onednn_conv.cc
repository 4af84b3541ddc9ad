#include "model/onednn_conv.h"

namespace hapi {

torch::Tensor Conv2d(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                     const Conv2dParams& p) {
  const auto& pads = p.pads;
  const bool symmetric = pads[0] == pads[2] && pads[1] == pads[3];
  // constant_pad_nd takes the last dimension first: left, right, top, bottom.
  const torch::Tensor input =
      symmetric ? x : at::constant_pad_nd(x, {pads[1], pads[3], pads[0], pads[2]}, 0.0);
  const std::array<int64_t, 2> padding =
      symmetric ? std::array<int64_t, 2>{pads[0], pads[1]} : std::array<int64_t, 2>{0, 0};
  if (p.onednn) {
    return at::mkldnn_convolution(input, weight, bias, padding, p.stride, p.dilation, p.groups);
  }
  return torch::conv2d(input, weight, bias, p.stride, padding, p.dilation, p.groups);
}

}  // namespace hapi
