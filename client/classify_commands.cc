// classify, bench and export-samples: images through hapi.v1.Inference, and
// the Fashion-MNIST test images they can come from.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/commands.h"
#include "client/load_generator.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "google/protobuf/util/json_util.h"
#include "hapi/v1/inference.grpc.pb.h"
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

std::vector<Input> IdxInputs(const std::string& data_dir, int count, int offset) {
  ImageSet test = TestSet(data_dir);
  std::vector<Input> out;
  for (int i = offset; i < test.size() && (count <= 0 || static_cast<int>(out.size()) < count);
       ++i) {
    Input in;
    in.name = absl::StrCat("test[", i, "]");
    in.image.set_raw_uint8(std::string(reinterpret_cast<const char*>(test.image(i)), kImagePixels));
    in.truth = test.labels[i];
    out.push_back(std::move(in));
  }
  return out;
}

struct ClassifyOptions {
  std::vector<std::string> files;
  int idx_count = 0;  // > 0: that many test images instead of files
  int idx_offset = 0;
  bool progressive = false;
  bool json = false;
  double deadline_ms = 0;  // 0: --timeout
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

void Classify(const ClassifyOptions& o, const Connection& conn, const std::string& data_dir) {
  std::vector<Input> inputs =
      o.idx_count > 0 ? IdxInputs(data_dir, o.idx_count, o.idx_offset) : FileInputs(o.files);
  if (inputs.empty()) Die("nothing to classify: give image files, a directory, or --idx N");
  auto stub = v1::Inference::NewStub(conn.Channel());
  int correct = 0, labelled = 0;
  for (const Input& in : inputs) {
    v1::ClassifyResponse resp = ClassifyOne(*stub, conn, o, in);
    if (in.truth >= 0) {
      ++labelled;
      correct += resp.label() == in.truth;
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
  int images = 10000;
  std::string csv_out, json_out;  // empty: not written
  bool no_progress = false;
};

void Bench(const BenchOptions& o, const Connection& conn, const std::string& data_dir) {
  ImageSet test = TestSet(data_dir);
  test.Truncate(o.images);
  std::vector<std::string> images;
  std::vector<int> labels;
  for (int i = 0; i < test.size(); ++i) {
    images.emplace_back(reinterpret_cast<const char*>(test.image(i)), kImagePixels);
    labels.push_back(test.labels[i]);
  }
  LoadOptions load = o.load;
  load.progress = !o.no_progress;
  auto stub = v1::Inference::NewStub(conn.Channel());
  {  // fail fast and clearly when the server is not there
    grpc::ClientContext ctx;
    conn.Prepare(&ctx, 5);
    v1::ServingStatus st;
    Check(stub->GetServingStatus(&ctx, v1::ServingStatusRequest(), &st), "server status");
  }
  LoadReport report = RunLoad(stub.get(), images, labels, load, conn.Token());
  std::cout << SummariseLoad(report);
  if (!o.csv_out.empty()) DieUnlessOk(WriteFileAtomically(o.csv_out, LoadReportCsv(report)));
  if (!o.json_out.empty()) DieUnlessOk(WriteFileAtomically(o.json_out, LoadReportJson(report)));
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

}  // namespace

void AddClassifyCommand(CLI::App& app, const Connection& conn, const std::string& data_dir) {
  auto* cmd =
      app.add_subcommand("classify", "Classify PNG/JPEG files, a directory, or test images");
  auto o = std::make_shared<ClassifyOptions>();
  cmd->add_option("files", o->files, "Image files or directories");
  cmd->add_option("--idx", o->idx_count, "Send this many Fashion-MNIST test images instead");
  cmd->add_option("--offset", o->idx_offset, "First test image for --idx");
  cmd->add_flag("--progressive", o->progressive, "Show each exit's answer as it arrives");
  cmd->add_flag("--json", o->json, "One JSON object per image");
  cmd->add_option("--deadline_ms", o->deadline_ms, "Per-request deadline");
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
  cmd->add_option("--deadline_ms", o->load.deadline_ms, "Per-request deadline");
  cmd->add_option("--images", o->images, "Test images to cycle through")->capture_default_str();
  cmd->add_option("--csv", o->csv_out, "Write every request to this CSV");
  cmd->add_option("--json", o->json_out, "Write the summary as JSON");
  cmd->add_flag("--no_progress", o->no_progress, "No live progress line");
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
