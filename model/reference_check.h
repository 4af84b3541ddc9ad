// Checks an imported model against the reference outputs of the framework
// that exported its ONNX file (hapi-check-reference, docs/onnx-import.md,
// "Correctness against the exporting framework"): each reference image is
// decoded for the model's input spec as a served request is
// (core/image_decoder.h), the graph runs every stage and its classifier tail
// (FinalLogits, before any softmax), and the logits are compared row by row
// with the reference's.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hapi/v1/reference.pb.h"
#include "model/imported_model.h"

namespace hapi {

// Reads `path`, a hapi.v1.ReferenceOutputs in protobuf's JSON mapping (no
// unknown fields), and validates it (ValidateReferenceOutputs). A file that
// cannot be read keeps its status (NOT_FOUND, ...); one that does not parse
// is DATA_LOSS; one that does not validate is INVALID_ARGUMENT. Every message
// names `path`.
absl::StatusOr<v1::ReferenceOutputs> ReadReferenceOutputs(const std::string& path);

// INVALID_ARGUMENT, naming `name` and the problem, unless `ref` has at least
// one image, a positive class count, images x classes logits and either no
// labels or one per image.
absl::Status ValidateReferenceOutputs(const v1::ReferenceOutputs& ref, const std::string& name);

struct ReferenceCheckOptions {
  // The reference's name for messages and the result (its file's path).
  std::string reference = "the reference";
  // The directory the reference's images are relative to; empty: its
  // image_root (and empty there too: as given).
  std::string image_root;
  // Images per batch (at least 1).
  int batch = 50;
  // The limits: the largest |logit difference| allowed, the least fraction
  // of images whose top-1 classes agree.
  double max_abs_diff = 1e-3;
  double min_top1_agreement = 1.0;
};

// Runs `model` on the reference's images and compares its logits with the
// reference's. The result says whether the limits hold (`passed`); an error
// is a reference that does not validate or whose class count is not the
// model's (INVALID_ARGUMENT), an image that cannot be read (NOT_FOUND) or
// that the decoder refuses (INVALID_ARGUMENT), or a model that fails.
absl::StatusOr<v1::ReferenceCheck> CheckAgainstReference(const ImportedModel& model,
                                                         const v1::ReferenceOutputs& ref,
                                                         const ReferenceCheckOptions& options);

// `check` in protobuf's JSON mapping with the proto field names, every
// field printed (the unset optional accuracies excepted), and a newline.
absl::StatusOr<std::string> ReferenceCheckToJson(const v1::ReferenceCheck& check);

}  // namespace hapi
