#include "optimizer/optimizer_service.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/device_profile.h"
#include "core/files.h"
#include "core/model_metadata.h"
#include "core/repository_layout.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "google/protobuf/util/message_differencer.h"
#include "optimizer/variant_spec.h"
#include "rpc/grpc_status.h"
#include "rpc/tsan_handoff.h"

namespace hapi {
namespace {

grpc::ServerUnaryReactor* Done(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// Streams job updates; lives until gRPC calls OnDone. Updates arrive on job
// worker threads through a shared state that outlives the reactor.
class JobWatchReactor : public grpc::ServerWriteReactor<v1::Job> {
 public:
  JobWatchReactor(JobManager* jobs, const std::string& id)
      : jobs_(jobs), shared_(std::make_shared<Shared>()) {
    shared_->reactor = this;
    std::shared_ptr<Shared> shared = shared_;
    absl::StatusOr<int64_t> handle =
        jobs_->Watch(id, [shared](const v1::Job& job) { shared->Update(job); });
    if (!handle.ok()) {
      absl::MutexLock lock(&shared_->mu);
      shared_->Close(ToGrpcStatus(handle.status()));
      return;
    }
    absl::MutexLock lock(&shared_->mu);
    handle_ = *handle;
  }

  void OnWriteDone(bool ok) override {
    TakeOverReactor(this);
    absl::MutexLock lock(&shared_->mu);
    shared_->writing = false;
    if (!ok) {
      shared_->Close(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    shared_->WriteNext();
  }
  void OnCancel() override {
    TakeOverReactor(this);
    absl::MutexLock lock(&shared_->mu);
    if (!shared_->writing) shared_->Close(grpc::Status::CANCELLED);
    shared_->cancelled = true;
  }
  void OnDone() override {
    TakeOverReactor(this);
    {
      absl::MutexLock lock(&shared_->mu);
      shared_->reactor = nullptr;
    }
    if (handle_ != 0) jobs_->Unwatch(handle_);
    delete this;
  }

 private:
  struct Shared {
    absl::Mutex mu;
    JobWatchReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
    v1::Job pending ABSL_GUARDED_BY(mu), current ABSL_GUARDED_BY(mu);
    bool has_pending ABSL_GUARDED_BY(mu) = false;
    bool writing ABSL_GUARDED_BY(mu) = false;
    bool final_sent ABSL_GUARDED_BY(mu) = false;
    bool closed ABSL_GUARDED_BY(mu) = false;
    bool cancelled ABSL_GUARDED_BY(mu) = false;
    bool seen_final ABSL_GUARDED_BY(mu) = false;
    double last_percent ABSL_GUARDED_BY(mu) = 0;

    void Update(const v1::Job& job) {
      absl::MutexLock lock(&mu);
      // Updates can race the initial snapshot: once a finished state is
      // seen nothing replaces it, and progress never goes backwards.
      if (seen_final) return;
      if (!IsFinished(job) && job.percent() < last_percent) return;
      seen_final = IsFinished(job);
      last_percent = job.percent();
      pending = job;
      has_pending = true;
      if (!writing) WriteNext();
    }
    static bool IsFinished(const v1::Job& j) {
      return j.state() == v1::SUCCEEDED || j.state() == v1::FAILED || j.state() == v1::CANCELLED;
    }
    void WriteNext() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      if (closed || reactor == nullptr) return;
      if (cancelled) {
        Close(grpc::Status::CANCELLED);
        return;
      }
      if (!has_pending) {
        if (final_sent) Close(grpc::Status::OK);
        return;
      }
      current = pending;
      has_pending = false;
      final_sent = final_sent || IsFinished(current);
      writing = true;
      HandOffReactor(reactor);
      reactor->StartWrite(&current);
    }
    void Close(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      if (closed || reactor == nullptr) return;
      closed = true;
      HandOffReactor(reactor);
      reactor->Finish(status);
    }
  };

  JobManager* const jobs_;
  std::shared_ptr<Shared> shared_;
  int64_t handle_ = 0;  // set once in the constructor
};

}  // namespace

OptimizerService::OptimizerService(StateStore* store, JobManager* jobs, VariantBuilder* builder,
                                   std::string admin_token, std::string profiler_binary)
    : store_(store),
      jobs_(jobs),
      builder_(builder),
      admin_token_(std::move(admin_token)),
      profiler_binary_(std::move(profiler_binary)) {}

namespace {

// Runs hapi-profile on this machine and reads the profile it writes. A
// separate process keeps LibTorch out of the optimizer and its threads out of
// the measurement.
absl::StatusOr<v1::DeviceProfile> MeasureThisMachine(const std::string& binary,
                                                     const std::string& repository,
                                                     const v1::MeasureLocally& m) {
  if (binary.empty()) {
    return absl::FailedPreconditionError("this optimizer was started without a profiler binary");
  }
  HAPI_RETURN_IF_ERROR(ValidateName(m.device(), "device name"));
  HAPI_RETURN_IF_ERROR(ValidateName(m.model(), "model name"));
  if (m.threads() < 0 || m.threads() > 256 || m.iterations() < 0 || m.iterations() > 100000) {
    return absl::InvalidArgumentError("threads must be in 0..256 and iterations in 0..100000");
  }
  char tmpl[] = "/tmp/hapi-profile-XXXXXX";
  int fd = ::mkstemp(tmpl);
  if (fd < 0) return absl::InternalError("cannot create a temporary file");
  ::close(fd);
  const std::string out = tmpl;
  std::vector<std::string> args = {binary,
                                   absl::StrCat("--repository=", repository),
                                   absl::StrCat("--model=", m.model()),
                                   absl::StrCat("--device=", m.device()),
                                   absl::StrCat("--threads=", m.threads() > 0 ? m.threads() : 1),
                                   absl::StrCat("--out=", out),
                                   "--progress=false",
                                   "--description=measured by hapi-optimizer on its own machine"};
  if (m.iterations() > 0) args.push_back(absl::StrCat("--iterations=", m.iterations()));
  if (m.precisions_size() > 0) {
    std::vector<std::string> names;
    for (int p : m.precisions()) {
      if (!v1::Precision_IsValid(p)) {
        ::unlink(out.c_str());
        return absl::InvalidArgumentError(absl::StrCat("unknown precision ", p));
      }
      names.push_back(PrecisionName(p));
    }
    args.push_back(absl::StrCat("--precisions=", absl::StrJoin(names, ",")));
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  if (::posix_spawnp(&pid, binary.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
    ::unlink(out.c_str());
    return absl::FailedPreconditionError(absl::StrCat("cannot run the profiler ", binary));
  }
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  v1::DeviceProfile profile;
  absl::Status read = ReadTextProto(out, &profile);
  ::unlink(out.c_str());
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("profiling failed (", binary,
                                                      " exited with status ", WEXITSTATUS(wstatus),
                                                      "); see the optimizer's log"));
  }
  HAPI_RETURN_IF_ERROR(read);
  return profile;
}

}  // namespace

grpc::ServerUnaryReactor* OptimizerService::RegisterDevice(grpc::CallbackServerContext* ctx,
                                                           const v1::RegisterDeviceRequest* request,
                                                           v1::DeviceProfile* response) {
  absl::Status st = [&]() -> absl::Status {
    HAPI_RETURN_IF_ERROR(CheckToken(*ctx, admin_token_));
    v1::DeviceProfile measured;
    if (request->has_measure_locally()) {
      LOG(INFO) << "profiling this machine as device " << request->measure_locally().device();
      HAPI_ASSIGN_OR_RETURN(measured,
                            MeasureThisMachine(profiler_binary_, builder_->options().repository,
                                               request->measure_locally()));
    }
    const v1::DeviceProfile& profile =
        request->has_measure_locally() ? measured : request->profile();
    HAPI_RETURN_IF_ERROR(ValidateName(profile.name(), "device name"));
    HAPI_RETURN_IF_ERROR(ValidateName(profile.model(), "model name"));
    const RepositoryLayout& layout = builder_->layout();
    absl::StatusOr<ModelMetadata> model = LoadModelMetadata(layout.ModelDir(profile.model()));
    if (absl::IsNotFound(model.status())) {
      return absl::NotFoundError(absl::StrCat("unknown model '", profile.model(), "'"));
    }
    HAPI_RETURN_IF_ERROR(model.status());
    HAPI_RETURN_IF_ERROR(ValidateDeviceProfile(profile, model->manifest));
    absl::MutexLock lock(&register_mu_);
    if (!request->overwrite() && store_->GetDevice(profile.name()).ok()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "device '", profile.name(), "' is already registered (set overwrite to replace it)"));
    }
    HAPI_RETURN_IF_ERROR(MakeDirectories(layout.DeviceDir(profile.name())));
    HAPI_RETURN_IF_ERROR(WriteTextProtoAtomically(layout.DeviceProfile(profile.name()), profile));
    HAPI_RETURN_IF_ERROR(store_->PutDevice(profile, /*overwrite=*/true));
    *response = profile;
    LOG(INFO) << "device " << profile.name() << " registered for model " << profile.model();
    return absl::OkStatus();
  }();
  return Done(ctx, st);
}

grpc::ServerUnaryReactor* OptimizerService::ListDevices(grpc::CallbackServerContext* ctx,
                                                        const v1::ListDevicesRequest*,
                                                        v1::ListDevicesResponse* response) {
  absl::StatusOr<std::vector<v1::DeviceProfile>> devices = store_->ListDevices();
  if (devices.ok()) {
    for (auto& d : *devices) *response->add_devices() = std::move(d);
  }
  return Done(ctx, devices.status());
}

grpc::ServerUnaryReactor* OptimizerService::GetDevice(grpc::CallbackServerContext* ctx,
                                                      const v1::GetDeviceRequest* request,
                                                      v1::DeviceProfile* response) {
  absl::Status st = ValidateName(request->name(), "device name");
  if (st.ok()) {
    absl::StatusOr<v1::DeviceProfile> d = store_->GetDevice(request->name());
    if (d.ok()) *response = *std::move(d);
    st = d.status();
  }
  return Done(ctx, st);
}

grpc::ServerUnaryReactor* OptimizerService::DeleteDevice(grpc::CallbackServerContext* ctx,
                                                         const v1::DeleteDeviceRequest* request,
                                                         v1::DeleteResponse*) {
  absl::Status st = [&]() -> absl::Status {
    HAPI_RETURN_IF_ERROR(CheckToken(*ctx, admin_token_));
    HAPI_RETURN_IF_ERROR(ValidateName(request->name(), "device name"));
    // A device that a variant in the catalogue or an unfinished job uses is
    // refused (FAILED_PRECONDITION naming them) rather than copied into each
    // variant: its latencies then live in one place, which the server reads
    // and a re-registration updates, and an operator who wants it gone
    // deletes its variants (and cancels its jobs) first. Deleting it anyway
    // would leave variants the server cannot load again. The store checks
    // and deletes in one transaction, against the same check in the insert
    // that admits a job (StateStore::PutJob), so CreateVariant cannot slip a
    // job in between.
    absl::MutexLock lock(&register_mu_);
    HAPI_RETURN_IF_ERROR(store_->DeleteDevice(request->name()));
    std::error_code ec;
    std::filesystem::remove_all(builder_->layout().DeviceDir(request->name()), ec);
    LOG(INFO) << "device " << request->name() << " deleted";
    return absl::OkStatus();
  }();
  return Done(ctx, st);
}

grpc::ServerUnaryReactor* OptimizerService::CreateVariant(grpc::CallbackServerContext* ctx,
                                                          const v1::CreateVariantRequest* request,
                                                          v1::Job* response) {
  absl::Status st = [&]() -> absl::Status {
    HAPI_RETURN_IF_ERROR(CheckToken(*ctx, admin_token_));
    HAPI_ASSIGN_OR_RETURN(VariantSpec spec, ParseVariantSpec(*request));
    HAPI_ASSIGN_OR_RETURN(*response, jobs_->Submit(spec));
    return absl::OkStatus();
  }();
  return Done(ctx, st);
}

grpc::ServerUnaryReactor* OptimizerService::GetJob(grpc::CallbackServerContext* ctx,
                                                   const v1::GetJobRequest* request,
                                                   v1::Job* response) {
  absl::Status st = ValidateName(request->id(), "job id");
  if (st.ok()) {
    absl::StatusOr<v1::Job> job = jobs_->Get(request->id());
    if (job.ok()) *response = *std::move(job);
    st = job.status();
  }
  return Done(ctx, st);
}

grpc::ServerUnaryReactor* OptimizerService::ListJobs(grpc::CallbackServerContext* ctx,
                                                     const v1::ListJobsRequest*,
                                                     v1::ListJobsResponse* response) {
  absl::StatusOr<std::vector<v1::Job>> jobs = store_->ListJobs();
  if (jobs.ok()) {
    for (auto& j : *jobs) {
      absl::StatusOr<v1::Job> live = jobs_->Get(j.id());  // running jobs: fresher in memory
      *response->add_jobs() = live.ok() ? *live : j;
    }
  }
  return Done(ctx, jobs.status());
}

grpc::ServerWriteReactor<v1::Job>* OptimizerService::WatchJob(grpc::CallbackServerContext* ctx,
                                                              const v1::GetJobRequest* request) {
  absl::Status st = ValidateName(request->id(), "job id");
  if (!st.ok()) {
    class Failed : public grpc::ServerWriteReactor<v1::Job> {
     public:
      explicit Failed(const absl::Status& st) {
        HandOffReactor(this);
        Finish(ToGrpcStatus(st));
      }
      void OnDone() override {
        TakeOverReactor(this);
        delete this;
      }
    };
    return new Failed(st);
  }
  return new JobWatchReactor(jobs_, request->id());
}

grpc::ServerUnaryReactor* OptimizerService::CancelJob(grpc::CallbackServerContext* ctx,
                                                      const v1::CancelJobRequest* request,
                                                      v1::Job* response) {
  absl::Status st = CheckToken(*ctx, admin_token_);
  if (st.ok()) st = ValidateName(request->id(), "job id");
  if (st.ok()) {
    absl::StatusOr<v1::Job> job = jobs_->Cancel(request->id());
    if (job.ok()) *response = *std::move(job);
    st = job.status();
  }
  return Done(ctx, st);
}

grpc::ServerUnaryReactor* OptimizerService::ListVariants(grpc::CallbackServerContext* ctx,
                                                         const v1::ListVariantsRequest* request,
                                                         v1::ListVariantsResponse* response) {
  absl::Status st = absl::OkStatus();
  if (!request->device().empty()) st = ValidateName(request->device(), "device name");
  if (st.ok() && !request->model().empty()) st = ValidateName(request->model(), "model name");
  if (st.ok()) {
    auto variants = store_->ListVariants(request->device(), request->model());
    if (variants.ok()) {
      for (auto& v : *variants) *response->add_variants() = std::move(v);
    }
    st = variants.status();
  }
  return Done(ctx, st);
}

grpc::ServerUnaryReactor* OptimizerService::GetVariant(grpc::CallbackServerContext* ctx,
                                                       const v1::GetVariantRequest* request,
                                                       v1::VariantManifest* response) {
  absl::Status st = ValidateName(request->id(), "variant id");
  if (st.ok()) {
    auto v = store_->GetVariant(request->id());
    if (v.ok()) *response = *std::move(v);
    st = v.status();
  }
  return Done(ctx, st);
}

grpc::ServerUnaryReactor* OptimizerService::DeleteVariant(grpc::CallbackServerContext* ctx,
                                                          const v1::DeleteVariantRequest* request,
                                                          v1::DeleteResponse*) {
  absl::Status st = [&]() -> absl::Status {
    HAPI_RETURN_IF_ERROR(CheckToken(*ctx, admin_token_));
    HAPI_RETURN_IF_ERROR(ValidateName(request->id(), "variant id"));
    // Index first: once the row is gone nobody is handed the directory.
    HAPI_RETURN_IF_ERROR(store_->DeleteVariant(request->id()));
    std::error_code ec;
    std::filesystem::remove_all(builder_->layout().VariantDir(request->id()), ec);
    LOG(INFO) << "variant " << request->id() << " deleted";
    return absl::OkStatus();
  }();
  return Done(ctx, st);
}

namespace {

// Entry names of `dir` (none when it does not exist), read before anything
// in it is removed.
std::vector<std::string> EntryNames(const std::string& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

void RemoveDebris(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) {
    LOG(ERROR) << "cannot remove half-written " << path << ": " << ec.message();
  } else {
    LOG(WARNING) << "removed half-written " << path;
  }
}

// devices/<name>/ holding a profile. RegisterDevice validates the profile,
// writes the file (one rename), then the row. The rename is the commit point,
// as it is for variants (RecoverVariants): a kill -9 after it loses only the
// row, so a complete, valid profile the index lacks is registered, and one
// that differs from its row (an overwrite cut short the same way) replaces
// the row. Removing it instead would throw away a registration that was one
// step from done, and leave the file the server reads disagreeing with the
// row the optimizer searches with. A profile that is not valid is no crash
// of ours (it was validated before it was written): it is left for the
// operator, unregistered, with a warning. (DeleteDevice removes the row, then
// the directory: a kill -9 between the two brings the device back here, and
// deleting it again finishes the job, as for variants.)
absl::Status RecoverDeviceProfile(StateStore* store, const RepositoryLayout& layout,
                                  const std::string& name) {
  absl::StatusOr<v1::DeviceProfile> row = store->GetDevice(name);
  if (!row.ok() && !absl::IsNotFound(row.status())) return row.status();
  v1::DeviceProfile profile;
  absl::Status valid = [&]() -> absl::Status {
    HAPI_RETURN_IF_ERROR(ReadTextProto(layout.DeviceProfile(name), &profile));
    if (profile.name() != name) {
      return absl::InvalidArgumentError(absl::StrCat("it names device '", profile.name(), "'"));
    }
    HAPI_RETURN_IF_ERROR(ValidateName(profile.model(), "model name"));
    v1::ModelManifest manifest;
    HAPI_RETURN_IF_ERROR(ReadTextProto(
        absl::StrCat(layout.ModelDir(profile.model()), "/", kManifestFile), &manifest));
    return ValidateDeviceProfile(profile, manifest);
  }();
  if (!valid.ok()) {
    LOG(WARNING) << "device directory " << layout.DeviceDir(name) << " left alone"
                 << (row.ok() ? " (the device stays registered)" : ", not registered") << ": "
                 << valid;
    return absl::OkStatus();
  }
  if (row.ok() && google::protobuf::util::MessageDifferencer::Equals(*row, profile)) {
    return absl::OkStatus();
  }
  HAPI_RETURN_IF_ERROR(store->PutDevice(profile, /*overwrite=*/true));
  LOG(WARNING) << (row.ok() ? "re-indexed device " : "registered device ") << name
               << " from its profile on disk (a registration was interrupted)";
  return absl::OkStatus();
}

// devices/: a kill -9 during RegisterDevice can leave a directory that is
// empty (created, nothing written yet), holds WriteFileAtomically's temporary
// file, or holds a complete profile whose row was never written.
absl::Status RecoverDevices(StateStore* store, const RepositoryLayout& layout) {
  for (const std::string& name : EntryNames(layout.DevicesDir())) {
    const std::string dir = layout.DeviceDir(name);
    if (IsStagingName(name)) {
      RemoveDebris(dir);
      continue;
    }
    std::error_code ec;
    if (!ValidateName(name, "device name").ok() || !std::filesystem::is_directory(dir, ec)) {
      continue;  // not the optimizer's
    }
    for (const std::string& inner : EntryNames(dir)) {
      if (IsStagingName(inner)) RemoveDebris(absl::StrCat(dir, "/", inner));
    }
    if (std::filesystem::is_empty(dir, ec) && !ec) {
      std::filesystem::remove(dir, ec);
      LOG(WARNING) << "removed empty device directory " << dir;
      continue;
    }
    HAPI_RETURN_IF_ERROR(RecoverDeviceProfile(store, layout, name));
  }
  return absl::OkStatus();
}

// variants/: staging directories, and published variants the index lacks.
// VariantBuilder publishes the directory (one rename), then the job manager
// indexes it and finishes its job in one transaction (CommitVariant); a
// kill -9 between the two leaves the directory with its job still RUNNING.
// The manifest names that job: when it is unfinished, the variant and the
// job's success are committed together, as JobManager::Succeed would have,
// so the job is not then failed as interrupted while its variant is served.
absl::Status RecoverVariants(StateStore* store, const RepositoryLayout& layout) {
  for (const std::string& name : EntryNames(layout.VariantsDir())) {
    if (IsStagingName(name)) {
      RemoveDebris(layout.VariantDir(name));
      continue;
    }
    if (!ValidateName(name, "variant id").ok() || store->GetVariant(name).ok()) continue;
    v1::VariantManifest v;
    if (!ReadTextProto(layout.VariantManifest(name), &v).ok() || v.id() != name) continue;
    absl::StatusOr<v1::Job> job =
        v.job_id().empty() ? absl::NotFoundError("no job") : store->GetJob(v.job_id());
    if (job.ok() && (job->state() == v1::QUEUED || job->state() == v1::RUNNING) &&
        job->model() == v.model() && job->device() == v.device()) {
      MarkSucceeded(v, &*job);
      HAPI_RETURN_IF_ERROR(store->CommitVariant(v, *job));
      LOG(WARNING) << "job " << job->id() << " finished SUCCEEDED with variant " << name
                   << ", published before the optimizer stopped";
      continue;
    }
    HAPI_RETURN_IF_ERROR(store->PutVariant(v));
    LOG(WARNING) << "indexed variant " << name << " found on disk but not in the index";
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RecoverState(StateStore* store, const RepositoryLayout& layout) {
  HAPI_RETURN_IF_ERROR(RecoverDevices(store, layout));
  // Before failing unfinished jobs: some of them have finished on disk.
  HAPI_RETURN_IF_ERROR(RecoverVariants(store, layout));
  HAPI_ASSIGN_OR_RETURN(
      int failed,
      store->FailUnfinishedJobs("the optimizer stopped while this job was queued or running; "
                                "submit it again",
                                NowRfc3339()));
  if (failed > 0) LOG(WARNING) << failed << " interrupted job(s) marked FAILED";
  return absl::OkStatus();
}

}  // namespace hapi
