// hapi-client: classify images, generate load, and operate the optimizer.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/load_generator.h"
#include "core/fashion_mnist.h"
#include "core/files.h"
#include "core/progress_bar.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/grpcpp.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "hapi/v1/inference.grpc.pb.h"
#include "hapi/v1/optimizer.grpc.pb.h"
#include "stb_image_write.h"

namespace {

namespace fs = std::filesystem;

// One-line error, non-zero exit: what every failure of the CLI looks like.
struct CliError {
  std::string message;
  int code = 1;
};
[[noreturn]] void Die(const std::string& message, int code = 1) { throw CliError{message, code}; }

const char* CodeName(grpc::StatusCode code) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                 "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                                 "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  int c = static_cast<int>(code);
  return c >= 0 && c <= 16 ? kNames[c] : "UNKNOWN";
}

void Check(const grpc::Status& st, const std::string& what) {
  if (st.ok()) return;
  std::string hint;
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE) hint = " (is the server running at --target?)";
  Die(absl::StrCat(what, ": ", CodeName(st.error_code()), ": ", st.error_message(), hint));
}

struct Connection {
  std::string target = "localhost:50051";
  std::string token;
  std::string token_file;
  bool tls = false;
  std::string ca_cert;
  double timeout_s = 30;
  std::string lb_policy;

  std::shared_ptr<grpc::Channel> Channel() const {
    std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
    if (tls) {
      grpc::SslCredentialsOptions ssl;
      if (!ca_cert.empty()) {
        auto pem = hapi::ReadFile(ca_cert);
        if (!pem.ok()) Die(absl::StrCat("--ca_cert: ", pem.status().message()));
        ssl.pem_root_certs = *pem;
      }
      creds = grpc::SslCredentials(ssl);
    }
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(16 << 20);
    if (!lb_policy.empty()) args.SetLoadBalancingPolicyName(lb_policy);
    return grpc::CreateCustomChannel(target, creds, args);
  }
  std::string Token() const {
    if (!token_file.empty()) {
      auto t = hapi::ReadFile(token_file);
      if (!t.ok()) Die(absl::StrCat("--token_file: ", t.status().message()));
      return std::string(absl::StripAsciiWhitespace(*t));
    }
    return token;
  }
  void Prepare(grpc::ClientContext* ctx, double timeout = -1) const {
    double t = timeout >= 0 ? timeout : timeout_s;
    if (t > 0) {
      ctx->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::microseconds(static_cast<int64_t>(t * 1e6)));
    }
    std::string tok = Token();
    if (!tok.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", tok));
  }
};

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = false;
  o.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}
std::string ToText(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::TextFormat::PrintToString(m, &out);
  return out;
}

// --- images ---------------------------------------------------------------
struct Input {
  std::string name;
  hapi::v1::Image image;
  int truth = -1;
};

std::vector<Input> FileInputs(const std::vector<std::string>& paths) {
  std::vector<Input> out;
  for (const std::string& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(p, ec)) {
        std::string ext = e.path().extension().string();
        if (ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".PNG" || ext == ".JPG") {
          files.push_back(e.path().string());
        }
      }
      std::sort(files.begin(), files.end());
      if (files.empty()) Die(absl::StrCat(p, ": no .png or .jpg files"));
      auto more = FileInputs(files);
      out.insert(out.end(), more.begin(), more.end());
      continue;
    }
    auto bytes = hapi::ReadFile(p);
    if (!bytes.ok()) Die(absl::StrCat(p, ": ", bytes.status().message()));
    Input in;
    in.name = p;
    in.image.set_encoded(*bytes);
    // Files written by export-samples are named <index>_<label>.png.
    std::string stem = fs::path(p).stem().string();
    auto us = stem.rfind('_');
    int label;
    if (us != std::string::npos && absl::SimpleAtoi(stem.substr(us + 1), &label) && label >= 0 &&
        label < hapi::kNumClasses) {
      in.truth = label;
    }
    out.push_back(std::move(in));
  }
  return out;
}

hapi::ImageSet TestSet(const std::string& data_dir) {
  auto data = hapi::LoadFashionMnist(data_dir);
  if (!data.ok()) Die(std::string(data.status().message()));
  return std::move(data->test);
}

std::vector<Input> IdxInputs(const std::string& data_dir, int count, int offset) {
  hapi::ImageSet test = TestSet(data_dir);
  std::vector<Input> out;
  for (int i = offset; i < test.size() && (count <= 0 || static_cast<int>(out.size()) < count); ++i) {
    Input in;
    in.name = absl::StrCat("test[", i, "]");
    in.image.set_raw_uint8(std::string(reinterpret_cast<const char*>(test.image(i)), hapi::kImagePixels));
    in.truth = test.labels[i];
    out.push_back(std::move(in));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hapi-client: classify images with a HAPI server and operate the optimizer"};
  app.require_subcommand(1);
  Connection conn;
  app.add_option("--target", conn.target, "Server address host:port")->capture_default_str();
  app.add_option("--token", conn.token, "Operator token for mutating calls");
  app.add_option("--token_file", conn.token_file, "Read the operator token from a file");
  app.add_flag("--tls", conn.tls, "Use TLS");
  app.add_option("--ca_cert", conn.ca_cert, "PEM root certificates for --tls");
  app.add_option("--timeout", conn.timeout_s, "RPC timeout in seconds (0: none)")->capture_default_str();
  app.add_option("--lb_policy", conn.lb_policy,
                 "gRPC load-balancing policy, e.g. round_robin across a headless Service's pods");
  std::string data_dir = hapi::kDefaultFashionMnistDir;
  app.add_option("--data_dir", data_dir, "Fashion-MNIST directory (for --idx, bench, export-samples)");

  // classify
  auto* classify = app.add_subcommand("classify", "Classify PNG/JPEG files, a directory, or test images");
  std::vector<std::string> files;
  int idx_count = 0, idx_offset = 0;
  bool progressive = false, json = false;
  double deadline_ms = 0;
  classify->add_option("files", files, "Image files or directories");
  classify->add_option("--idx", idx_count, "Send this many Fashion-MNIST test images instead");
  classify->add_option("--offset", idx_offset, "First test image for --idx");
  classify->add_flag("--progressive", progressive, "Show each exit's answer as it arrives");
  classify->add_flag("--json", json, "One JSON object per image");
  classify->add_option("--deadline_ms", deadline_ms, "Per-request deadline");

  // bench
  auto* bench = app.add_subcommand("bench", "Generate load and report latency, throughput, exits");
  hapi::LoadOptions load;
  int bench_images = 10000;
  std::string csv_out, json_out;
  bench->add_option("--concurrency", load.concurrency, "Closed loop: clients, one request each")->capture_default_str();
  bench->add_option("--rate", load.rate, "Open loop: requests per second (overrides --concurrency)");
  bench->add_option("--duration", load.duration_s, "Seconds to run")->capture_default_str();
  bench->add_option("--count", load.count, "Requests to send (overrides --duration)");
  bench->add_option("--deadline_ms", load.deadline_ms, "Per-request deadline");
  bench->add_option("--images", bench_images, "Test images to cycle through")->capture_default_str();
  bench->add_option("--csv", csv_out, "Write every request to this CSV");
  bench->add_option("--json", json_out, "Write the summary as JSON");
  bool no_progress = false;
  bench->add_flag("--no_progress", no_progress, "No live progress line");

  // health
  auto* health = app.add_subcommand("health", "grpc.health.v1 check: exit 0 only when SERVING");
  std::string health_service;
  health->add_option("--service", health_service, "Service name (empty: the whole server)");

  // status / load-variant
  auto* status = app.add_subcommand("status", "Show what a server serves");
  auto* load_variant = app.add_subcommand("load-variant", "Make a server swap to a variant");
  std::string load_id;
  load_variant->add_option("variant", load_id, "Variant id")->required();

  // devices
  auto* devices = app.add_subcommand("devices", "Device profiles on the optimizer");
  devices->require_subcommand(1);
  auto* dev_register = devices->add_subcommand("register", "Register a profile file (hapi-profile output)");
  std::string profile_file;
  bool overwrite = false;
  dev_register->add_option("profile", profile_file, "Profile (protobuf text)")->required();
  dev_register->add_flag("--overwrite", overwrite, "Replace an existing device");
  std::string device_name;
  auto* dev_measure = devices->add_subcommand(
      "measure", "Have the optimizer profile its own machine and register it as a device");
  std::string measure_model = "fmnist-resnet";
  int measure_threads = 1, measure_iterations = 0;
  dev_measure->add_option("name", device_name, "Device name")->required();
  dev_measure->add_option("--model", measure_model)->capture_default_str();
  dev_measure->add_option("--threads", measure_threads, "Intra-op threads")->capture_default_str();
  dev_measure->add_option("--iterations", measure_iterations, "Timed passes (0: default)");
  dev_measure->add_flag("--overwrite", overwrite, "Replace an existing device");
  auto* dev_list = devices->add_subcommand("list", "List devices");
  auto* dev_get = devices->add_subcommand("get", "Show a device");
  auto* dev_delete = devices->add_subcommand("delete", "Delete a device");
  dev_get->add_option("name", device_name)->required();
  dev_delete->add_option("name", device_name)->required();

  // variants
  auto* variants = app.add_subcommand("variants", "Variants on the optimizer");
  variants->require_subcommand(1);
  auto* var_create = variants->add_subcommand("create", "Start a variant job for an SLA");
  hapi::v1::CreateVariantRequest create;
  std::string model = "fmnist-resnet", device, statistic = "mean", objective = "max-accuracy",
              algorithm = "hapi", policy = "max_softmax", variant_id;
  double latency_ms = 0, min_accuracy = -1, max_drop = -1, min_throughput = 0;
  bool per_exit = false, watch = false;
  var_create->add_option("--model", model)->capture_default_str();
  var_create->add_option("--device", device, "Registered device")->required();
  var_create->add_option("--latency-ms,--latency_ms", latency_ms, "Latency budget in ms");
  var_create->add_option("--statistic", statistic, "mean|p50|p95|p99|worst")->capture_default_str();
  var_create->add_option("--objective", objective, "max-accuracy|min-latency")->capture_default_str();
  var_create->add_option("--min-accuracy,--min_accuracy", min_accuracy, "min-latency: accuracy floor (0..1)");
  var_create->add_option("--max-drop,--max_drop", max_drop, "min-latency: at most this many points below the full network");
  var_create->add_option("--min-throughput,--min_throughput", min_throughput, "Requests/s floor at batch 1");
  double confidence = 0, latency_confidence = 0;
  var_create->add_option("--latency-confidence,--latency_confidence", latency_confidence,
                         "p50/p95/p99 budgets: one-sided confidence the budget holds at, in "
                         "[0.5, 1) (default 0.9; 0.5 = the plain percentile)");
  var_create->add_option("--confidence", confidence,
                         "min-latency: one-sided confidence the accuracy floor holds at, in [0.5, 1) "
                         "(default 0.9; 0.5 = the validation estimate alone)");
  var_create->add_option("--algorithm", algorithm, "hapi|exhaustive|random|annealing")->capture_default_str();
  var_create->add_option("--policy", policy, "max_softmax|entropy|margin")->capture_default_str();
  var_create->add_flag("--per-exit,--per_exit", per_exit, "One threshold per exit");
  var_create->add_option("--id", variant_id, "Variant id (default: generated)");
  var_create->add_flag("--watch", watch, "Wait for the job, with a progress bar");
  auto* var_list = variants->add_subcommand("list", "List variants");
  std::string filter_device;
  var_list->add_option("--device", filter_device);
  auto* var_get = variants->add_subcommand("get", "Show a variant");
  auto* var_delete = variants->add_subcommand("delete", "Delete a variant");
  std::string vid;
  var_get->add_option("id", vid)->required();
  var_delete->add_option("id", vid)->required();

  // jobs
  auto* jobs = app.add_subcommand("jobs", "Variant jobs on the optimizer");
  jobs->require_subcommand(1);
  std::string job_id;
  auto* job_get = jobs->add_subcommand("get", "Show a job");
  auto* job_watch = jobs->add_subcommand("watch", "Follow a job with a progress bar");
  auto* job_cancel = jobs->add_subcommand("cancel", "Cancel a job");
  auto* job_list = jobs->add_subcommand("list", "List jobs");
  for (auto* c : {job_get, job_watch, job_cancel}) c->add_option("id", job_id)->required();

  // export-samples
  auto* export_samples = app.add_subcommand("export-samples", "Write test images as PNG files");
  std::string out_dir = "samples";
  int export_count = 20;
  export_samples->add_option("--out", out_dir)->capture_default_str();
  export_samples->add_option("--count", export_count)->capture_default_str();

  // An unknown subcommand would otherwise be reported as a missing one.
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("-", 0) == 0) {
      static const std::set<std::string> kWithValue = {"--target", "--token", "--token_file",
                                                       "--ca_cert", "--timeout", "--data_dir",
                                                       "--lb_policy"};
      if (kWithValue.count(arg)) ++i;
      continue;
    }
    bool known = false;
    for (const CLI::App* sub : app.get_subcommands({})) known |= sub->get_name() == arg;
    if (!known) {
      std::fprintf(stderr, "hapi-client: unknown subcommand '%s' (see hapi-client --help)\n",
                   arg.c_str());
      return 2;
    }
    break;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "hapi-client: %s (see --help)\n", e.what());
    return e.get_exit_code() == 0 ? 2 : e.get_exit_code();
  }

  try {
    auto watch_job = [&](hapi::v1::Optimizer::Stub& stub, const std::string& id) {
      grpc::ClientContext ctx;
      conn.Prepare(&ctx, 0);
      hapi::v1::GetJobRequest req;
      req.set_id(id);
      auto reader = stub.WatchJob(&ctx, req);
      hapi::v1::Job job;
      hapi::ProgressBar bar(absl::StrCat("job ", id), 100);
      hapi::v1::Job last;
      while (reader->Read(&job)) {
        last = job;
        bar.Update(static_cast<int64_t>(job.percent()),
                   absl::StrFormat("%s, %d designs", job.phase(), job.designs_evaluated()));
      }
      Check(reader->Finish(), "watch job");
      bar.Finish(absl::StrFormat("%s", hapi::v1::JobState_Name(last.state())));
      if (last.state() == hapi::v1::SUCCEEDED) {
        std::cout << "variant " << last.variant() << "\n";
        return;
      }
      Die(absl::StrCat("job ", id, " ", hapi::v1::JobState_Name(last.state()), ": ", last.error()), 3);
    };

    if (*classify) {
      std::vector<Input> inputs = idx_count > 0 ? IdxInputs(data_dir, idx_count, idx_offset) : FileInputs(files);
      if (inputs.empty()) Die("nothing to classify: give image files, a directory, or --idx N");
      auto stub = hapi::v1::Inference::NewStub(conn.Channel());
      int correct = 0, labelled = 0;
      for (const Input& in : inputs) {
        hapi::v1::ClassifyRequest req;
        *req.mutable_image() = in.image;
        req.set_request_id(in.name);
        grpc::ClientContext ctx;
        conn.Prepare(&ctx, deadline_ms > 0 ? deadline_ms / 1e3 : -1);
        hapi::v1::ClassifyResponse resp;
        if (progressive) {
          auto reader = stub->ClassifyProgressive(&ctx, req);
          while (reader->Read(&resp)) {
            if (json) {
              std::cout << ToJson(resp) << "\n";
            } else {
              std::cout << absl::StrFormat("%s  exit %d (depth %d): %s %.3f%s\n", in.name,
                                           resp.exit().exit_index(), resp.exit().depth(),
                                           resp.class_name(), resp.confidence(),
                                           resp.final() ? "  <- answer" : "");
            }
          }
          Check(reader->Finish(), in.name);
        } else {
          Check(stub->Classify(&ctx, req, &resp), in.name);
          if (json) {
            std::cout << ToJson(resp) << "\n";
          } else {
            std::cout << absl::StrFormat("%s  %s (%d)  confidence %.3f  exit %d (depth %d, %d evaluated)  %.3f ms%s\n",
                                         in.name, resp.class_name(), resp.label(), resp.confidence(),
                                         resp.exit().exit_index(), resp.exit().depth(),
                                         resp.exits_evaluated(), resp.server_latency_s() * 1e3,
                                         resp.cut_by_deadline() ? "  [cut by deadline]" : "");
          }
        }
        if (in.truth >= 0) {
          ++labelled;
          correct += resp.label() == in.truth;
        }
      }
      if (labelled > 0 && !json) {
        std::cout << absl::StrFormat("accuracy %.2f%% (%d/%d)\n", 100.0 * correct / labelled, correct, labelled);
      }
    } else if (*bench) {
      hapi::ImageSet test = TestSet(data_dir);
      test.Truncate(bench_images);
      std::vector<std::string> images;
      std::vector<int> labels;
      for (int i = 0; i < test.size(); ++i) {
        images.emplace_back(reinterpret_cast<const char*>(test.image(i)), hapi::kImagePixels);
        labels.push_back(test.labels[i]);
      }
      load.progress = !no_progress;
      auto stub = hapi::v1::Inference::NewStub(conn.Channel());
      {  // fail fast and clearly when the server is not there
        grpc::ClientContext ctx;
        conn.Prepare(&ctx, 5);
        hapi::v1::ServingStatus st;
        Check(stub->GetServingStatus(&ctx, hapi::v1::ServingStatusRequest(), &st), "server status");
      }
      hapi::LoadReport report = hapi::RunLoad(stub.get(), images, labels, load, conn.Token());
      std::cout << hapi::SummariseLoad(report);
      if (!csv_out.empty()) {
        if (auto st = hapi::WriteFileAtomically(csv_out, hapi::LoadReportCsv(report)); !st.ok()) Die(std::string(st.message()));
      }
      if (!json_out.empty()) {
        if (auto st = hapi::WriteFileAtomically(json_out, hapi::LoadReportJson(report)); !st.ok()) Die(std::string(st.message()));
      }
    } else if (*health) {
      auto stub = grpc::health::v1::Health::NewStub(conn.Channel());
      grpc::ClientContext ctx;
      conn.Prepare(&ctx);
      grpc::health::v1::HealthCheckRequest req;
      req.set_service(health_service);
      grpc::health::v1::HealthCheckResponse resp;
      Check(stub->Check(&ctx, req, &resp), "health");
      std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()) << "\n";
      if (resp.status() != grpc::health::v1::HealthCheckResponse::SERVING) return 4;
    } else if (*status) {
      auto stub = hapi::v1::Inference::NewStub(conn.Channel());
      grpc::ClientContext ctx;
      conn.Prepare(&ctx);
      hapi::v1::ServingStatus st;
      Check(stub->GetServingStatus(&ctx, hapi::v1::ServingStatusRequest(), &st), "status");
      std::cout << ToText(st);
    } else if (*load_variant) {
      auto stub = hapi::v1::Inference::NewStub(conn.Channel());
      grpc::ClientContext ctx;
      conn.Prepare(&ctx, 120);
      hapi::v1::LoadVariantRequest req;
      req.set_variant(load_id);
      hapi::v1::LoadVariantResponse resp;
      Check(stub->LoadVariant(&ctx, req, &resp), "load variant");
      std::cout << ToText(resp.status());
    } else if (*devices || *variants || *jobs) {
      auto stub = hapi::v1::Optimizer::NewStub(conn.Channel());
      grpc::ClientContext ctx;
      conn.Prepare(&ctx);
      if (*dev_register) {
        hapi::v1::RegisterDeviceRequest req;
        auto text = hapi::ReadFile(profile_file);
        if (!text.ok()) Die(absl::StrCat(profile_file, ": ", text.status().message()));
        if (!google::protobuf::TextFormat::ParseFromString(*text, req.mutable_profile())) {
          Die(absl::StrCat(profile_file, ": not a hapi.v1.DeviceProfile text proto"));
        }
        req.set_overwrite(overwrite);
        hapi::v1::DeviceProfile resp;
        Check(stub->RegisterDevice(&ctx, req, &resp), "register device");
        std::cout << "registered device " << resp.name() << " for model " << resp.model() << "\n";
      } else if (*dev_measure) {
        grpc::ClientContext measure_ctx;
        conn.Prepare(&measure_ctx, 600);
        hapi::v1::RegisterDeviceRequest req;
        req.mutable_measure_locally()->set_device(device_name);
        req.mutable_measure_locally()->set_model(measure_model);
        req.mutable_measure_locally()->set_threads(measure_threads);
        req.mutable_measure_locally()->set_iterations(measure_iterations);
        req.set_overwrite(overwrite);
        hapi::v1::DeviceProfile resp;
        Check(stub->RegisterDevice(&measure_ctx, req, &resp), "measure device");
        std::cout << "measured and registered device " << resp.name() << " for model " << resp.model() << "\n";
      } else if (*dev_list) {
        hapi::v1::ListDevicesResponse resp;
        Check(stub->ListDevices(&ctx, hapi::v1::ListDevicesRequest(), &resp), "list devices");
        for (const auto& d : resp.devices()) {
          std::string kind = d.has_measured() ? "measured" : d.has_analytic() ? "analytic" : d.has_scaled() ? "scaled" : "?";
          std::cout << absl::StrFormat("%-24s model %-16s %s, %d batch table(s)\n", d.name(), d.model(), kind, d.batches_size());
        }
      } else if (*dev_get) {
        hapi::v1::GetDeviceRequest req;
        req.set_name(device_name);
        hapi::v1::DeviceProfile resp;
        Check(stub->GetDevice(&ctx, req, &resp), "get device");
        std::cout << ToText(resp);
      } else if (*dev_delete) {
        hapi::v1::DeleteDeviceRequest req;
        req.set_name(device_name);
        hapi::v1::DeleteResponse resp;
        Check(stub->DeleteDevice(&ctx, req, &resp), "delete device");
        std::cout << "deleted device " << device_name << "\n";
      } else if (*var_create) {
        hapi::v1::CreateVariantRequest req;
        req.set_model(model);
        req.set_device(device);
        req.set_algorithm(algorithm);
        req.set_exit_policy(policy);
        req.set_per_exit_thresholds(per_exit);
        req.set_variant_id(variant_id);
        hapi::v1::Sla* sla = req.mutable_sla();
        sla->set_latency_budget_ms(latency_ms);
        sla->set_latency_confidence(latency_confidence);
        static const std::map<std::string, hapi::v1::LatencyStatistic> kStats = {
            {"mean", hapi::v1::MEAN}, {"p50", hapi::v1::P50}, {"p95", hapi::v1::P95},
            {"p99", hapi::v1::P99}, {"worst", hapi::v1::WORST}};
        auto s = kStats.find(statistic);
        if (s == kStats.end()) Die(absl::StrCat("--statistic '", statistic, "': use mean, p50, p95, p99 or worst"));
        sla->set_statistic(s->second);
        if (objective == "max-accuracy") {
          sla->set_objective(hapi::v1::MAX_ACCURACY);
          if (!(latency_ms > 0)) Die("--latency-ms must be > 0 for --objective=max-accuracy");
        } else if (objective == "min-latency") {
          sla->set_objective(hapi::v1::MIN_LATENCY);
          if (max_drop >= 0) {
            sla->set_use_accuracy_drop(true);
            sla->set_max_accuracy_drop(max_drop / 100.0);
          } else if (min_accuracy >= 0) {
            sla->set_min_accuracy(min_accuracy);
          } else {
            Die("--objective=min-latency needs --min-accuracy or --max-drop");
          }
          sla->set_accuracy_confidence(confidence);
        } else {
          Die(absl::StrCat("--objective '", objective, "': use max-accuracy or min-latency"));
        }
        sla->set_min_throughput_rps(min_throughput);
        hapi::v1::Job job;
        Check(stub->CreateVariant(&ctx, req, &job), "create variant");
        std::cout << "job " << job.id() << " " << hapi::v1::JobState_Name(job.state()) << "\n";
        if (watch) watch_job(*stub, job.id());
      } else if (*var_list) {
        hapi::v1::ListVariantsRequest req;
        req.set_device(filter_device);
        hapi::v1::ListVariantsResponse resp;
        Check(stub->ListVariants(&ctx, req, &resp), "list variants");
        for (const auto& v : resp.variants()) {
          std::cout << absl::StrFormat("%-40s device %-16s exits [%s] acc %.2f%% mean %.3f ms\n", v.id(), v.device(),
                                       absl::StrJoin(v.enabled_exits(), ","), 100 * v.predicted_accuracy(),
                                       v.predicted_latency().mean_ms());
        }
      } else if (*var_get) {
        hapi::v1::GetVariantRequest req;
        req.set_id(vid);
        hapi::v1::VariantManifest resp;
        Check(stub->GetVariant(&ctx, req, &resp), "get variant");
        std::cout << ToText(resp);
      } else if (*var_delete) {
        hapi::v1::DeleteVariantRequest req;
        req.set_id(vid);
        hapi::v1::DeleteResponse resp;
        Check(stub->DeleteVariant(&ctx, req, &resp), "delete variant");
        std::cout << "deleted variant " << vid << "\n";
      } else if (*job_get || *job_cancel) {
        hapi::v1::Job job;
        if (*job_get) {
          hapi::v1::GetJobRequest req;
          req.set_id(job_id);
          Check(stub->GetJob(&ctx, req, &job), "get job");
        } else {
          hapi::v1::CancelJobRequest req;
          req.set_id(job_id);
          Check(stub->CancelJob(&ctx, req, &job), "cancel job");
        }
        std::cout << ToText(job);
      } else if (*job_watch) {
        watch_job(*stub, job_id);
      } else if (*job_list) {
        hapi::v1::ListJobsResponse resp;
        Check(stub->ListJobs(&ctx, hapi::v1::ListJobsRequest(), &resp), "list jobs");
        for (const auto& j : resp.jobs()) {
          std::cout << absl::StrFormat("%-32s %-9s %5.1f%% device %-16s %s%s\n", j.id(),
                                       hapi::v1::JobState_Name(j.state()), j.percent(), j.device(),
                                       j.variant(), j.error().empty() ? "" : "  " + j.error());
        }
      }
    } else if (*export_samples) {
      hapi::ImageSet test = TestSet(data_dir);
      if (auto st = hapi::MakeDirectories(out_dir); !st.ok()) Die(std::string(st.message()));
      int n = std::min(export_count, test.size());
      for (int i = 0; i < n; ++i) {
        std::string path = absl::StrFormat("%s/%05d_%d.png", out_dir, i, test.labels[i]);
        if (!stbi_write_png(path.c_str(), hapi::kImageSide, hapi::kImageSide, 1, test.image(i), hapi::kImageSide)) {
          Die(absl::StrCat("cannot write ", path));
        }
      }
      std::cout << absl::StrFormat("wrote %d PNG files to %s (named <index>_<label>.png)\n", n, out_dir);
    }
  } catch (const CliError& e) {
    std::fprintf(stderr, "hapi-client: %s\n", e.message.c_str());
    return e.code;
  }
  return 0;
}
