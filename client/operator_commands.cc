// health, status, load-variant, devices, variants and jobs: operating a server
// (hapi.v1.Inference, grpc.health.v1) and the optimizer (hapi.v1.Optimizer).
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/commands.h"
#include "client/input_packing.h"
#include "client/monitor_report.h"
#include "client/variant_summary.h"
#include "core/device_profile.h"
#include "core/files.h"
#include "core/latency_statistic.h"
#include "core/progress_bar.h"
#include "google/protobuf/text_format.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "hapi/v1/inference.grpc.pb.h"
#include "hapi/v1/optimizer.grpc.pb.h"

namespace hapi::client {
namespace {

std::string ToText(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::TextFormat::PrintToString(m, &out);
  return out;
}

// A subcommand of `parent` with one required argument (a name or an id),
// which `run` gets.
void AddCommandWithArgument(CLI::App& parent, const std::string& name,
                            const std::string& description, const std::string& argument,
                            std::function<void(const std::string&)> run,
                            const std::string& argument_description = "") {
  auto* cmd = parent.add_subcommand(name, description);
  auto value = std::make_shared<std::string>();
  cmd->add_option(argument, *value, argument_description)->required();
  cmd->callback([value, run = std::move(run)] { run(*value); });
}

// --- server --------------------------------------------------------------

// The exit status: 0 when SERVING, 4 when the server answers otherwise.
int CheckHealth(const Connection& conn, const std::string& service) {
  Rpc<grpc::health::v1::Health> rpc(conn);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  Check(rpc.stub->Check(&rpc.context, req, &resp), "health");
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status()) << "\n";
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 4;
}

// One model's status: what it eats first, then every field, the live
// monitor's as a block of its own.
void PrintModelStatus(const v1::ServingStatus& st) {
  v1::ServingStatus fields = st;
  fields.clear_monitor();
  std::cout << "input " << DescribeInputSpec(ServedInputSpec(st)) << "\n" << ToText(fields);
  if (st.has_monitor()) std::cout << DescribeLiveMonitor(st.monitor());
}

// `model` empty: the only model, or on a server with several, the server's
// totals and then one block per model.
void ShowStatus(const Connection& conn, const std::string& model) {
  Rpc<v1::Inference> rpc(conn);
  v1::ServingStatusRequest req;
  req.set_model(model);
  v1::ServingStatus st;
  Check(rpc.stub->GetServingStatus(&rpc.context, req, &st), "status");
  if (st.models_size() == 0) {
    PrintModelStatus(st);
    return;
  }
  v1::ServingStatus server = st;
  server.clear_models();
  std::cout << ToText(server);
  for (const v1::ServingStatus& m : st.models()) {
    std::cout << "\nmodel " << m.model() << "\n";
    PrintModelStatus(m);
  }
}

void LoadVariant(const Connection& conn, const std::string& id, const std::string& model) {
  // Loading a variant takes longer than an ordinary call.
  Rpc<v1::Inference> rpc(conn, 120);
  v1::LoadVariantRequest req;
  req.set_variant(id);
  req.set_model(model);
  v1::LoadVariantResponse resp;
  Check(rpc.stub->LoadVariant(&rpc.context, req, &resp), "load variant");
  std::cout << "input " << DescribeInputSpec(ServedInputSpec(resp.status())) << "\n"
            << ToText(resp.status());
}

// --- devices -------------------------------------------------------------

void RegisterDevice(const Connection& conn, const std::string& profile_file, bool overwrite) {
  Rpc<v1::Optimizer> rpc(conn);
  v1::RegisterDeviceRequest req;
  auto text = ReadFile(profile_file);
  if (!text.ok()) Die(absl::StrCat(profile_file, ": ", text.status().message()));
  if (!google::protobuf::TextFormat::ParseFromString(*text, req.mutable_profile())) {
    Die(absl::StrCat(profile_file, ": not a hapi.v1.DeviceProfile text proto"));
  }
  req.set_overwrite(overwrite);
  v1::DeviceProfile resp;
  Check(rpc.stub->RegisterDevice(&rpc.context, req, &resp), "register device");
  std::cout << "registered device " << resp.name() << " for model " << resp.model() << "\n";
}

struct MeasureDeviceOptions {
  std::string name;
  std::string model = "fmnist-resnet";
  int threads = 1;
  int iterations = 0;                   // 0: the profiler's default
  std::vector<std::string> precisions;  // empty: the profiler's default
  bool overwrite = false;
};

// Precision names (fp32, int8) as the proto's enum; dies on an unknown one.
std::vector<v1::Precision> PrecisionsFrom(const std::vector<std::string>& names) {
  std::vector<v1::Precision> out;
  for (const std::string& name : names) {
    absl::StatusOr<v1::Precision> p = ParsePrecision(name);
    if (!p.ok()) Die(absl::StrCat("--precisions: ", p.status().message()));
    out.push_back(*p);
  }
  return out;
}

void MeasureDevice(const Connection& conn, const MeasureDeviceOptions& o) {
  // The optimizer profiles the model before it answers.
  Rpc<v1::Optimizer> rpc(conn, 600);
  v1::RegisterDeviceRequest req;
  req.mutable_measure_locally()->set_device(o.name);
  req.mutable_measure_locally()->set_model(o.model);
  req.mutable_measure_locally()->set_threads(o.threads);
  req.mutable_measure_locally()->set_iterations(o.iterations);
  for (v1::Precision p : PrecisionsFrom(o.precisions)) {
    req.mutable_measure_locally()->add_precisions(p);
  }
  req.set_overwrite(o.overwrite);
  v1::DeviceProfile resp;
  Check(rpc.stub->RegisterDevice(&rpc.context, req, &resp), "measure device");
  std::cout << "measured and registered device " << resp.name() << " for model " << resp.model()
            << "\n";
}

void ListDevices(const Connection& conn) {
  Rpc<v1::Optimizer> rpc(conn);
  v1::ListDevicesResponse resp;
  Check(rpc.stub->ListDevices(&rpc.context, v1::ListDevicesRequest(), &resp), "list devices");
  for (const auto& d : resp.devices()) {
    std::string kind = d.has_measured()   ? "measured"
                       : d.has_analytic() ? "analytic"
                       : d.has_scaled()   ? "scaled"
                                          : "?";
    std::cout << absl::StrFormat("%-24s model %-16s %s, %d batch table(s)\n", d.name(), d.model(),
                                 kind, d.batches_size());
  }
}

void GetDevice(const Connection& conn, const std::string& name) {
  Rpc<v1::Optimizer> rpc(conn);
  v1::GetDeviceRequest req;
  req.set_name(name);
  v1::DeviceProfile resp;
  Check(rpc.stub->GetDevice(&rpc.context, req, &resp), "get device");
  std::cout << ToText(resp);
}

void DeleteDevice(const Connection& conn, const std::string& name) {
  Rpc<v1::Optimizer> rpc(conn);
  v1::DeleteDeviceRequest req;
  req.set_name(name);
  v1::DeleteResponse resp;
  Check(rpc.stub->DeleteDevice(&rpc.context, req, &resp), "delete device");
  std::cout << "deleted device " << name << "\n";
}

void AddRegisterDeviceCommand(CLI::App& devices, const Connection& conn) {
  auto* cmd = devices.add_subcommand("register", "Register a profile file (hapi-profile output)");
  auto profile_file = std::make_shared<std::string>();
  auto overwrite = std::make_shared<bool>(false);
  cmd->add_option("profile", *profile_file, "Profile (protobuf text)")->required();
  cmd->add_flag("--overwrite", *overwrite, "Replace an existing device");
  cmd->callback(
      [profile_file, overwrite, &conn] { RegisterDevice(conn, *profile_file, *overwrite); });
}

void AddMeasureDeviceCommand(CLI::App& devices, const Connection& conn) {
  auto* cmd = devices.add_subcommand(
      "measure", "Have the optimizer profile its own machine and register it as a device");
  auto o = std::make_shared<MeasureDeviceOptions>();
  cmd->add_option("name", o->name, "Device name")->required();
  cmd->add_option("--model", o->model)->capture_default_str();
  cmd->add_option("--threads", o->threads, "Intra-op threads")->capture_default_str();
  cmd->add_option("--iterations", o->iterations, "Timed passes (0: default)");
  cmd->add_option("--precisions", o->precisions,
                  "fp32,int8 (default: fp32, and int8 when the model has int8 ranges)")
      ->delimiter(',');
  cmd->add_flag("--overwrite", o->overwrite, "Replace an existing device");
  cmd->callback([o, &conn] { MeasureDevice(conn, *o); });
}

// --- jobs ----------------------------------------------------------------

// Follows job `id` to its end; dies with exit status 3 unless it succeeded.
void WatchJob(v1::Optimizer::Stub& stub, const Connection& conn, const std::string& id) {
  grpc::ClientContext ctx;
  conn.Prepare(&ctx, 0);  // no deadline: the stream lasts as long as the search
  v1::GetJobRequest req;
  req.set_id(id);
  auto reader = stub.WatchJob(&ctx, req);
  v1::Job job;
  ProgressBar bar(absl::StrCat("job ", id), 100);
  v1::Job last;
  while (reader->Read(&job)) {
    last = job;
    bar.Update(static_cast<int64_t>(job.percent()),
               absl::StrFormat("%s, %d designs", job.phase(), job.designs_evaluated()));
  }
  Check(reader->Finish(), "watch job");
  bar.Finish(absl::StrFormat("%s", v1::JobState_Name(last.state())));
  if (last.state() == v1::SUCCEEDED) {
    std::cout << "variant " << last.variant() << "\n";
    return;
  }
  Die(absl::StrCat("job ", id, " ", v1::JobState_Name(last.state()), ": ", last.error()), 3);
}

void GetJob(const Connection& conn, const std::string& id) {
  Rpc<v1::Optimizer> rpc(conn);
  v1::GetJobRequest req;
  req.set_id(id);
  v1::Job job;
  Check(rpc.stub->GetJob(&rpc.context, req, &job), "get job");
  std::cout << ToText(job);
}

void CancelJob(const Connection& conn, const std::string& id) {
  Rpc<v1::Optimizer> rpc(conn);
  v1::CancelJobRequest req;
  req.set_id(id);
  v1::Job job;
  Check(rpc.stub->CancelJob(&rpc.context, req, &job), "cancel job");
  std::cout << ToText(job);
}

void ListJobs(const Connection& conn) {
  Rpc<v1::Optimizer> rpc(conn);
  v1::ListJobsResponse resp;
  Check(rpc.stub->ListJobs(&rpc.context, v1::ListJobsRequest(), &resp), "list jobs");
  for (const auto& j : resp.jobs()) {
    std::cout << absl::StrFormat("%-32s %-9s %5.1f%% device %-16s %s%s\n", j.id(),
                                 v1::JobState_Name(j.state()), j.percent(), j.device(), j.variant(),
                                 j.error().empty() ? "" : "  " + j.error());
  }
}

// --- variants ------------------------------------------------------------

struct CreateVariantOptions {
  std::string model = "fmnist-resnet";
  std::string device;
  double latency_ms = 0;
  std::string statistic = "mean";
  std::string objective = "max-accuracy";
  double min_accuracy = -1;  // < 0: not given
  double max_drop = -1;      // percentage points; < 0: not given
  double min_throughput = 0;
  double latency_confidence = 0;  // 0: the optimizer's default
  double confidence = 0;          // 0: the optimizer's default
  std::string algorithm = "hapi";
  std::string policy = "max_softmax";
  bool per_exit = false;
  std::string variant_id;  // empty: the optimizer makes one
  bool watch = false;
  std::string live_table;               // a CalibrationTable file to plan on instead of validation
  std::string live_reason;              // empty: the optimizer's default ("operator")
  std::vector<std::string> precisions;  // empty: every precision available
};

// The SLA the flags describe; dies on flags that do not make one.
v1::Sla SlaFrom(const CreateVariantOptions& o) {
  v1::Sla sla;
  sla.set_latency_budget_ms(o.latency_ms);
  sla.set_latency_confidence(o.latency_confidence);
  absl::StatusOr<LatencyStatistic> statistic = ParseLatencyStatistic(o.statistic);
  if (!statistic.ok()) Die(absl::StrCat("--statistic: ", statistic.status().message()));
  sla.set_statistic(LatencyStatisticToProto(*statistic));
  if (o.objective == "max-accuracy") {
    sla.set_objective(v1::MAX_ACCURACY);
    if (!(o.latency_ms > 0)) Die("--latency-ms must be > 0 for --objective=max-accuracy");
  } else if (o.objective == "min-latency") {
    sla.set_objective(v1::MIN_LATENCY);
    if (o.max_drop >= 0) {
      sla.set_use_accuracy_drop(true);
      sla.set_max_accuracy_drop(o.max_drop / 100.0);
    } else if (o.min_accuracy >= 0) {
      sla.set_min_accuracy(o.min_accuracy);
    } else {
      Die("--objective=min-latency needs --min-accuracy or --max-drop");
    }
    sla.set_accuracy_confidence(o.confidence);
  } else {
    Die(absl::StrCat("--objective '", o.objective, "': use max-accuracy or min-latency"));
  }
  sla.set_min_throughput_rps(o.min_throughput);
  return sla;
}

void CreateVariant(const Connection& conn, const CreateVariantOptions& o) {
  Rpc<v1::Optimizer> rpc(conn);
  v1::CreateVariantRequest req;
  req.set_model(o.model);
  req.set_device(o.device);
  req.set_algorithm(o.algorithm);
  req.set_exit_policy(o.policy);
  req.set_per_exit_thresholds(o.per_exit);
  req.set_variant_id(o.variant_id);
  *req.mutable_sla() = SlaFrom(o);
  if (!o.live_table.empty()) {
    absl::StatusOr<std::string> table = ReadFile(o.live_table);
    if (!table.ok()) Die(absl::StrCat("--live_table: ", table.status().message()));
    req.set_live_calibration(*std::move(table));
  }
  req.set_live_reason(o.live_reason);
  for (v1::Precision p : PrecisionsFrom(o.precisions)) req.add_precisions(p);
  v1::Job job;
  Check(rpc.stub->CreateVariant(&rpc.context, req, &job), "create variant");
  std::cout << "job " << job.id() << " " << v1::JobState_Name(job.state()) << "\n";
  if (o.watch) WatchJob(*rpc.stub, conn, job.id());
}

void ListVariants(const Connection& conn, const std::string& device) {
  Rpc<v1::Optimizer> rpc(conn);
  v1::ListVariantsRequest req;
  req.set_device(device);
  v1::ListVariantsResponse resp;
  Check(rpc.stub->ListVariants(&rpc.context, req, &resp), "list variants");
  for (const auto& v : resp.variants()) std::cout << VariantLine(v) << "\n";
}

void GetVariant(const Connection& conn, const std::string& id) {
  Rpc<v1::Optimizer> rpc(conn);
  v1::GetVariantRequest req;
  req.set_id(id);
  v1::VariantManifest resp;
  Check(rpc.stub->GetVariant(&rpc.context, req, &resp), "get variant");
  std::cout << ToText(resp);
}

void DeleteVariant(const Connection& conn, const std::string& id) {
  Rpc<v1::Optimizer> rpc(conn);
  v1::DeleteVariantRequest req;
  req.set_id(id);
  v1::DeleteResponse resp;
  Check(rpc.stub->DeleteVariant(&rpc.context, req, &resp), "delete variant");
  std::cout << "deleted variant " << id << "\n";
}

void AddCreateVariantCommand(CLI::App& variants, const Connection& conn) {
  auto* cmd = variants.add_subcommand("create", "Start a variant job for an SLA");
  auto o = std::make_shared<CreateVariantOptions>();
  cmd->add_option("--model", o->model)->capture_default_str();
  cmd->add_option("--device", o->device, "Registered device")->required();
  cmd->add_option("--latency-ms,--latency_ms", o->latency_ms, "Latency budget in ms");
  cmd->add_option("--statistic", o->statistic, "mean|p50|p95|p99|worst")->capture_default_str();
  cmd->add_option("--objective", o->objective, "max-accuracy|min-latency")->capture_default_str();
  cmd->add_option("--min-accuracy,--min_accuracy", o->min_accuracy,
                  "min-latency: accuracy floor (0..1)");
  cmd->add_option("--max-drop,--max_drop", o->max_drop,
                  "min-latency: at most this many points below the full network");
  cmd->add_option("--min-throughput,--min_throughput", o->min_throughput,
                  "Requests/s floor at batch 1");
  cmd->add_option("--latency-confidence,--latency_confidence", o->latency_confidence,
                  "mean/p50/p95/p99 budgets: one-sided confidence the budget holds at, in "
                  "[0.5, 1) (default 0.9; 0.5 = the point estimate)");
  cmd->add_option("--confidence", o->confidence,
                  "min-latency: one-sided confidence the accuracy floor holds at, in [0.5, 1) "
                  "(default 0.9; 0.5 = the validation estimate alone)");
  cmd->add_option("--algorithm", o->algorithm, "hapi|exhaustive|random|annealing")
      ->capture_default_str();
  cmd->add_option("--policy", o->policy, "max_softmax|entropy|margin")->capture_default_str();
  cmd->add_flag("--per-exit,--per_exit", o->per_exit, "One threshold per exit");
  cmd->add_option("--id", o->variant_id, "Variant id (default: generated)");
  cmd->add_flag("--watch", o->watch, "Wait for the job, with a progress bar");
  cmd->add_option("--live-table,--live_table", o->live_table,
                  "Plan on this live calibration table (core/calibration_table.h format, "
                  "labelled with the full network's answers) instead of the validation split");
  cmd->add_option("--live-reason,--live_reason", o->live_reason,
                  "With --live_table: bound|drift|operator (default operator)");
  cmd->add_option("--precisions", o->precisions,
                  "Precisions the optimizer may choose, e.g. fp32 or fp32,int8 (default: every "
                  "one the model and the device have tables for)")
      ->delimiter(',');
  cmd->callback([o, &conn] { CreateVariant(conn, *o); });
}

}  // namespace

void AddHealthCommand(CLI::App& app, const Connection& conn, int* exit_status) {
  auto* cmd = app.add_subcommand("health", "grpc.health.v1 check: exit 0 only when SERVING");
  auto service = std::make_shared<std::string>();
  cmd->add_option("--service", *service, "Service name (empty: the whole server)");
  cmd->callback([service, &conn, exit_status] { *exit_status = CheckHealth(conn, *service); });
}

void AddStatusCommand(CLI::App& app, const Connection& conn) {
  auto* cmd = app.add_subcommand("status", "Show what a server serves");
  auto model = std::make_shared<std::string>();
  cmd->add_option("--model", *model,
                  "This model only (default: the only one served, or every one, each in its "
                  "own block)");
  cmd->callback([model, &conn] { ShowStatus(conn, *model); });
}

void AddLoadVariantCommand(CLI::App& app, const Connection& conn) {
  auto* cmd = app.add_subcommand("load-variant", "Make a server swap to a variant");
  struct Options {
    std::string variant, model;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("variant", o->variant, "Variant id")->required();
  cmd->add_option("--model", o->model,
                  "The variant's model (optional; the server refuses a variant of another)");
  cmd->callback([o, &conn] { LoadVariant(conn, o->variant, o->model); });
}

void AddDevicesCommand(CLI::App& app, const Connection& conn) {
  auto* devices = app.add_subcommand("devices", "Device profiles on the optimizer");
  devices->require_subcommand(1);
  AddRegisterDeviceCommand(*devices, conn);
  AddMeasureDeviceCommand(*devices, conn);
  devices->add_subcommand("list", "List devices")->callback([&conn] { ListDevices(conn); });
  AddCommandWithArgument(*devices, "get", "Show a device", "name",
                         [&conn](const std::string& name) { GetDevice(conn, name); });
  AddCommandWithArgument(*devices, "delete", "Delete a device", "name",
                         [&conn](const std::string& name) { DeleteDevice(conn, name); });
}

void AddVariantsCommand(CLI::App& app, const Connection& conn) {
  auto* variants = app.add_subcommand("variants", "Variants on the optimizer");
  variants->require_subcommand(1);
  AddCreateVariantCommand(*variants, conn);
  auto* list = variants->add_subcommand("list", "List variants");
  auto device = std::make_shared<std::string>();
  list->add_option("--device", *device);
  list->callback([device, &conn] { ListVariants(conn, *device); });
  AddCommandWithArgument(*variants, "get", "Show a variant", "id",
                         [&conn](const std::string& id) { GetVariant(conn, id); });
  AddCommandWithArgument(*variants, "delete", "Delete a variant", "id",
                         [&conn](const std::string& id) { DeleteVariant(conn, id); });
}

void AddJobsCommand(CLI::App& app, const Connection& conn) {
  auto* jobs = app.add_subcommand("jobs", "Variant jobs on the optimizer");
  jobs->require_subcommand(1);
  AddCommandWithArgument(*jobs, "get", "Show a job", "id",
                         [&conn](const std::string& id) { GetJob(conn, id); });
  AddCommandWithArgument(*jobs, "watch", "Follow a job with a progress bar", "id",
                         [&conn](const std::string& id) {
                           auto stub = v1::Optimizer::NewStub(conn.Channel());
                           WatchJob(*stub, conn, id);
                         });
  AddCommandWithArgument(*jobs, "cancel", "Cancel a job", "id",
                         [&conn](const std::string& id) { CancelJob(conn, id); });
  jobs->add_subcommand("list", "List jobs")->callback([&conn] { ListJobs(conn); });
}

}  // namespace hapi::client
