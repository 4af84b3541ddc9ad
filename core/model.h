// The model seam: all that the executor, server, profiler and benchmarks know
// of a model. A model is ordered stages with candidate exits after some of
// them; a batch flows through the stages, and an exit head turns the output of
// its stage into class probabilities. Implementations: the residual network
// (model/torch_model.h), and a fake for tests (core/fake_model.h).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hapi/v1/model.pb.h"

namespace hapi {

// A batch of activations between two stages. Opaque: each implementation
// keeps its own tensor type behind it.
class Activations {
 public:
  virtual ~Activations() = default;
  virtual int batch_size() const = 0;
  // Keeps only `rows` (ascending indices into the current batch), in order:
  // samples that left at an exit cost no more compute.
  virtual void KeepRows(const std::vector<int>& rows) = 0;
};

// How an implementation prepares a model for inference. Implementations may
// ignore options that do not apply to them.
struct ModelOptions {
  bool fuse_batch_norm = true;  // fold BN into convolutions (docs/executor-bench.md)
  bool channels_last = true;    // NHWC activations (docs/executor-bench.md)
  bool onednn = true;           // oneDNN convolutions instead of LibTorch's choice
  // The direct path (model/direct_program.h): oneDNN primitives created once
  // per model and batch size, weights prepacked, bias/activation/residual add
  // fused, one blocked layout from stage to stage; no LibTorch per request.
  // Models whose ops it cannot lower run the LibTorch path above.
  bool direct = true;
  // The direct path's convolutions in int8 (DirectProgram::Int8), the
  // residual network and imported graphs: with these ranges
  // (hapi.v1.Int8Ranges.max_abs);
  // LoadTorchModel reads them from the model directory's int8-ranges.pbtxt
  // (hapi-quantize) when `int8` is set and they are not given.
  bool int8 = false;
  std::shared_ptr<const std::map<std::string, float>> int8_ranges;
  // Or ranges calibrated when the model loads, on these samples
  // (input_shape() floats each, in [0,1]; from the training split).
  std::shared_ptr<const std::vector<float>> int8_calibration;
};

// Ready for inference. Every method is const and safe to call from several
// threads at once (each call works on its own Activations).
class Model {
 public:
  virtual ~Model() = default;

  // Stages (output shapes, MACs), exits (the stage each reads, MACs; the last
  // exit is the final classifier), class names.
  virtual const v1::ModelManifest& manifest() const = 0;
  // What the model eats: its manifest's effective input spec
  // (core/input_spec.h), derived once. Loaders refuse a manifest whose spec
  // is invalid (should one get here, this is its `input` as stored).
  const v1::InputSpec& input_spec() const;
  // One sample: channels x height x width floats in [0,1], row-major. By
  // default input_spec()'s shape.
  virtual v1::TensorShape input_shape() const;

  // `n` samples of input_shape() floats each, normalised as input_spec() says.
  virtual absl::StatusOr<std::unique_ptr<Activations>> Input(const float* pixels, int n) const = 0;
  // Runs stage `stage` on `x` in place.
  virtual absl::Status RunStage(int stage, Activations& x) const = 0;
  // Class probabilities (softmax) of exit `exit` for every row of `x`, which
  // holds the output of stage manifest().exits(exit).after_stage():
  // batch_size x num_classes floats, row-major, into `probabilities`.
  virtual absl::Status RunHead(int exit, const Activations& x,
                               std::vector<float>* probabilities) const = 0;

  int num_stages() const { return manifest().stages_size(); }
  int num_exits() const { return manifest().exits_size(); }
  int final_exit() const { return num_exits() - 1; }
  int num_classes() const { return manifest().class_names_size(); }
  int ExitStage(int exit) const { return manifest().exits(exit).after_stage(); }
  // Floats per sample.
  int input_size() const;

 private:
  mutable absl::once_flag input_spec_once_;
  mutable v1::InputSpec input_spec_;
};

// Loads the model stored in a repository's model directory. Processes inject
// the implementation they link (LoadTorchModel in model/), so that libraries
// above the seam link none.
using ModelLoader = std::function<absl::StatusOr<std::shared_ptr<const Model>>(
    const std::string& model_dir, const ModelOptions& options)>;

}  // namespace hapi
