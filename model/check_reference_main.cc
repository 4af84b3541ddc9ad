// hapi-check-reference: checks an imported model (a directory written by
// hapi-import) against the framework that exported its ONNX file
// (docs/onnx-import.md, "Correctness against the exporting framework"). The
// reference (hapi.v1.ReferenceOutputs in protobuf's JSON mapping) holds the
// framework's logits for some images; each image is decoded for the model's
// input spec as a served request is (core/image_decoder.h), the graph runs on
// the default execution path (ModelOptions defaults: the direct oneDNN path)
// and its logits, before any softmax, are compared row by row.
//
//   hapi-check-reference --model_dir=repository/models/my-net
//       --reference=net.onnx.reference.json [--image_root=DIR]
//       [--max_abs_diff=1e-3] [--min_top1_agreement=1] [--json=out.json]
//
// Exit status 0 when the largest |logit difference| is at most
// --max_abs_diff and the top-1 classes agree on at least
// --min_top1_agreement of the images; 1 otherwise, or on an error (a missing
// or unreadable file, a class or image count that does not fit), with the
// problem named.
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_format.h"
#include "core/files.h"
#include "core/input_spec.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "hapi/v1/reference.pb.h"
#include "model/imported_model.h"
#include "model/reference_check.h"
#include "model/torch_model.h"

ABSL_FLAG(std::string, model_dir, "", "The imported model's directory (required)");
ABSL_FLAG(std::string, reference, "",
          "The reference outputs, hapi.v1.ReferenceOutputs as JSON (required)");
ABSL_FLAG(std::string, image_root, "",
          "The directory the reference's images are relative to (default: its image_root)");
ABSL_FLAG(double, max_abs_diff, 1e-3, "Largest |logit difference| allowed");
ABSL_FLAG(double, min_top1_agreement, 1.0,
          "Least fraction of images whose top-1 classes must agree");
ABSL_FLAG(int32_t, batch, 50, "Images per batch");
ABSL_FLAG(int32_t, threads, 1, "Intra-op threads");
ABSL_FLAG(std::string, json, "", "Also write the result here as JSON");

namespace hapi {
namespace {

// The one-line summary the tool prints.
std::string Summary(const v1::ReferenceCheck& c, const std::string& model_dir) {
  std::string accuracy;
  if (c.has_accuracy_imported()) {
    accuracy =
        absl::StrFormat("; top-1 accuracy: imported %.2f%%, %s %.2f%%", 100 * c.accuracy_imported(),
                        c.framework(), 100 * c.accuracy_reference());
  }
  return absl::StrFormat(
      "%s: %s against %s on %d images (%s path): max |logit diff| %.3g (image %d), mean %.3g; "
      "top-1 agreement %d/%d (%.2f%%)%s; limits %.3g and %.2f%%: %s",
      c.model(), model_dir, c.framework(), c.images(), c.path(), c.max_abs_logit_diff(),
      c.worst_image(), c.mean_abs_logit_diff(), c.top1_agree(), c.images(),
      100 * c.top1_agreement(), accuracy, c.max_abs_diff_limit(), 100 * c.min_top1_agreement(),
      c.passed() ? "PASS" : "FAIL");
}

absl::Status Run(bool* passed) {
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  ReferenceCheckOptions options;
  options.reference = absl::GetFlag(FLAGS_reference);
  if (model_dir.empty() || options.reference.empty()) {
    return absl::InvalidArgumentError("--model_dir and --reference are required");
  }
  options.batch = absl::GetFlag(FLAGS_batch);
  if (options.batch < 1) return absl::InvalidArgumentError("--batch must be at least 1");
  options.image_root = absl::GetFlag(FLAGS_image_root);
  options.max_abs_diff = absl::GetFlag(FLAGS_max_abs_diff);
  options.min_top1_agreement = absl::GetFlag(FLAGS_min_top1_agreement);
  HAPI_ASSIGN_OR_RETURN(v1::ReferenceOutputs ref, ReadReferenceOutputs(options.reference));

  SetIntraOpThreads(absl::GetFlag(FLAGS_threads));
  const ModelOptions model_options;  // the default execution path, as the server's
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<ImportedModel> model,
                        OpenImportedModel(model_dir, model_options, /*attach_heads=*/false));
  const std::string root = options.image_root.empty() ? ref.image_root() : options.image_root;
  LOG(INFO) << "model " << model->manifest().name() << " (" << ShapeString(model->input_spec())
            << ", " << model->num_stages() << " stages, "
            << (model->direct_program() != nullptr ? "direct oneDNN" : "LibTorch")
            << " path) against " << ref.framework() << " on " << ref.images_size()
            << " images under " << (root.empty() ? "." : root);
  HAPI_ASSIGN_OR_RETURN(v1::ReferenceCheck check, CheckAgainstReference(*model, ref, options));
  *passed = check.passed();
  std::printf("%s\n", Summary(check, model_dir).c_str());
  if (const std::string out = absl::GetFlag(FLAGS_json); !out.empty()) {
    HAPI_ASSIGN_OR_RETURN(std::string json, ReferenceCheckToJson(check));
    HAPI_RETURN_IF_ERROR(WriteFileAtomically(out, json));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace hapi

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Checks an imported model against the reference outputs of the framework that exported "
      "its ONNX file: max |logit difference| and top-1 agreement on the reference's images.");
  absl::ParseCommandLine(argc, argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  bool passed = false;
  if (absl::Status st = hapi::Run(&passed); !st.ok()) {
    std::fprintf(stderr, "hapi-check-reference: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return passed ? 0 : 1;
}
