#include "model/reference_check.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/files.h"
#include "core/image_decoder.h"
#include "core/input_spec.h"
#include "core/status_macros.h"
#include "google/protobuf/util/json_util.h"

namespace hapi {
namespace {

int ArgMax(const float* row, int n) {
  return static_cast<int>(std::max_element(row, row + n) - row);
}

// Running sums of the comparison.
struct Tally {
  double max_abs = 0, sum_abs = 0;
  int worst_image = 0, agree = 0, correct_model = 0, correct_ref = 0;
};

// Reads and decodes images [b0, b0 + m) of `ref` for `spec`, appended to
// `pixels`.
absl::Status DecodeImages(const v1::ReferenceOutputs& ref, const std::string& root,
                          const v1::InputSpec& spec, int b0, int m, std::vector<float>* pixels) {
  for (int i = b0; i < b0 + m; ++i) {
    const std::string file = root.empty() ? ref.images(i) : absl::StrCat(root, "/", ref.images(i));
    absl::StatusOr<std::string> bytes = ReadFile(file);
    if (!bytes.ok()) {
      return absl::NotFoundError(
          absl::StrCat("image ", i, " of the reference (", file, "): ", bytes.status().message()));
    }
    absl::StatusOr<std::vector<float>> x = DecodeEncodedImage(*bytes, spec);
    if (!x.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("image ", i, " (", file, "): ", x.status().message()));
    }
    pixels->insert(pixels->end(), x->begin(), x->end());
  }
  return absl::OkStatus();
}

// The model's logits (m x classes) for `pixels`, m images.
absl::Status RunModel(const ImportedModel& model, const std::vector<float>& pixels, int m,
                      int classes, std::vector<float>* logits) {
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<Activations> act, model.Input(pixels.data(), m));
  for (int s = 0; s < model.num_stages(); ++s) HAPI_RETURN_IF_ERROR(model.RunStage(s, *act));
  HAPI_RETURN_IF_ERROR(model.FinalLogits(*act, logits));
  if (static_cast<int64_t>(logits->size()) != static_cast<int64_t>(m) * classes) {
    return absl::InternalError(
        absl::StrCat("the model returned ", logits->size(), " logits for ", m, " images"));
  }
  return absl::OkStatus();
}

// Compares `logits` (rows b0 .. b0 + m of the model's answers) with the
// reference's rows.
void Compare(const v1::ReferenceOutputs& ref, const std::vector<float>& logits, int b0, int m,
             Tally* t) {
  const int classes = ref.classes();
  for (int r = 0; r < m; ++r) {
    const int i = b0 + r;
    const float* got = logits.data() + static_cast<size_t>(r) * classes;
    const float* want = ref.logits().data() + static_cast<size_t>(i) * classes;
    for (int c = 0; c < classes; ++c) {
      const double d = std::isfinite(got[c]) ? std::fabs(double{got[c]} - want[c])
                                             : std::numeric_limits<double>::infinity();
      t->sum_abs += d;
      if (d > t->max_abs) t->max_abs = d, t->worst_image = i;
    }
    const int top_got = ArgMax(got, classes), top_want = ArgMax(want, classes);
    t->agree += top_got == top_want;
    if (ref.labels_size() != 0) {
      t->correct_model += top_got == ref.labels(i);
      t->correct_ref += top_want == ref.labels(i);
    }
  }
}

// The result's statistics and verdict from `t`.
void Summarize(const Tally& t, const v1::ReferenceOutputs& ref,
               const ReferenceCheckOptions& options, v1::ReferenceCheck* check) {
  const int n = ref.images_size();
  check->set_max_abs_logit_diff(t.max_abs);
  check->set_mean_abs_logit_diff(t.sum_abs / (static_cast<double>(n) * ref.classes()));
  check->set_worst_image(t.worst_image);
  check->set_top1_agree(t.agree);
  check->set_top1_agreement(static_cast<double>(t.agree) / n);
  check->set_max_abs_diff_limit(options.max_abs_diff);
  check->set_min_top1_agreement(options.min_top1_agreement);
  check->set_passed(t.max_abs <= options.max_abs_diff &&
                    check->top1_agreement() >= options.min_top1_agreement);
  if (ref.labels_size() != 0) {
    check->set_accuracy_imported(static_cast<double>(t.correct_model) / n);
    check->set_accuracy_reference(static_cast<double>(t.correct_ref) / n);
  }
}

}  // namespace

absl::Status ValidateReferenceOutputs(const v1::ReferenceOutputs& ref, const std::string& name) {
  const int n = ref.images_size();
  const int classes = ref.classes();
  if (n == 0) return absl::InvalidArgumentError(absl::StrCat("reference ", name, " has no images"));
  if (classes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("reference ", name, " has classes ", classes, ", not a positive count"));
  }
  if (static_cast<int64_t>(ref.logits_size()) != static_cast<int64_t>(n) * classes) {
    return absl::InvalidArgumentError(
        absl::StrCat("reference ", name, " has ", ref.logits_size(), " logits, but ", n,
                     " images x ", classes, " classes need ", static_cast<int64_t>(n) * classes));
  }
  if (ref.labels_size() != 0 && ref.labels_size() != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("reference ", name, " has ", ref.labels_size(), " labels for ", n, " images"));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::ReferenceOutputs> ReadReferenceOutputs(const std::string& path) {
  absl::StatusOr<std::string> json = ReadFile(path);
  if (!json.ok()) {
    return absl::Status(json.status().code(),
                        absl::StrCat("reference ", path, ": ", json.status().message()));
  }
  v1::ReferenceOutputs ref;
  google::protobuf::util::JsonParseOptions parse;
  parse.ignore_unknown_fields = false;
  if (auto st = google::protobuf::util::JsonStringToMessage(*json, &ref, parse); !st.ok()) {
    return absl::DataLossError(
        absl::StrCat("reference ", path,
                     " is not a hapi.v1.ReferenceOutputs in JSON: ", std::string(st.message())));
  }
  HAPI_RETURN_IF_ERROR(ValidateReferenceOutputs(ref, path));
  return ref;
}

absl::StatusOr<v1::ReferenceCheck> CheckAgainstReference(const ImportedModel& model,
                                                         const v1::ReferenceOutputs& ref,
                                                         const ReferenceCheckOptions& options) {
  HAPI_RETURN_IF_ERROR(ValidateReferenceOutputs(ref, options.reference));
  if (options.batch < 1) return absl::InvalidArgumentError("the batch must be at least 1");
  if (model.num_classes() != ref.classes()) {
    return absl::InvalidArgumentError(absl::StrCat("model ", model.manifest().name(), " has ",
                                                   model.num_classes(), " classes but reference ",
                                                   options.reference, " has ", ref.classes()));
  }
  v1::ReferenceCheck check;
  check.set_model(model.manifest().name());
  check.set_reference(options.reference);
  check.set_framework(ref.framework());
  check.set_images(ref.images_size());
  check.set_classes(ref.classes());
  check.set_path(model.direct_program() != nullptr ? "direct oneDNN" : "LibTorch");
  const std::string root = options.image_root.empty() ? ref.image_root() : options.image_root;
  const int n = ref.images_size();
  Tally tally;
  std::vector<float> pixels, logits;
  const absl::Time start = absl::Now();
  for (int b0 = 0; b0 < n; b0 += options.batch) {
    const int m = std::min(options.batch, n - b0);
    pixels.clear();
    HAPI_RETURN_IF_ERROR(DecodeImages(ref, root, model.input_spec(), b0, m, &pixels));
    HAPI_RETURN_IF_ERROR(RunModel(model, pixels, m, ref.classes(), &logits));
    Compare(ref, logits, b0, m, &tally);
  }
  check.set_seconds(absl::ToDoubleSeconds(absl::Now() - start));
  Summarize(tally, ref, options, &check);
  return check;
}

absl::StatusOr<std::string> ReferenceCheckToJson(const v1::ReferenceCheck& check) {
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  print.always_print_primitive_fields = true;
  std::string json;
  if (auto st = google::protobuf::util::MessageToJsonString(check, &json, print); !st.ok()) {
    return absl::InternalError(
        absl::StrCat("cannot write the check as JSON: ", std::string(st.message())));
  }
  return json + "\n";
}

}  // namespace hapi
