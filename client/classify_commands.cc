// classify, bench and export-samples: images through hapi.v1.Inference or the
// Open Inference Protocol (--protocol), and the Fashion-MNIST test images or
// the image folder (--image_folder, core/image_folder.h) they can come from.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/commands.h"
#include "client/image_shift.h"
#include "client/input_packing.h"
#include "client/load_generator.h"
#include "client/monitor_report.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "core/image_folder.h"
#include "core/input_spec.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "hapi/v1/inference.grpc.pb.h"
#include "inference/grpc_service.grpc.pb.h"
#include "stb_image_write.h"

namespace hapi::client {
namespace {

namespace fs = std::filesystem;

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = false;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

ImageSet TestSet(const std::string& data_dir) {
  auto data = LoadFashionMnist(data_dir);
  if (!data.ok()) Die(std::string(data.status().message()));
  return std::move(data->test);
}

// --- classify ------------------------------------------------------------

struct Input {
  std::string name;
  v1::Image image;
  int truth = -1;
};

std::vector<Input> FileInputs(const std::vector<std::string>& paths);

std::vector<std::string> ImageFilesIn(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string ext = e.path().extension().string();
    if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".PNG" || ext == ".JPG") {
      files.push_back(e.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) Die(absl::StrCat(dir, ": no .png or .jpg files"));
  return files;
}

Input FileInput(const std::string& path) {
  auto bytes = ReadFile(path);
  if (!bytes.ok()) Die(absl::StrCat(path, ": ", bytes.status().message()));
  Input in;
  in.name = path;
  in.image.set_encoded(*bytes);
  // Files written by export-samples are named <index>_<label>.png.
  std::string stem = fs::path(path).stem().string();
  auto us = stem.rfind('_');
  int label;
  if (us != std::string::npos && absl::SimpleAtoi(stem.substr(us + 1), &label) && label >= 0 &&
      label < kNumClasses) {
    in.truth = label;
  }
  return in;
}

std::vector<Input> FileInputs(const std::vector<std::string>& paths) {
  std::vector<Input> out;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      auto more = FileInputs(ImageFilesIn(p));
      out.insert(out.end(), more.begin(), more.end());
    } else {
      out.push_back(FileInput(p));
    }
  }
  return out;
}

// The input spec (ServingStatus.input) of `model` (empty: the only one
// served), asked once per command: what raw tensors are shaped to. Servers
// that speak only OIP give no hapi.v1 status; without it the default model's
// 1x28x28 is assumed.
v1::InputSpec ServedSpec(const Connection& conn, bool oip, const std::string& model) {
  Rpc<v1::Inference> rpc(conn, 5);
  v1::ServingStatusRequest request;
  request.set_model(model);
  v1::ServingStatus st;
  grpc::Status status = rpc.stub->GetServingStatus(&rpc.context, request, &st);
  if (!status.ok() && oip && status.error_code() == grpc::StatusCode::UNIMPLEMENTED) {
    return ServedInputSpec(v1::ServingStatus());
  }
  Check(status, "server status (the model's input spec)");
  if (st.models_size() > 0) {
    std::string names;
    for (const v1::ServingStatus& m : st.models()) {
      absl::StrAppend(&names, names.empty() ? "" : ", ", m.model());
    }
    Die(absl::StrCat("the server serves several models (", names, "): pass --model"), 2);
  }
  return ServedInputSpec(st);
}

// Test images (grey 28x28) as the model of `spec` takes them (GrayImageFor:
// the grey replicated into each channel when the size is the model's, else a
// PNG the server converts).
std::vector<Input> IdxInputs(const std::string& data_dir, int count, int offset,
                             const v1::InputSpec& spec) {
  ImageSet test = TestSet(data_dir);
  std::vector<Input> out;
  for (int i = offset; i < test.size() && (count <= 0 || static_cast<int>(out.size()) < count);
       ++i) {
    Input in;
    in.name = absl::StrCat("test[", i, "]");
    absl::StatusOr<v1::Image> image = GrayImageFor(test.image(i), kImageSide, kImageSide, spec);
    if (!image.ok()) Die(std::string(image.status().message()));
    in.image = *std::move(image);
    in.truth = test.labels[i];
    out.push_back(std::move(in));
  }
  return out;
}

// --image_folder, --split and --skip_bad_images, shared by classify and bench.
struct FolderOptions {
  std::string dir;  // empty: no image folder
  std::string split = "test";
  bool skip_bad = false;
};

// The --split of --image_folder, decoded to the served model's `spec` (at
// most `max` images, 0: all; a fixed sample across classes when fewer).
// Says on stderr what it found and how labels are read. Dies naming what is
// wrong (a bad image unless --skip_bad_images).
ImageFolderDataset LoadFolderSplit(const FolderOptions& f, const v1::InputSpec& spec, int64_t max,
                                   DataSplit* split) {
  absl::StatusOr<DataSplit> parsed = ParseDataSplit(f.split);
  if (!parsed.ok()) Die(absl::StrCat("--split: ", parsed.status().message()), 2);
  *split = *parsed;
  ImageFolderOptions options;
  for (int s = 0; s < kNumDataSplits; ++s) options.decode[s] = s == static_cast<int>(*split);
  options.max_per_split = max;
  options.bad_images = f.skip_bad ? BadImagePolicy::kSkip : BadImagePolicy::kFail;
  absl::StatusOr<ImageFolderDataset> data = LoadImageFolder(f.dir, spec, options);
  if (!data.ok()) Die(absl::StrCat("--image_folder: ", data.status().message()));
  std::cerr << "image folder " << f.dir << ": " << DescribeImageFolder(*data) << "\n"
            << "sending its " << DataSplitName(*split) << " split as raw " << ShapeString(spec)
            << " uint8 tensors (decoded here for the model's input " << DescribeInputSpec(spec)
            << "); label i is the i-th class folder in byte order\n";
  return *std::move(data);
}

// The images of a decoded split as the model takes them, named by their
// paths.
std::vector<Input> FolderInputs(const ImageSplit& split, const v1::InputSpec& spec) {
  std::vector<Input> out;
  for (int i = 0; i < split.size(); ++i) {
    Input in;
    in.name = split.paths[i];
    in.image = QuantizedImageFor(split.image(i), spec);
    in.truth = split.labels[i];
    out.push_back(std::move(in));
  }
  return out;
}

// --protocol and --model, shared by classify and bench.
struct ProtocolOptions {
  std::string protocol = "hapi";  // or "oip"
  std::string model;  // ClassifyRequest.model, or the OIP model name; empty: the served one
};

Protocol ParseProtocol(const std::string& name) {
  if (name == "hapi") return Protocol::kHapi;
  if (name == "oip") return Protocol::kOip;
  Die(absl::StrCat("--protocol must be hapi or oip, not '", name, "'"), 2);
}

// The OIP model to name in requests: --model, or the model hapi-server says
// it serves (hapi.v1, which other OIP servers do not speak: give them
// --model). Dies unless the model is ready.
std::string OipModel(const Connection& conn, const std::string& model) {
  std::string name = model;
  if (name.empty()) {
    Rpc<v1::Inference> rpc(conn, 5);
    v1::ServingStatus st;
    Check(rpc.stub->GetServingStatus(&rpc.context, v1::ServingStatusRequest(), &st),
          "server status (pass --model to name the OIP model)");
    if (st.models_size() > 0) Die("the server serves several models: pass --model", 2);
    name = st.model();
  }
  Rpc<inference::GRPCInferenceService> rpc(conn, 5);
  inference::ModelReadyRequest request;
  request.set_name(name);
  inference::ModelReadyResponse ready;
  Check(rpc.stub->ModelReady(&rpc.context, request, &ready), "OIP ModelReady");
  if (!ready.ready()) Die(absl::StrCat("OIP model '", name, "' is not ready on the server"));
  return name;
}

struct ClassifyOptions {
  std::vector<std::string> files;
  int idx_count = 0;  // > 0: that many test images instead of files
  int idx_offset = 0;
  FolderOptions folder;
  int folder_count = 0;  // --count: at most this many folder images (0: all)
  bool progressive = false;
  bool json = false;
  double deadline_ms = 0;  // 0: --timeout
  ProtocolOptions protocol;
};

std::string ExitLine(const std::string& name, const v1::ClassifyResponse& r) {
  return absl::StrFormat("%s  exit %d (depth %d): %s %.3f%s", name, r.exit().exit_index(),
                         r.exit().depth(), r.class_name(), r.confidence(),
                         r.final() ? "  <- answer" : "");
}

std::string AnswerLine(const std::string& name, const v1::ClassifyResponse& r) {
  return absl::StrFormat(
      "%s  %s (%d)  confidence %.3f  exit %d (depth %d, %d evaluated)  %.3f ms%s", name,
      r.class_name(), r.label(), r.confidence(), r.exit().exit_index(), r.exit().depth(),
      r.exits_evaluated(), r.server_latency_s() * 1e3,
      r.cut_by_deadline() ? "  [cut by deadline]" : "");
}

// Prints every answer the server sends for `in` and returns the last one.
v1::ClassifyResponse ClassifyOne(v1::Inference::Stub& stub, const Connection& conn,
                                 const ClassifyOptions& o, const Input& in) {
  v1::ClassifyRequest req;
  *req.mutable_image() = in.image;
  req.set_request_id(in.name);
  req.set_model(o.protocol.model);
  grpc::ClientContext ctx;
  conn.Prepare(&ctx, o.deadline_ms > 0 ? o.deadline_ms / 1e3 : -1);
  v1::ClassifyResponse resp;
  if (o.progressive) {
    auto reader = stub.ClassifyProgressive(&ctx, req);
    while (reader->Read(&resp)) {
      std::cout << (o.json ? ToJson(resp) : ExitLine(in.name, resp)) << "\n";
    }
    Check(reader->Finish(), in.name);
  } else {
    Check(stub.Classify(&ctx, req, &resp), in.name);
    std::cout << (o.json ? ToJson(resp) : AnswerLine(in.name, resp)) << "\n";
  }
  return resp;
}

// One image as a ModelInfer request: a UINT8 tensor [1, C, H, W] for a raw
// image (its Image.channels/height/width), BYTES [1] for an encoded one, both
// in raw_input_contents.
inference::ModelInferRequest OipRequest(const std::string& model, const Input& in) {
  inference::ModelInferRequest r;
  r.set_model_name(model);
  r.set_id(in.name);
  auto* input = r.add_inputs();
  input->set_name("image");
  std::string* raw = r.add_raw_input_contents();
  if (in.image.has_encoded()) {
    input->set_datatype("BYTES");
    input->add_shape(1);
    const uint32_t size = static_cast<uint32_t>(in.image.encoded().size());
    raw->append(reinterpret_cast<const char*>(&size), sizeof(size));  // little-endian host
    *raw += in.image.encoded();
  } else {
    input->set_datatype("UINT8");
    for (int64_t d : {1, in.image.channels(), in.image.height(), in.image.width()}) {
      input->add_shape(d);
    }
    *raw = in.image.raw_uint8();
  }
  return r;
}

// A numeric output of one sample, from raw_output_contents.
template <typename T>
T OipScalar(const inference::ModelInferResponse& r, const std::string& name) {
  for (int k = 0; k < r.outputs_size() && k < r.raw_output_contents_size(); ++k) {
    if (r.outputs(k).name() == name && r.raw_output_contents(k).size() == sizeof(T)) {
      T v;
      std::memcpy(&v, r.raw_output_contents(k).data(), sizeof(T));
      return v;
    }
  }
  Die(absl::StrCat("the OIP response has no output '", name, "' of one sample"));
}

// Prints the answer to `in` and returns its label.
int ClassifyOneOip(inference::GRPCInferenceService::Stub& stub, const Connection& conn,
                   const ClassifyOptions& o, const std::string& model, const Input& in) {
  grpc::ClientContext ctx;
  conn.Prepare(&ctx, o.deadline_ms > 0 ? o.deadline_ms / 1e3 : -1);
  inference::ModelInferResponse resp;
  Check(stub.ModelInfer(&ctx, OipRequest(model, in), &resp), in.name);
  const auto label = OipScalar<int64_t>(resp, "label");
  const auto confidence = OipScalar<float>(resp, "confidence");
  const auto exit = OipScalar<int32_t>(resp, "exit");
  const auto variant = resp.parameters().find("hapi_variant");
  const std::string variant_id =
      variant == resp.parameters().end() ? resp.model_version() : variant->second.string_param();
  if (o.json) {
    google::protobuf::Struct j;
    auto& f = *j.mutable_fields();
    f["name"].set_string_value(in.name);
    f["label"].set_number_value(static_cast<double>(label));
    f["confidence"].set_number_value(confidence);
    f["exit"].set_number_value(exit);
    f["variant"].set_string_value(variant_id);
    std::cout << ToJson(j) << "\n";
  } else {
    std::cout << absl::StrFormat("%s  label %d  confidence %.3f  exit %d  variant %s\n", in.name,
                                 label, confidence, exit, variant_id);
  }
  return static_cast<int>(label);
}

void Classify(const ClassifyOptions& o, const Connection& conn, const std::string& data_dir) {
  const Protocol protocol = ParseProtocol(o.protocol.protocol);
  if (protocol == Protocol::kOip && o.progressive) {
    Die("--progressive needs --protocol=hapi (OIP has no streaming call)", 2);
  }
  if (!o.folder.dir.empty() && (o.idx_count > 0 || !o.files.empty())) {
    Die("--image_folder replaces image files and --idx: give one of them", 2);
  }
  if (o.folder_count < 0) Die("--count must be at least 0", 2);
  std::vector<Input> inputs;
  std::vector<std::string> folder_classes;  // with --image_folder: label i's folder
  if (!o.folder.dir.empty()) {
    const v1::InputSpec spec = ServedSpec(conn, protocol == Protocol::kOip, o.protocol.model);
    DataSplit split;
    ImageFolderDataset data = LoadFolderSplit(o.folder, spec, o.folder_count, &split);
    inputs = FolderInputs(data.split(split), spec);
    folder_classes = data.class_names;
  } else if (o.idx_count > 0) {
    inputs = IdxInputs(data_dir, o.idx_count, o.idx_offset,
                       ServedSpec(conn, protocol == Protocol::kOip, o.protocol.model));
  } else {
    inputs = FileInputs(o.files);
  }
  if (inputs.empty()) {
    Die("nothing to classify: give image files, a directory, --idx N or --image_folder DIR");
  }
  auto channel = conn.Channel();
  auto stub = v1::Inference::NewStub(channel);
  auto oip_stub = inference::GRPCInferenceService::NewStub(channel);
  const std::string model = protocol == Protocol::kOip ? OipModel(conn, o.protocol.model) : "";
  int correct = 0, labelled = 0;
  bool warned_names = false;
  for (const Input& in : inputs) {
    int label;
    if (protocol == Protocol::kOip) {
      label = ClassifyOneOip(*oip_stub, conn, o, model, in);
    } else {
      const v1::ClassifyResponse r = ClassifyOne(*stub, conn, o, in);
      label = r.label();
      // Accuracy counts label i as the i-th class folder: say so once when
      // the model names that label otherwise.
      if (!warned_names && label >= 0 && label < static_cast<int>(folder_classes.size()) &&
          !r.class_name().empty() && r.class_name() != folder_classes[label]) {
        std::cerr << "note: the model calls label " << label << " '" << r.class_name()
                  << "', the image folder '" << folder_classes[label]
                  << "': accuracy counts label i as the i-th class folder in byte order\n";
        warned_names = true;
      }
    }
    if (in.truth >= 0) {
      ++labelled;
      correct += label == in.truth;
    }
  }
  if (labelled > 0 && !o.json) {
    std::cout << absl::StrFormat("accuracy %.2f%% (%d/%d)\n", 100.0 * correct / labelled, correct,
                                 labelled);
  }
}

// --- bench ---------------------------------------------------------------

struct BenchOptions {
  LoadOptions load;
  double deadline_ms = 0;  // per call (0: none)
  ProtocolOptions protocol;
  int images = 10000;
  FolderOptions folder;
  std::string csv_out, json_out;  // empty: not written
  bool no_progress = false;
  // Shifted images (client/image_shift.h) from request shift_after on.
  std::string shift = "none";
  double shift_level = std::numeric_limits<double>::quiet_NaN();  // NaN: not given
  int64_t shift_after = 0;
  std::string blur = "gaussian";
  uint64_t shift_seed = 1;
  std::string timeline_out;  // empty: no timeline
  int64_t timeline_every = 100;
};

// The shift --shift, --shift_level, --blur and --shift_seed ask for; dies
// naming the option that is wrong.
ImageShift BenchShift(const BenchOptions& o) {
  absl::StatusOr<ShiftKind> kind = ParseShiftKind(o.shift);
  if (!kind.ok()) Die(absl::StrCat("--shift: ", kind.status().message()), 2);
  absl::StatusOr<BlurKernel> blur = ParseBlurKernel(o.blur);
  if (!blur.ok()) Die(absl::StrCat("--blur: ", blur.status().message()), 2);
  ImageShift shift;
  shift.kind = *kind;
  shift.blur = *blur;
  shift.seed = o.shift_seed;
  const bool level_given = !std::isnan(o.shift_level);
  if (shift.kind == ShiftKind::kNone) {
    if (level_given || o.shift_after != 0) Die("--shift_level and --shift_after need --shift", 2);
    return shift;
  }
  if (!level_given) {
    Die(absl::StrCat("--shift=", o.shift,
                     " needs --shift_level (noise: sigma in [0,1]; contrast: factor in [0,1]; "
                     "blur: radius in pixels; rotate: degrees)"),
        2);
  }
  if (o.shift_after < 0) Die("--shift_after must be at least 0", 2);
  shift.level = o.shift_level;
  if (absl::Status st = ValidateShift(shift); !st.ok()) {
    Die(absl::StrCat("--shift_level: ", st.message()), 2);
  }
  return shift;
}

// --timeline: a CSV row (client/monitor_report.h) per poll of the server's
// GetServingStatus while the bench runs. Polls go over a channel of their own.
class ServingTimeline {
 public:
  // Writes the header and a row before the first request; dies when the file
  // cannot be written or the server gives no hapi.v1 status.
  ServingTimeline(const Connection& conn, const std::string& model, const std::string& path,
                  int64_t shift_after)
      : stub_(v1::Inference::NewStub(conn.Channel())),
        token_(conn.Token()),
        model_(model),
        path_(path),
        shift_after_(shift_after),
        out_(path) {
    if (!out_) Die(absl::StrCat("--timeline: cannot write ", path), 2);
    out_ << TimelineCsvHeader();
    v1::ServingStatus status;
    grpc::Status polled = Poll(&status);
    Check(polled, "--timeline polls the server's hapi.v1 status");
    if (!status.has_monitor()) {
      std::cerr << "the server's live monitor is off (hapi-server --monitor_fraction=0?): the "
                   "timeline's monitor columns stay empty\n";
    }
    Write(TimelineCsvRow(TimelinePoint(), &status));
  }

  // On the load generator's observer thread. A failed poll leaves the row's
  // server columns empty, and is reported once.
  void Observe(const LoadProgress& p) {
    TimelinePoint point;
    point.requests_sent = p.sent;
    point.seconds = p.seconds;
    point.shifted = shift_after_ >= 0 && p.sent > shift_after_;
    point.throughput = p.seconds > 0 ? p.done / p.seconds : 0;
    v1::ServingStatus status;
    grpc::Status polled = Poll(&status);
    if (!polled.ok() && !warned_) {
      std::cerr << "\n--timeline: status at " << p.sent
                << " requests failed (its row has no server columns): " << polled.error_message()
                << "\n";
      warned_ = true;
    }
    Write(TimelineCsvRow(point, polled.ok() ? &status : nullptr));
  }

  // After the run: dies when a row could not be written.
  void Finish() {
    out_.close();
    if (!out_) Die(absl::StrCat("--timeline: writing ", path_, " failed"));
  }

 private:
  grpc::Status Poll(v1::ServingStatus* status) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (!token_.empty()) ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token_));
    v1::ServingStatusRequest request;
    request.set_model(model_);
    return stub_->GetServingStatus(&ctx, request, status);
  }

  // Flushed: a run that is stopped leaves the rows so far.
  void Write(const std::string& row) { out_ << row << std::flush; }

  const std::unique_ptr<v1::Inference::Stub> stub_;
  const std::string token_, model_, path_;
  const int64_t shift_after_;  // < 0: no shift
  // The constructor's thread, then the observer thread, then Finish's: never
  // two at once.
  std::ofstream out_;
  bool warned_ = false;
};

// The options Bench checks before it contacts the server; dies naming the
// option that is wrong.
ImageShift CheckBenchOptions(const BenchOptions& o) {
  if (o.load.batch < 1) Die("--batch must be at least 1", 2);
  const ImageShift shift = BenchShift(o);
  if (!o.timeline_out.empty() && o.timeline_every < 1) {
    Die("--timeline_every must be at least 1", 2);
  }
  return shift;
}

// Where the bench's requests go; *spec is the served model's input. Fails
// fast and clearly when the server is not there.
LoadTarget BenchTarget(const BenchOptions& o, const Connection& conn, v1::InputSpec* spec) {
  LoadTarget target;
  target.protocol = ParseProtocol(o.protocol.protocol);
  target.channel = conn.Channel();
  target.token = conn.Token();
  target.deadline_ms = o.deadline_ms;
  *spec = ServedSpec(conn, target.protocol == Protocol::kOip, o.protocol.model);
  target.model =
      target.protocol == Protocol::kOip ? OipModel(conn, o.protocol.model) : o.protocol.model;
  return target;
}

// The requests' images (with a shift: the clean ones, then their shifted
// copies) and the clean images' labels.
struct BenchImages {
  std::vector<std::string> images;
  std::vector<int> labels;
  int num_images = 0;  // clean images
};

// An image folder's split, already the model's shape: raw tensors, shifted on
// all of their channels.
void LoadFolderBenchImages(const BenchOptions& o, const v1::InputSpec& spec,
                           const ImageShift& shift, LoadTarget* target, BenchImages* out) {
  if (o.images < 1) Die("--images must be at least 1", 2);
  const bool shifted = shift.kind != ShiftKind::kNone;
  DataSplit split_name;
  const ImageFolderDataset data = LoadFolderSplit(o.folder, spec, o.images, &split_name);
  const ImageSplit& split = data.split(split_name);
  target->encoded = false;
  target->channels = spec.channels();
  target->height = spec.height();
  target->width = spec.width();
  for (int copy = 0; copy < (shifted ? 2 : 1); ++copy) {
    for (int i = 0; i < split.size(); ++i) {
      std::string raw = QuantizedImageFor(split.image(i), spec).raw_uint8();
      if (copy == 1) {
        DieUnlessOk(ApplyShift(shift, spec.channels(), spec.height(), spec.width(), i,
                               reinterpret_cast<uint8_t*>(raw.data())));
      }
      out->images.push_back(std::move(raw));
      if (copy == 0) out->labels.push_back(split.labels[i]);
    }
  }
  out->num_images = split.size();
}

// The test set's images, converted to the model's input. The clean images,
// then (with a shift) their shifted copies: shifted on the grey plane, before
// packing, so every channel of an RGB model gets the same shifted grey.
void LoadTestSetBenchImages(const BenchOptions& o, const std::string& data_dir,
                            const v1::InputSpec& spec, const ImageShift& shift, LoadTarget* target,
                            BenchImages* out) {
  const bool shifted = shift.kind != ShiftKind::kNone;
  ImageSet test = TestSet(data_dir);
  test.Truncate(o.images);
  out->num_images = test.size();
  for (int copy = 0; copy < (shifted ? 2 : 1); ++copy) {
    for (int i = 0; i < test.size(); ++i) {
      std::vector<uint8_t> grey(test.image(i), test.image(i) + kImagePixels);
      if (copy == 1) DieUnlessOk(ApplyShift(shift, 1, kImageSide, kImageSide, i, grey.data()));
      absl::StatusOr<v1::Image> image = GrayImageFor(grey.data(), kImageSide, kImageSide, spec);
      if (!image.ok()) Die(std::string(image.status().message()));
      target->encoded = image->has_encoded();
      if (target->encoded) {
        out->images.push_back(image->encoded());
      } else {
        target->channels = image->channels();
        target->height = image->height();
        target->width = image->width();
        out->images.push_back(image->raw_uint8());
      }
      if (copy == 0) out->labels.push_back(test.labels[i]);
    }
  }
}

// Tells stderr what the bench sends: the model's input and the shift, if any.
void DescribeBench(const BenchOptions& o, const v1::InputSpec& spec, const LoadTarget& target,
                   const ImageShift& shift) {
  std::cerr << "model input " << DescribeInputSpec(spec) << ": sending "
            << (target.encoded ? "PNG images (the server converts them)"
                               : absl::StrFormat("raw %dx%dx%d uint8 tensors", target.channels,
                                                 target.height, target.width))
            << "\n";
  if (shift.kind != ShiftKind::kNone) {
    std::cerr << "shift: " << DescribeShift(shift) << ", from request " << o.shift_after << "\n";
  }
}

// Runs the load (with --timeline, polling the server as it goes) and writes
// its summary and reports.
void RunBench(const BenchOptions& o, const Connection& conn, const LoadTarget& target,
              const ImageShift& shift, const BenchImages& images) {
  const bool shifted = shift.kind != ShiftKind::kNone;
  LoadOptions load = o.load;
  load.progress = !o.no_progress;
  if (shifted) load.shift_after = o.shift_after;
  std::unique_ptr<ServingTimeline> timeline;
  if (!o.timeline_out.empty()) {
    timeline = std::make_unique<ServingTimeline>(conn, o.protocol.model, o.timeline_out,
                                                 shifted ? o.shift_after : -1);
    load.observe_every = o.timeline_every;
    load.observe = [&timeline](const LoadProgress& p) { timeline->Observe(p); };
  }
  std::unique_ptr<LoadClient> client = MakeLoadClient(target, images.images);
  LoadReport report = RunLoad(client.get(), images.num_images, images.labels, load);
  if (timeline != nullptr) timeline->Finish();
  std::cout << SummariseLoad(report);
  if (!o.csv_out.empty()) DieUnlessOk(WriteFileAtomically(o.csv_out, LoadReportCsv(report)));
  if (!o.json_out.empty()) DieUnlessOk(WriteFileAtomically(o.json_out, LoadReportJson(report)));
}

void Bench(const BenchOptions& o, const Connection& conn, const std::string& data_dir) {
  const ImageShift shift = CheckBenchOptions(o);
  v1::InputSpec spec;
  LoadTarget target = BenchTarget(o, conn, &spec);
  BenchImages images;
  if (!o.folder.dir.empty()) {
    LoadFolderBenchImages(o, spec, shift, &target, &images);
  } else {
    LoadTestSetBenchImages(o, data_dir, spec, shift, &target, &images);
  }
  if (images.images.empty()) {
    Die(absl::StrCat(o.folder.dir.empty() ? data_dir : o.folder.dir, ": no test images"));
  }
  DescribeBench(o, spec, target, shift);
  RunBench(o, conn, target, shift, images);
}

// --- export-samples ------------------------------------------------------

void ExportSamples(const std::string& data_dir, const std::string& out_dir, int count) {
  ImageSet test = TestSet(data_dir);
  DieUnlessOk(MakeDirectories(out_dir));
  int n = std::min(count, test.size());
  for (int i = 0; i < n; ++i) {
    std::string path = absl::StrFormat("%s/%05d_%d.png", out_dir, i, test.labels[i]);
    if (!stbi_write_png(path.c_str(), kImageSide, kImageSide, 1, test.image(i), kImageSide)) {
      Die(absl::StrCat("cannot write ", path));
    }
  }
  std::cout << absl::StrFormat("wrote %d PNG files to %s (named <index>_<label>.png)\n", n,
                               out_dir);
}

void AddFolderOptions(CLI::App* cmd, FolderOptions* o) {
  cmd->add_option("--image_folder", o->dir,
                  "Send the images of an image folder instead: <dir>/<class>/*.png|jpg or "
                  "<dir>/{train,val,test}/<class>/..., decoded here for the served model's input "
                  "spec (docs/datasets.md)");
  cmd->add_option("--split", o->split, "The image folder's split: train, val or test")
      ->capture_default_str();
  cmd->add_flag("--skip_bad_images", o->skip_bad,
                "Skip (and count) image-folder files that cannot be read or decoded, instead of "
                "stopping at the first");
}

void AddProtocolOptions(CLI::App* cmd, ProtocolOptions* o) {
  cmd->add_option("--protocol", o->protocol,
                  "hapi (hapi.v1.Inference) or oip (the Open Inference Protocol, KServe v2)")
      ->capture_default_str();
  cmd->add_option("--model", o->model,
                  "The model: ClassifyRequest.model for hapi (default: the only one served), "
                  "the OIP model name for oip (default: the model hapi-server serves, asked over "
                  "hapi.v1)");
}

}  // namespace

void AddClassifyCommand(CLI::App& app, const Connection& conn, const std::string& data_dir) {
  auto* cmd =
      app.add_subcommand("classify", "Classify PNG/JPEG files, a directory, or test images");
  auto o = std::make_shared<ClassifyOptions>();
  cmd->add_option("files", o->files, "Image files or directories");
  cmd->add_option("--idx", o->idx_count,
                  "Send this many Fashion-MNIST test images instead (raw tensors shaped to the "
                  "model's input spec; a PNG when its size is not 28x28)");
  cmd->add_option("--offset", o->idx_offset, "First test image for --idx");
  AddFolderOptions(cmd, &o->folder);
  cmd->add_option("--count", o->folder_count,
                  "With --image_folder: at most this many images of the split, a fixed sample "
                  "across classes (0: all)")
      ->capture_default_str();
  cmd->add_flag("--progressive", o->progressive, "Show each exit's answer as it arrives");
  cmd->add_flag("--json", o->json, "One JSON object per image");
  cmd->add_option("--deadline_ms", o->deadline_ms, "Per-request deadline");
  AddProtocolOptions(cmd, &o->protocol);
  cmd->callback([o, &conn, &data_dir] { Classify(*o, conn, data_dir); });
}

void AddBenchCommand(CLI::App& app, const Connection& conn, const std::string& data_dir) {
  auto* cmd = app.add_subcommand("bench", "Generate load and report latency, throughput, exits");
  auto o = std::make_shared<BenchOptions>();
  cmd->add_option("--concurrency", o->load.concurrency, "Closed loop: clients, one request each")
      ->capture_default_str();
  cmd->add_option("--rate", o->load.rate,
                  "Open loop: requests per second (overrides --concurrency)");
  cmd->add_option("--duration", o->load.duration_s, "Seconds to run")->capture_default_str();
  cmd->add_option("--count", o->load.count, "Requests to send (overrides --duration)");
  cmd->add_option("--deadline_ms", o->deadline_ms, "Per-call deadline");
  cmd->add_option("--batch", o->load.batch,
                  "Images per request: one ModelInfer of N samples (oip), or N concurrent "
                  "Classify calls (hapi)")
      ->capture_default_str();
  AddProtocolOptions(cmd, &o->protocol);
  cmd->add_option("--images", o->images,
                  "Test images to cycle through (with --image_folder: at most this many of its "
                  "split, a fixed sample across classes)")
      ->capture_default_str();
  AddFolderOptions(cmd, &o->folder);
  cmd->add_option("--csv", o->csv_out, "Write every request to this CSV");
  cmd->add_option("--json", o->json_out, "Write the summary as JSON");
  cmd->add_flag("--no_progress", o->no_progress, "No live progress line");
  cmd->add_option("--shift", o->shift,
                  "Shift the test images: none, noise, contrast, blur or rotate (the same "
                  "shifted copy of an image every time; docs/live-monitor.md)")
      ->capture_default_str();
  cmd->add_option("--shift_level", o->shift_level,
                  "How much: noise sigma in [0,1] of full scale; contrast factor in [0,1] "
                  "(deviations from the mean scaled by it); blur radius in pixels; rotation in "
                  "degrees, counter-clockwise");
  cmd->add_option("--shift_after", o->shift_after,
                  "The first N requests send clean images, later ones shifted")
      ->capture_default_str();
  cmd->add_option("--blur", o->blur, "Blur kernel: gaussian (radius = sigma) or box")
      ->capture_default_str();
  cmd->add_option("--shift_seed", o->shift_seed, "Seed of --shift=noise")->capture_default_str();
  cmd->add_option("--timeline", o->timeline_out,
                  "Poll the server's status while the bench runs and write one CSV row per "
                  "poll: requests sent, time, shifted, variant, the live monitor's window, "
                  "bound and drift tests, loop decisions, throughput");
  cmd->add_option("--timeline_every", o->timeline_every, "Requests sent between polls")
      ->capture_default_str();
  cmd->callback([o, &conn, &data_dir] { Bench(*o, conn, data_dir); });
}

void AddExportSamplesCommand(CLI::App& app, const std::string& data_dir) {
  auto* cmd = app.add_subcommand("export-samples", "Write test images as PNG files");
  struct Options {
    std::string out_dir = "samples";
    int count = 20;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--out", o->out_dir)->capture_default_str();
  cmd->add_option("--count", o->count)->capture_default_str();
  cmd->callback([o, &data_dir] { ExportSamples(data_dir, o->out_dir, o->count); });
}

}  // namespace hapi::client
