// hapi.v1.Optimizer over gRPC's callback API. Each method validates, calls
// the store / job manager / builder, converts the status once.
#pragma once

#include <string>

#include "absl/synchronization/mutex.h"
#include "core/repository_layout.h"
#include "hapi/v1/optimizer.grpc.pb.h"
#include "optimizer/job_manager.h"
#include "optimizer/state_store.h"
#include "optimizer/variant_builder.h"

namespace hapi {

class OptimizerService final : public v1::Optimizer::CallbackService {
 public:
  // `admin_token` (may be empty) protects the mutating RPCs.
  // `profiler_binary` (hapi-profile; a bare name is looked up on PATH) serves
  // measure_locally registrations; empty disables them.
  OptimizerService(StateStore* store, JobManager* jobs, VariantBuilder* builder,
                   std::string admin_token, std::string profiler_binary = "");

  grpc::ServerUnaryReactor* RegisterDevice(grpc::CallbackServerContext* ctx,
                                           const v1::RegisterDeviceRequest* request,
                                           v1::DeviceProfile* response) override;
  grpc::ServerUnaryReactor* ListDevices(grpc::CallbackServerContext* ctx,
                                        const v1::ListDevicesRequest* request,
                                        v1::ListDevicesResponse* response) override;
  grpc::ServerUnaryReactor* GetDevice(grpc::CallbackServerContext* ctx,
                                      const v1::GetDeviceRequest* request,
                                      v1::DeviceProfile* response) override;
  grpc::ServerUnaryReactor* DeleteDevice(grpc::CallbackServerContext* ctx,
                                         const v1::DeleteDeviceRequest* request,
                                         v1::DeleteResponse* response) override;
  grpc::ServerUnaryReactor* CreateVariant(grpc::CallbackServerContext* ctx,
                                          const v1::CreateVariantRequest* request,
                                          v1::Job* response) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx,
                                   const v1::GetJobRequest* request, v1::Job* response) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const v1::ListJobsRequest* request,
                                     v1::ListJobsResponse* response) override;
  grpc::ServerWriteReactor<v1::Job>* WatchJob(grpc::CallbackServerContext* ctx,
                                              const v1::GetJobRequest* request) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx,
                                      const v1::CancelJobRequest* request,
                                      v1::Job* response) override;
  grpc::ServerUnaryReactor* ListVariants(grpc::CallbackServerContext* ctx,
                                         const v1::ListVariantsRequest* request,
                                         v1::ListVariantsResponse* response) override;
  grpc::ServerUnaryReactor* GetVariant(grpc::CallbackServerContext* ctx,
                                       const v1::GetVariantRequest* request,
                                       v1::VariantManifest* response) override;
  grpc::ServerUnaryReactor* DeleteVariant(grpc::CallbackServerContext* ctx,
                                          const v1::DeleteVariantRequest* request,
                                          v1::DeleteResponse* response) override;

 private:
  StateStore* const store_;
  JobManager* const jobs_;
  VariantBuilder* const builder_;
  const std::string admin_token_;
  const std::string profiler_binary_;
  absl::Mutex register_mu_;  // one device registration at a time (file + row)
};

// At start-up, puts right what a process killed mid-write left behind:
// removes staging debris (IsStagingName) under devices/ and variants/ and
// empty device directories; registers complete device profiles the index
// lacks or disagrees with; indexes published variant directories the index
// lacks, finishing their job SUCCEEDED when it was still unfinished; then
// fails the jobs still QUEUED/RUNNING. Each crash is explained beside the
// function that handles it.
absl::Status RecoverState(StateStore* store, const RepositoryLayout& layout);

}  // namespace hapi
