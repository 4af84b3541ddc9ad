#include "server/oip_service.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/base/config.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"
#include "rpc/grpc_status.h"
#include "rpc/tsan_handoff.h"
#include "server/inference_service.h"
#include "server/metrics.h"

// Raw tensor contents are little-endian (the protocol's rule); numbers are
// copied to and from them as they are in memory.
#ifndef ABSL_IS_LITTLE_ENDIAN
#error "OIP raw tensor contents are little-endian; this code assumes a little-endian host"
#endif

namespace hapi {
namespace {

using InputTensor = inference::ModelInferRequest::InferInputTensor;
using Parameters = google::protobuf::Map<std::string, inference::InferParameter>;

constexpr char kServerName[] = "hapi-server";
constexpr char kServerVersion[] = "v1";  // the hapi API generation
constexpr char kPlatform[] = "hapi_early_exit";

// Names in requests are the client's: quoted as printable ASCII, long ones cut.
std::string Quoted(absl::string_view name) {
  constexpr size_t kMax = 64;
  return absl::StrCat("'", absl::CHexEscape(name.substr(0, kMax)),
                      name.size() > kMax ? "...'" : "'");
}

std::string DimsString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// --- request parameters -----------------------------------------------------

struct ParsedParameters {
  bool nhwc = false;
  absl::Duration budget = absl::InfiniteDuration();
};

absl::Status ParseLayout(const inference::InferParameter& p, bool* nhwc) {
  if (p.parameter_choice_case() == inference::InferParameter::kStringParam) {
    const std::string layout = absl::AsciiStrToUpper(p.string_param());
    if (layout == "NCHW" || layout == "NHWC") {
      *nhwc = layout == "NHWC";
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("parameter ", kOipLayoutParameter, " must be the string NCHW or NHWC"));
}

absl::Status ParseBudget(const inference::InferParameter& p, absl::Duration* budget) {
  double ms = 0;
  bool parsed = false;
  if (p.parameter_choice_case() == inference::InferParameter::kInt64Param) {
    ms = static_cast<double>(p.int64_param());
    parsed = true;
  } else if (p.parameter_choice_case() == inference::InferParameter::kStringParam) {
    parsed = absl::SimpleAtod(p.string_param(), &ms);
  }
  // Above a day it is no budget, and absl::Duration arithmetic stays exact.
  if (!parsed || !std::isfinite(ms) || ms <= 0 || ms > 864e5) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter ", kOipBudgetParameter,
                     " must be milliseconds in (0, 86400000], as an int64 or a decimal string"));
  }
  *budget = absl::Milliseconds(ms);
  return absl::OkStatus();
}

// Parameters prefixed hapi_ are this server's and must be known; others
// belong to clients and other servers and are ignored. The latency budget
// is a request parameter; the layout may also sit on the input tensor.
absl::Status ApplyParameters(const Parameters& parameters, bool on_input, ParsedParameters* out) {
  for (const auto& [key, value] : parameters) {
    if (!absl::StartsWith(key, "hapi_")) continue;
    if (key == kOipLayoutParameter) {
      HAPI_RETURN_IF_ERROR(ParseLayout(value, &out->nhwc));
    } else if (key == kOipBudgetParameter && !on_input) {
      HAPI_RETURN_IF_ERROR(ParseBudget(value, &out->budget));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown ", on_input ? "input 'image' parameter " : "request parameter ",
                       Quoted(key), "; known: ", kOipLayoutParameter, on_input ? "" : ", ",
                       on_input ? "" : kOipBudgetParameter));
    }
  }
  return absl::OkStatus();
}

// --- requested outputs ------------------------------------------------------

std::optional<OipOutput> OutputNamed(absl::string_view name) {
  if (name == kOipLabelOutput) return OipOutput::kLabel;
  if (name == kOipConfidenceOutput) return OipOutput::kConfidence;
  if (name == kOipExitOutput) return OipOutput::kExit;
  if (name == kOipProbabilitiesOutput) return OipOutput::kProbabilities;
  return std::nullopt;
}

// None requested: label, confidence and exit. Probabilities cost a second
// pass (AnsweringExitProbabilities), so they come only when asked for.
absl::StatusOr<std::vector<OipOutput>> RequestedOutputs(const inference::ModelInferRequest& r) {
  if (r.outputs().empty()) {
    return std::vector<OipOutput>{OipOutput::kLabel, OipOutput::kConfidence, OipOutput::kExit};
  }
  std::vector<OipOutput> outputs;
  for (const auto& requested : r.outputs()) {
    std::optional<OipOutput> output = OutputNamed(requested.name());
    if (!output.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown output ", Quoted(requested.name()),
                       "; outputs are label, confidence, exit and probabilities"));
    }
    if (std::count(outputs.begin(), outputs.end(), *output) > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("output ", Quoted(requested.name()), " is requested twice"));
    }
    outputs.push_back(*output);
  }
  return outputs;
}

// --- the input tensor -------------------------------------------------------

// The image input, and its raw contents (null when they are typed).
struct ImageInput {
  const InputTensor* tensor = nullptr;
  const std::string* raw = nullptr;
};

absl::StatusOr<ImageInput> FindImageInput(const inference::ModelInferRequest& r,
                                          absl::string_view model_name) {
  if (r.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("model ", Quoted(model_name),
                                                   " takes one input, 'image'; the request has ",
                                                   r.inputs_size()));
  }
  const InputTensor& t = r.inputs(0);
  if (t.name() != kOipImageInput) {
    return absl::InvalidArgumentError(absl::StrCat("unknown input ", Quoted(t.name()), "; model ",
                                                   Quoted(model_name),
                                                   " takes one input, 'image'"));
  }
  if (r.raw_input_contents_size() == 0) return ImageInput{&t, nullptr};
  if (r.raw_input_contents_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "raw_input_contents has ", r.raw_input_contents_size(), " entries for 1 input"));
  }
  if (t.has_contents()) {
    return absl::InvalidArgumentError(
        "input 'image' has both typed contents and raw_input_contents; send one");
  }
  return ImageInput{&t, &r.raw_input_contents(0)};
}

absl::StatusOr<int> BatchSize(const InputTensor& t, int max_batch) {
  const int64_t n = t.shape(0);
  if (n < 1 || n > max_batch) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'image' has shape ", DimsString(t.shape()), ": the batch dimension ", n,
                     " must be in [1, ", max_batch, "] (this server's queue capacity)"));
  }
  return static_cast<int>(n);
}

// An image tensor's geometry, checked against the model's input.
struct ImageGeometry {
  int n = 0, c = 0, h = 0, w = 0;
  bool nhwc = false;
  size_t element_size = 0;  // bytes
  size_t sample_bytes() const { return static_cast<size_t>(c) * h * w * element_size; }
};

absl::StatusOr<ImageGeometry> CheckImageShape(const InputTensor& t, const v1::TensorShape& want,
                                              bool nhwc, int max_batch,
                                              absl::string_view model_name) {
  const std::string expected =
      nhwc ? absl::StrCat("[-1, ", want.height(), ", ", want.width(), ", ", want.channels(), "]")
           : absl::StrCat("[-1, ", want.channels(), ", ", want.height(), ", ", want.width(), "]");
  const int c = nhwc ? 3 : 1, h = nhwc ? 1 : 2, w = nhwc ? 2 : 3;
  if (t.shape_size() != 4 || t.shape(c) != want.channels() || t.shape(h) != want.height() ||
      t.shape(w) != want.width()) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'image' has shape ", DimsString(t.shape()), "; model ",
                     Quoted(model_name), " takes ", expected, " (", nhwc ? "NHWC" : "NCHW",
                     "; parameter ", kOipLayoutParameter, " says which)"));
  }
  ImageGeometry g;
  HAPI_ASSIGN_OR_RETURN(g.n, BatchSize(t, max_batch));
  g.c = want.channels();
  g.h = want.height();
  g.w = want.width();
  g.nhwc = nhwc;
  g.element_size = t.datatype() == "FP32" ? sizeof(float) : 1;
  return g;
}

// The tensor's elements as little-endian bytes of its datatype (FP32 or UINT8).
absl::StatusOr<std::string> ImageElements(const ImageInput& in, const ImageGeometry& g) {
  const InputTensor& t = *in.tensor;
  const size_t count = g.sample_bytes() / g.element_size * g.n;
  const std::string what = absl::StrCat(" for shape ", DimsString(t.shape()), " of ", t.datatype());
  if (in.raw != nullptr) {
    if (in.raw->size() != count * g.element_size) {
      return absl::InvalidArgumentError(absl::StrCat("input 'image' has ", in.raw->size(),
                                                     " bytes of raw contents; expected ",
                                                     count * g.element_size, what));
    }
    return *in.raw;
  }
  const auto& fp32 = t.contents().fp32_contents();
  const auto& uint = t.contents().uint_contents();
  const size_t given = g.element_size == 1 ? uint.size() : fp32.size();
  if (given != count) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input 'image' has ", given, g.element_size == 1 ? " uint_contents" : " fp32_contents",
        "; expected ", count, what));
  }
  std::string bytes(count * g.element_size, '\0');
  if (g.element_size != 1) {
    std::memcpy(bytes.data(), fp32.data(), bytes.size());
    return bytes;
  }
  for (size_t i = 0; i < count; ++i) {
    if (uint[i] > 255) {
      return absl::InvalidArgumentError(absl::StrCat("input 'image' uint_contents[", i, "] is ",
                                                     uint[i], ", beyond UINT8's 255"));
    }
    bytes[i] = static_cast<char>(uint[i]);
  }
  return bytes;
}

std::string NhwcToNchw(const std::string& nhwc, const ImageGeometry& g) {
  std::string nchw(nhwc.size(), '\0');
  const size_t e = g.element_size;
  for (int n = 0; n < g.n; ++n)
    for (int y = 0; y < g.h; ++y)
      for (int x = 0; x < g.w; ++x)
        for (int c = 0; c < g.c; ++c) {
          const size_t from = (((static_cast<size_t>(n) * g.h + y) * g.w + x) * g.c + c) * e;
          const size_t to = (((static_cast<size_t>(n) * g.c + c) * g.h + y) * g.w + x) * e;
          std::memcpy(&nchw[to], &nhwc[from], e);
        }
  return nchw;
}

// The one call into the image decoder, through hapi.v1's own validation
// (RequestInput): an OIP image becomes exactly the input a hapi.v1 request
// with the same image would.
absl::StatusOr<std::vector<float>> DecodeSample(const v1::ClassifyRequest& request,
                                                const Model& model, absl::string_view model_name,
                                                int sample) {
  absl::StatusOr<std::vector<float>> pixels = RequestInput(request, model, model_name);
  if (!pixels.ok()) {
    return absl::Status(pixels.status().code(), absl::StrCat("input 'image' sample ", sample, ": ",
                                                             pixels.status().message()));
  }
  return pixels;
}

using Samples = std::vector<std::vector<float>>;

absl::StatusOr<Samples> TensorSamples(const ImageInput& in, const Model& model,
                                      absl::string_view model_name, bool nhwc, int max_batch) {
  HAPI_ASSIGN_OR_RETURN(ImageGeometry g, CheckImageShape(*in.tensor, model.input_shape(), nhwc,
                                                         max_batch, model_name));
  HAPI_ASSIGN_OR_RETURN(std::string bytes, ImageElements(in, g));
  if (g.nhwc && g.c > 1) bytes = NhwcToNchw(bytes, g);
  Samples samples;
  samples.reserve(g.n);
  v1::ClassifyRequest request;
  v1::Image* image = request.mutable_image();
  image->set_channels(g.c);
  image->set_height(g.h);
  image->set_width(g.w);
  for (int i = 0; i < g.n; ++i) {
    std::string sample = bytes.substr(i * g.sample_bytes(), g.sample_bytes());
    if (g.element_size == 1) {
      image->set_raw_uint8(std::move(sample));
    } else {
      image->set_raw_float32(std::move(sample));
    }
    HAPI_ASSIGN_OR_RETURN(std::vector<float> pixels, DecodeSample(request, model, model_name, i));
    samples.push_back(std::move(pixels));
  }
  return samples;
}

// BYTES in raw contents: each element is its length (4 bytes, little-endian)
// and then its bytes.
absl::StatusOr<std::vector<absl::string_view>> SplitRawBytes(const std::string& raw, int n) {
  std::vector<absl::string_view> elements;
  absl::string_view rest = raw;
  while (!rest.empty()) {
    uint32_t size = 0;
    if (rest.size() < sizeof(size)) break;
    std::memcpy(&size, rest.data(), sizeof(size));
    rest.remove_prefix(sizeof(size));
    if (size > rest.size()) break;
    elements.push_back(rest.substr(0, size));
    rest.remove_prefix(size);
  }
  if (!rest.empty() || static_cast<int>(elements.size()) != n) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'image' raw contents of ", raw.size(), " bytes do not hold ", n,
                     " BYTES elements, each a 4-byte little-endian length and that many bytes"));
  }
  return elements;
}

absl::StatusOr<Samples> EncodedSamples(const ImageInput& in, const Model& model,
                                       absl::string_view model_name, int max_batch) {
  const InputTensor& t = *in.tensor;
  if (t.shape_size() != 1 && !(t.shape_size() == 2 && t.shape(1) == 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input 'image' of BYTES has shape ", DimsString(t.shape()),
                     "; encoded images take [-1] (or [-1, 1]): one PNG or JPEG per element"));
  }
  HAPI_ASSIGN_OR_RETURN(const int n, BatchSize(t, max_batch));
  std::vector<absl::string_view> elements;
  if (in.raw != nullptr) {
    HAPI_ASSIGN_OR_RETURN(elements, SplitRawBytes(*in.raw, n));
  } else if (t.contents().bytes_contents_size() != n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "input 'image' has ", t.contents().bytes_contents_size(), " bytes_contents; expected ", n));
  } else {
    for (const std::string& e : t.contents().bytes_contents()) elements.push_back(e);
  }
  Samples samples;
  samples.reserve(n);
  v1::ClassifyRequest request;
  for (int i = 0; i < n; ++i) {
    request.mutable_image()->set_encoded(std::string(elements[i]));
    HAPI_ASSIGN_OR_RETURN(std::vector<float> pixels, DecodeSample(request, model, model_name, i));
    samples.push_back(std::move(pixels));
  }
  return samples;
}

absl::StatusOr<Samples> InputSamples(const inference::ModelInferRequest& r, const Model& model,
                                     absl::string_view model_name, bool nhwc, int max_batch) {
  HAPI_ASSIGN_OR_RETURN(ImageInput in, FindImageInput(r, model_name));
  const std::string& type = in.tensor->datatype();
  if (in.tensor->shape_size() == 0) {
    return absl::InvalidArgumentError("input 'image' has no shape");
  }
  if (type == "FP32" || type == "UINT8") {
    return TensorSamples(in, model, model_name, nhwc, max_batch);
  }
  if (type == "BYTES") return EncodedSamples(in, model, model_name, max_batch);
  return absl::InvalidArgumentError(absl::StrCat(
      "input 'image' has datatype ", Quoted(type), "; model ", Quoted(model_name),
      " takes FP32 (0..1) or UINT8 images [-1, C, H, W], or BYTES [-1] of encoded PNG/JPEG"));
}

}  // namespace

absl::StatusOr<OipInferRequest> ParseOipInferRequest(const inference::ModelInferRequest& request,
                                                     const Model& model,
                                                     absl::string_view model_name, int max_batch) {
  ParsedParameters parameters;
  HAPI_RETURN_IF_ERROR(ApplyParameters(request.parameters(), false, &parameters));
  if (request.inputs_size() == 1) {
    HAPI_RETURN_IF_ERROR(ApplyParameters(request.inputs(0).parameters(), true, &parameters));
  }
  OipInferRequest out;
  HAPI_ASSIGN_OR_RETURN(out.outputs, RequestedOutputs(request));
  HAPI_ASSIGN_OR_RETURN(out.samples,
                        InputSamples(request, model, model_name, parameters.nhwc, max_batch));
  out.latency_budget = parameters.budget;
  return out;
}

absl::StatusOr<std::vector<float>> AnsweringExitProbabilities(const Model& model,
                                                              const std::vector<float>& pixels,
                                                              const std::vector<int>& exits) {
  const int n = static_cast<int>(exits.size());
  const size_t classes = model.num_classes();
  std::vector<float> out(n * classes);
  std::vector<int> distinct = exits;
  for (int exit : exits) {
    if (exit < 0 || exit >= model.num_exits()) {
      return absl::InternalError(absl::StrCat("no model exit ", exit));
    }
  }
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  HAPI_ASSIGN_OR_RETURN(std::unique_ptr<Activations> x, model.Input(pixels.data(), n));
  std::vector<int> rows(n);  // sample of each row of x
  for (int i = 0; i < n; ++i) rows[i] = i;
  int stage = 0;
  for (int exit : distinct) {
    for (; stage <= model.ExitStage(exit); ++stage) HAPI_RETURN_IF_ERROR(model.RunStage(stage, *x));
    std::vector<float> probabilities;
    HAPI_RETURN_IF_ERROR(model.RunHead(exit, *x, &probabilities));
    if (probabilities.size() != rows.size() * classes) {
      return absl::InternalError(absl::StrCat("exit ", exit, " gave ", probabilities.size(),
                                              " probabilities for ", rows.size(), " samples"));
    }
    std::vector<int> keep, kept_rows;
    for (size_t r = 0; r < rows.size(); ++r) {
      if (exits[rows[r]] == exit) {
        std::copy_n(probabilities.begin() + r * classes, classes, out.begin() + rows[r] * classes);
      } else {
        keep.push_back(static_cast<int>(r));
        kept_rows.push_back(rows[r]);
      }
    }
    if (kept_rows.empty()) break;
    x->KeepRows(keep);
    rows = std::move(kept_rows);
  }
  return out;
}

namespace {

template <typename T>
std::string LittleEndianBytes(const std::vector<T>& values) {
  std::string bytes(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

void AddOutput(absl::string_view name, absl::string_view datatype, std::vector<int64_t> shape,
               std::string bytes, inference::ModelInferResponse* response) {
  inference::ModelInferResponse::InferOutputTensor* t = response->add_outputs();
  t->set_name(std::string(name));
  t->set_datatype(std::string(datatype));
  for (int64_t d : shape) t->add_shape(d);
  response->add_raw_output_contents(std::move(bytes));
}

// The answers of the samples, in the requested outputs' order.
void FillOutputs(const std::vector<OipOutput>& outputs, const std::vector<SampleResult>& results,
                 const std::vector<float>& probabilities, int classes,
                 inference::ModelInferResponse* response) {
  const int64_t n = static_cast<int64_t>(results.size());
  for (OipOutput output : outputs) {
    switch (output) {
      case OipOutput::kLabel: {
        std::vector<int64_t> labels;
        for (const SampleResult& r : results) labels.push_back(r.label);
        AddOutput(kOipLabelOutput, "INT64", {n}, LittleEndianBytes(labels), response);
        break;
      }
      case OipOutput::kConfidence: {
        std::vector<float> confidences;
        for (const SampleResult& r : results) confidences.push_back(r.confidence);
        AddOutput(kOipConfidenceOutput, "FP32", {n}, LittleEndianBytes(confidences), response);
        break;
      }
      case OipOutput::kExit: {
        std::vector<int32_t> exits;
        for (const SampleResult& r : results) exits.push_back(r.exit_index);
        AddOutput(kOipExitOutput, "INT32", {n}, LittleEndianBytes(exits), response);
        break;
      }
      case OipOutput::kProbabilities:
        AddOutput(kOipProbabilitiesOutput, "FP32", {n, classes}, LittleEndianBytes(probabilities),
                  response);
        break;
    }
  }
}

inference::InferParameter StringParameter(const std::string& value) {
  inference::InferParameter p;
  p.set_string_param(value);
  return p;
}

// One ModelInfer call while its samples run. Answers come from batch workers
// (or inline, on the calling thread); the last one writes the response and
// finishes the call. The samples' callbacks share it, so it outlives the
// handler.
class InferCall {
 public:
  InferCall(std::shared_ptr<const Servable> servable, std::vector<OipOutput> outputs, int n,
            std::vector<float> pixels, absl::Time start, inference::ModelInferResponse* response,
            grpc::ServerUnaryReactor* reactor, std::shared_ptr<std::atomic<bool>> cancelled)
      : servable_(std::move(servable)),
        outputs_(std::move(outputs)),
        pixels_(std::move(pixels)),
        start_(start),
        response_(response),
        reactor_(reactor),
        cancelled_(std::move(cancelled)),
        num_samples_(n),
        results_(n),
        remaining_(n) {}

  // Sample i's outcome, from the batcher; per sample, as hapi.v1 does per
  // request, it counts in hapi_requests_total and the request duration.
  void Done(int i, const InferenceOutcome& outcome) {
    if (VariantMetrics* m = servable_->metrics()) {
      m->RequestDone(outcome.status.code(), absl::ToDoubleSeconds(absl::Now() - start_));
    }
    Arrive(1, outcome.status, outcome.status.ok() ? &outcome.result : nullptr, i);
  }

  // The batcher refused sample `from` (queue full, shutting down), so it and
  // the samples after it were never queued; those queued before it stop at
  // their next exit boundary. The call fails with `status`.
  void Refused(int from, const absl::Status& status) {
    if (VariantMetrics* m = servable_->metrics()) m->RequestDone(status.code(), 0);
    Arrive(num_samples_ - from, status, nullptr, from);
    cancelled_->store(true);  // after the status is recorded: it wins over CANCELLED
  }

 private:
  void Arrive(int count, const absl::Status& status, const SampleResult* result, int i) {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      if (result != nullptr) results_[i] = *result;
      if (!status.ok() && status_.ok()) status_ = status;
      remaining_ -= count;
      last = remaining_ == 0;
    }
    if (last) Finish();
  }

  // Once: by the last sample to arrive, which takes the results.
  void Finish() {
    absl::Status status;
    std::vector<SampleResult> results;
    {
      absl::MutexLock lock(&mu_);
      status = status_;
      results.swap(results_);
    }
    if (status.ok()) status = WriteResponse(results);
    HandOffReactor(reactor_);
    reactor_->Finish(ToGrpcStatus(status));
  }

  absl::Status WriteResponse(const std::vector<SampleResult>& results) {
    std::vector<float> probabilities;
    const Model& model = servable_->executor().model();
    if (std::count(outputs_.begin(), outputs_.end(), OipOutput::kProbabilities) > 0) {
      std::vector<int> exits;
      for (const SampleResult& r : results) exits.push_back(r.exit_index);
      absl::StatusOr<std::vector<float>> p = AnsweringExitProbabilities(model, pixels_, exits);
      if (!p.ok()) {
        return absl::InternalError(absl::StrCat("model '", servable_->variant().model(),
                                                "': probabilities: ", p.status().message()));
      }
      probabilities = *std::move(p);
    }
    FillOutputs(outputs_, results, probabilities, model.num_classes(), response_);
    int64_t cut = 0;
    for (const SampleResult& r : results) cut += r.cut_short;
    auto& parameters = *response_->mutable_parameters();
    parameters[kOipVariantParameter] = StringParameter(servable_->variant().id());
    parameters[kOipDeviceParameter] = StringParameter(servable_->variant().device());
    parameters[kOipCutParameter].set_int64_param(cut);
    return absl::OkStatus();
  }

  // Constant after construction.
  const std::shared_ptr<const Servable> servable_;
  const std::vector<OipOutput> outputs_;
  const std::vector<float> pixels_;  // every sample, kept only for probabilities
  const absl::Time start_;
  inference::ModelInferResponse* const response_;  // written once, by Finish
  grpc::ServerUnaryReactor* const reactor_;
  const std::shared_ptr<std::atomic<bool>> cancelled_;
  const int num_samples_;

  absl::Mutex mu_;
  // Slot i is written once, by sample i's answer; taken by Finish after all.
  std::vector<SampleResult> results_ ABSL_GUARDED_BY(mu_);
  int remaining_ ABSL_GUARDED_BY(mu_);
  absl::Status status_ ABSL_GUARDED_BY(mu_);  // the first error
};

// The hand-over of a request's samples to the batcher: one request each, all
// on the same servable, so the batcher batches and compacts them as it does
// hapi.v1 requests when they meet in its queue.
void SubmitSamples(Batcher* batcher, const std::shared_ptr<const Servable>& servable,
                   std::vector<std::vector<float>> samples, absl::Time deadline,
                   const std::shared_ptr<std::atomic<bool>>& cancelled,
                   const std::shared_ptr<InferCall>& call) {
  for (int i = 0; i < static_cast<int>(samples.size()); ++i) {
    auto r = std::make_unique<InferenceRequest>();
    r->servable = servable;
    r->pixels = std::move(samples[i]);
    r->deadline = deadline;
    r->cancelled = cancelled;
    r->on_done = [call, i](const InferenceOutcome& outcome) { call->Done(i, outcome); };
    absl::Status st = batcher->Submit(std::move(r));
    if (!st.ok()) {
      call->Refused(i, st);
      return;
    }
  }
}

// A unary call whose samples stop at their next exit when the client goes.
class InferReactor : public grpc::ServerUnaryReactor {
 public:
  const std::shared_ptr<std::atomic<bool>>& cancelled() const { return cancelled_; }
  void OnCancel() override {
    TakeOverReactor(this);
    cancelled_->store(true);
  }
  void OnDone() override {
    TakeOverReactor(this);
    delete this;
  }

 private:
  const std::shared_ptr<std::atomic<bool>> cancelled_ = std::make_shared<std::atomic<bool>>(false);
};

absl::Time CallDeadline(const grpc::CallbackServerContext& ctx) {
  const auto d = ctx.deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

grpc::ServerUnaryReactor* Answer(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

inference::ModelMetadataResponse::TensorMetadata Tensor(absl::string_view name,
                                                        absl::string_view datatype,
                                                        std::vector<int64_t> shape) {
  inference::ModelMetadataResponse::TensorMetadata t;
  t.set_name(std::string(name));
  t.set_datatype(std::string(datatype));
  for (int64_t d : shape) t.add_shape(d);
  return t;
}

}  // namespace

OipService::OipService(ModelRegistry* models, OipServiceOptions options)
    : models_(models), options_(std::move(options)) {}

absl::StatusOr<std::shared_ptr<const Servable>> OipService::FindModel(absl::string_view name,
                                                                      absl::string_view version,
                                                                      ServedModel** served) const {
  HAPI_ASSIGN_OR_RETURN(ServedModel * model, models_->FindExact(name));
  std::shared_ptr<const Servable> servable = model->servables().current();
  if (!servable) return absl::UnavailableError("no variant is loaded yet");
  const v1::VariantManifest& v = servable->variant();
  if (name != v.model()) {  // unnamed: the model was swapped meanwhile
    return absl::NotFoundError(absl::StrCat("unknown model ", Quoted(name),
                                            "; this server serves model '", v.model(), "'"));
  }
  if (!version.empty() && version != v.id()) {
    return absl::NotFoundError(absl::StrCat("model '", v.model(), "' has no version ",
                                            Quoted(version), "; its version is the variant '",
                                            v.id(), "' (or empty)"));
  }
  if (served != nullptr) *served = model;
  return servable;
}

grpc::ServerUnaryReactor* OipService::ServerLive(grpc::CallbackServerContext* ctx,
                                                 const inference::ServerLiveRequest*,
                                                 inference::ServerLiveResponse* response) {
  response->set_live(true);  // it answers
  return Answer(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipService::ServerReady(grpc::CallbackServerContext* ctx,
                                                  const inference::ServerReadyRequest*,
                                                  inference::ServerReadyResponse* response) {
  response->set_ready(models_->AllLoaded());  // every model the server holds
  return Answer(ctx, absl::OkStatus());
}

// An unknown model or version is not ready, as in Triton: readiness probes
// ask a question, and false is its answer.
grpc::ServerUnaryReactor* OipService::ModelReady(grpc::CallbackServerContext* ctx,
                                                 const inference::ModelReadyRequest* request,
                                                 inference::ModelReadyResponse* response) {
  response->set_ready(FindModel(request->name(), request->version()).ok());
  return Answer(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipService::ServerMetadata(grpc::CallbackServerContext* ctx,
                                                     const inference::ServerMetadataRequest*,
                                                     inference::ServerMetadataResponse* response) {
  response->set_name(kServerName);
  response->set_version(kServerVersion);
  // No optional extension (model repository, statistics, shared memory,
  // classification, ...) is implemented, so none is listed.
  return Answer(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipService::ModelMetadata(grpc::CallbackServerContext* ctx,
                                                    const inference::ModelMetadataRequest* request,
                                                    inference::ModelMetadataResponse* response) {
  absl::StatusOr<std::shared_ptr<const Servable>> servable =
      FindModel(request->name(), request->version());
  if (!servable.ok()) return Answer(ctx, servable.status());
  const Model& model = (*servable)->executor().model();
  const v1::TensorShape shape = model.input_shape();
  response->set_name((*servable)->variant().model());
  response->add_versions((*servable)->variant().id());
  response->set_platform(kPlatform);
  // FP32 as listed; UINT8 of the same shape and BYTES [-1] of encoded images
  // are accepted too (docs/oip.md).
  *response->add_inputs() =
      Tensor(kOipImageInput, "FP32", {-1, shape.channels(), shape.height(), shape.width()});
  *response->add_outputs() = Tensor(kOipLabelOutput, "INT64", {-1});
  *response->add_outputs() = Tensor(kOipConfidenceOutput, "FP32", {-1});
  *response->add_outputs() = Tensor(kOipExitOutput, "INT32", {-1});
  *response->add_outputs() = Tensor(kOipProbabilitiesOutput, "FP32", {-1, model.num_classes()});
  return Answer(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* OipService::ModelInfer(grpc::CallbackServerContext* ctx,
                                                 const inference::ModelInferRequest* request,
                                                 inference::ModelInferResponse* response) {
  auto* reactor = new InferReactor();
  absl::Status st = StartInfer(*ctx, *request, response, reactor, reactor->cancelled());
  if (!st.ok()) reactor->Finish(ToGrpcStatus(st));
  return reactor;
}

absl::Status OipService::StartInfer(const grpc::CallbackServerContext& ctx,
                                    const inference::ModelInferRequest& request,
                                    inference::ModelInferResponse* response,
                                    grpc::ServerUnaryReactor* reactor,
                                    std::shared_ptr<std::atomic<bool>> cancelled) {
  const absl::Time start = absl::Now();
  ServedModel* model = nullptr;
  HAPI_ASSIGN_OR_RETURN(std::shared_ptr<const Servable> servable,
                        FindModel(request.model_name(), request.model_version(), &model));
  absl::StatusOr<OipInferRequest> parsed =
      ParseOipInferRequest(request, servable->executor().model(), servable->variant().model(),
                           model->batcher().options().queue_capacity);
  if (!parsed.ok()) {
    if (VariantMetrics* m = servable->metrics()) m->RequestDone(parsed.status().code(), 0);
    return parsed.status();
  }
  absl::Time deadline = CallDeadline(ctx);
  if (deadline != absl::InfiniteFuture()) deadline -= options_.response_margin;
  deadline = std::min(deadline, start + parsed->latency_budget);

  response->set_model_name(servable->variant().model());
  response->set_model_version(servable->variant().id());
  response->set_id(request.id());
  std::vector<float> pixels;  // kept for a second pass only when probabilities are wanted
  const auto& outputs = parsed->outputs;
  if (std::count(outputs.begin(), outputs.end(), OipOutput::kProbabilities) > 0) {
    for (const auto& sample : parsed->samples)
      pixels.insert(pixels.end(), sample.begin(), sample.end());
  }
  const int n = static_cast<int>(parsed->samples.size());
  auto call = std::make_shared<InferCall>(servable, std::move(parsed->outputs), n,
                                          std::move(pixels), start, response, reactor, cancelled);
  SubmitSamples(&model->batcher(), servable, std::move(parsed->samples), deadline, cancelled, call);
  return absl::OkStatus();
}

}  // namespace hapi
