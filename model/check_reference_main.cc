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
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/files.h"
#include "core/image_decoder.h"
#include "core/input_spec.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "google/protobuf/util/json_util.h"
#include "hapi/v1/reference.pb.h"
#include "model/imported_model.h"
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

// `s` as a JSON string's contents.
std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out;
}

int ArgMax(const float* row, int n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}

absl::Status Run(bool* passed) {
  const std::string model_dir = absl::GetFlag(FLAGS_model_dir);
  const std::string ref_path = absl::GetFlag(FLAGS_reference);
  if (model_dir.empty() || ref_path.empty()) {
    return absl::InvalidArgumentError("--model_dir and --reference are required");
  }
  const int batch = absl::GetFlag(FLAGS_batch);
  if (batch < 1) return absl::InvalidArgumentError("--batch must be at least 1");

  absl::StatusOr<std::string> json = ReadFile(ref_path);
  if (!json.ok()) {
    return absl::Status(json.status().code(),
                        absl::StrCat("reference ", ref_path, ": ", json.status().message()));
  }
  v1::ReferenceOutputs ref;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = false;
  if (auto st = google::protobuf::util::JsonStringToMessage(*json, &ref, parse); !st.ok()) {
    return absl::DataLossError(
        absl::StrCat("reference ", ref_path,
                     " is not a hapi.v1.ReferenceOutputs in JSON: ", std::string(st.message())));
  }
  const int n = ref.images_size();
  const int classes = ref.classes();
  if (n == 0)
    return absl::InvalidArgumentError(absl::StrCat("reference ", ref_path, " has no images"));
  if (classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("reference ", ref_path, " has classes ", classes, ", not a positive count"));
  }
  if (static_cast<int64_t>(ref.logits_size()) != static_cast<int64_t>(n) * classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("reference ", ref_path, " has ", ref.logits_size(), " logits, but ", n,
                     " images x ", classes, " classes need ", static_cast<int64_t>(n) * classes));
  }
  if (ref.labels_size() != 0 && ref.labels_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reference ", ref_path, " has ", ref.labels_size(), " labels for ", n, " images"));
  }

  SetIntraOpThreads(absl::GetFlag(FLAGS_threads));
  const ModelOptions options;  // the default execution path, as the server's
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<ImportedModel> model,
                        OpenImportedModel(model_dir, options, /*attach_heads=*/false));
  const std::string path = model->direct_program() != nullptr ? "direct oneDNN" : "LibTorch";
  if (model->num_classes() != classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("model ", model->manifest().name(), " has ", model->num_classes(),
                     " classes but the reference ", ref_path, " has ", classes));
  }
  const v1::InputSpec& spec = model->input_spec();
  std::string root = absl::GetFlag(FLAGS_image_root);
  if (root.empty()) root = ref.image_root();
  LOG(INFO) << "model " << model->manifest().name() << " (" << ShapeString(spec) << ", "
            << model->num_stages() << " stages, " << path << " path) against " << ref.framework()
            << " on " << n << " images under " << (root.empty() ? "." : root);

  const int64_t in_size = InputSize(spec);
  double max_abs = 0, sum_abs = 0;
  int worst_image = 0, agree = 0, correct_model = 0, correct_ref = 0;
  std::vector<float> pixels, logits;
  const absl::Time start = absl::Now();
  for (int b0 = 0; b0 < n; b0 += batch) {
    const int m = std::min(batch, n - b0);
    pixels.clear();
    pixels.reserve(static_cast<size_t>(m * in_size));
    for (int i = b0; i < b0 + m; ++i) {
      const std::string file =
          root.empty() ? ref.images(i) : absl::StrCat(root, "/", ref.images(i));
      absl::StatusOr<std::string> bytes = ReadFile(file);
      if (!bytes.ok()) {
        return absl::NotFoundError(absl::StrCat("image ", i, " of the reference (", file,
                                                "): ", bytes.status().message()));
      }
      absl::StatusOr<std::vector<float>> x = DecodeEncodedImage(*bytes, spec);
      if (!x.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("image ", i, " (", file, "): ", x.status().message()));
      }
      pixels.insert(pixels.end(), x->begin(), x->end());
    }
    HAPI_ASSIGN_OR_RETURN(std::unique_ptr<Activations> act, model->Input(pixels.data(), m));
    for (int s = 0; s < model->num_stages(); ++s) HAPI_RETURN_IF_ERROR(model->RunStage(s, *act));
    HAPI_RETURN_IF_ERROR(model->FinalLogits(*act, &logits));
    if (static_cast<int64_t>(logits.size()) != static_cast<int64_t>(m) * classes) {
      return absl::InternalError(
          absl::StrCat("the model returned ", logits.size(), " logits for ", m, " images"));
    }
    for (int r = 0; r < m; ++r) {
      const int i = b0 + r;
      const float* got = logits.data() + static_cast<size_t>(r) * classes;
      const float* want = ref.logits().data() + static_cast<size_t>(i) * classes;
      for (int c = 0; c < classes; ++c) {
        const double d = std::isfinite(got[c]) ? std::fabs(double{got[c]} - want[c])
                                               : std::numeric_limits<double>::infinity();
        sum_abs += d;
        if (d > max_abs) max_abs = d, worst_image = i;
      }
      const int top_got = ArgMax(got, classes), top_want = ArgMax(want, classes);
      agree += top_got == top_want;
      if (ref.labels_size() != 0) {
        correct_model += top_got == ref.labels(i);
        correct_ref += top_want == ref.labels(i);
      }
    }
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  const double agreement = static_cast<double>(agree) / n;
  *passed = max_abs <= absl::GetFlag(FLAGS_max_abs_diff) &&
            agreement >= absl::GetFlag(FLAGS_min_top1_agreement);
  std::string accuracy;
  if (ref.labels_size() != 0) {
    accuracy = absl::StrFormat("; top-1 accuracy: imported %.2f%%, %s %.2f%%",
                               100.0 * correct_model / n, ref.framework(), 100.0 * correct_ref / n);
  }
  std::printf(
      "%s: %s against %s on %d images (%s path): max |logit diff| %.3g (image %d), mean %.3g; "
      "top-1 agreement %d/%d (%.2f%%)%s; limits %.3g and %.2f%%: %s\n",
      model->manifest().name().c_str(), model_dir.c_str(), ref.framework().c_str(), n, path.c_str(),
      max_abs, worst_image, sum_abs / (static_cast<double>(n) * classes), agree, n, 100 * agreement,
      accuracy.c_str(), absl::GetFlag(FLAGS_max_abs_diff),
      100 * absl::GetFlag(FLAGS_min_top1_agreement), *passed ? "PASS" : "FAIL");
  if (const std::string out = absl::GetFlag(FLAGS_json); !out.empty()) {
    std::string j = absl::StrFormat(
        "{\"model\": \"%s\", \"reference\": \"%s\", \"framework\": \"%s\", \"images\": %d, "
        "\"classes\": %d, \"path\": \"%s\", \"max_abs_logit_diff\": %.9g, "
        "\"mean_abs_logit_diff\": %.9g, \"worst_image\": %d, \"top1_agree\": %d, "
        "\"top1_agreement\": %.6f, \"max_abs_diff_limit\": %.9g, "
        "\"min_top1_agreement\": %.6f, \"seconds\": %.2f, \"passed\": %s",
        JsonEscape(model->manifest().name()), JsonEscape(ref_path), JsonEscape(ref.framework()), n,
        classes, path, max_abs, sum_abs / (static_cast<double>(n) * classes), worst_image, agree,
        agreement, absl::GetFlag(FLAGS_max_abs_diff), absl::GetFlag(FLAGS_min_top1_agreement),
        seconds, *passed ? "true" : "false");
    if (ref.labels_size() != 0) {
      absl::StrAppendFormat(&j, ", \"accuracy_imported\": %.6f, \"accuracy_reference\": %.6f",
                            static_cast<double>(correct_model) / n,
                            static_cast<double>(correct_ref) / n);
    }
    j += "}\n";
    HAPI_RETURN_IF_ERROR(WriteFileAtomically(out, j));
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
