// The direct inference path: a lowered graph (model/onnx_import.h) cut into
// segments and run with oneDNN primitives that this program owns, without
// LibTorch in the loop (docs/performance.md):
//  - primitives are created once per segment and input layout (so once per
//    batch size), for inference, with a user scratchpad;
//  - weights are reordered once into the layout each convolution asks for;
//  - bias and activation are fused into convolutions as post-ops, and a
//    residual Add into the convolution producing one of its operands (sum
//    post-op, written over the other operand's buffer);
//  - activations stay in the blocked layout oneDNN chooses from stage to
//    stage (and exit heads read it directly); a reorder runs only where an op
//    asks for a different layout;
//  - memory objects, workspace and scratchpad are bound once per thread
//    context and reused by every call.
// Torch-free header.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/model.h"
#include "model/imported_model.h"
#include "model/onnx_import.h"

namespace hapi {

class DirectProgram {
 public:
  // Segment s of `segments` (SplitGraph of `graph`) is stage s, except the
  // last, the classifier tail, whose output is the logits. `mean` and `std`
  // normalise each input channel. UNIMPLEMENTED naming the node when an op or
  // attribute is one this path does not lower (the caller keeps its own
  // path); the program is checked by compiling it for batch size 1.
  static absl::StatusOr<std::unique_ptr<DirectProgram>> Create(
      const ImportedGraph& graph, const std::vector<GraphSegment>& segments,
      std::vector<float> mean, std::vector<float> std);
  ~DirectProgram();

  int num_stages() const;

  // A copy of this (fp32) program whose convolutions run in int8 with
  // oneDNN (post-training, static): weights s8 with one scale per output
  // channel, activations u8 after ReLU and s8 elsewhere, each tensor's range
  // the largest |value| this program computes on `n` calibration samples
  // (`pixels` as Input takes them: use the training split, never the test
  // split). Other ops, exit heads and the classifier run in fp32 on
  // dequantised inputs. UNIMPLEMENTED when oneDNN has no int8 kernel for a
  // convolution of the graph.
  absl::StatusOr<std::unique_ptr<DirectProgram>> Int8(const float* pixels, int n) const;
  // The same with ranges computed before (Ranges); INVALID_ARGUMENT naming a
  // tensor the ranges lack.
  absl::StatusOr<std::unique_ptr<DirectProgram>> Int8(std::map<std::string, float> ranges) const;
  // Int8's ranges: every graph tensor's largest |value| on `n` samples.
  absl::StatusOr<std::map<std::string, float>> Ranges(const float* pixels, int n) const;

  // Makes `exit` (an early exit, any index below 1000) run `head` on the
  // output of `stage`. Not thread-safe: attach every head before the program
  // is shared. INVALID_ARGUMENT when the shapes do not fit.
  absl::Status AttachHead(int exit, int stage, const ExitHeadWeights& head);

  // n samples of channels x height x width floats, normalised.
  std::unique_ptr<Activations> Input(const float* pixels, int n) const;
  // Runs stage `stage` on `x` (made by Input) in place.
  absl::Status RunStage(int stage, Activations& x) const;
  // The classifier tail on the last stage's output: batch x classes logits.
  absl::Status FinalLogits(const Activations& x, std::vector<float>* logits) const;
  // The logits of attached head `exit` on its stage's output.
  absl::Status HeadLogits(int exit, const Activations& x, std::vector<float>* logits) const;
  // x's activations as plain row-major floats of shape `dims` (N x C x H x W
  // between stages), for training on the features the path computes.
  absl::Status CopyOut(const Activations& x, std::vector<float>* values,
                       std::vector<int64_t>* dims) const;

 private:
  struct Impl;
  absl::Status Check() const;
  absl::Status Calibrate(const float* pixels, int n, std::map<std::string, float>* max) const;
  explicit DirectProgram(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Softmax over each row of `values` (rows of `width`), in place.
void SoftmaxRows(std::vector<float>* values, int width);

// The number of threads each oneDNN primitive of the calling thread uses,
// set for every thread that runs a DirectProgram (0: leave the default).
void SetDirectThreads(int threads);

}  // namespace hapi
