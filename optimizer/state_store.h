// The optimizer's durable state in SQLite: devices, jobs and the variant
// index. One connection, serialised by a mutex; every write is a transaction
// with synchronous=FULL, so a row that was acknowledged survives kill -9.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "hapi/v1/device.pb.h"
#include "hapi/v1/optimizer.pb.h"

struct sqlite3;

namespace hapi {

class StateStore {
 public:
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(const std::string& path);
  ~StateStore();

  // ALREADY_EXISTS when the device exists and !overwrite.
  absl::Status PutDevice(const v1::DeviceProfile& profile, bool overwrite);
  absl::StatusOr<v1::DeviceProfile> GetDevice(const std::string& name);
  absl::StatusOr<std::vector<v1::DeviceProfile>> ListDevices();
  // FAILED_PRECONDITION, naming them, while variants in the index or QUEUED
  // or RUNNING jobs use the device; then nothing is deleted. The check and the
  // delete are one transaction, and PutJob checks the device in its insert,
  // so a job being admitted either is seen here or fails with NOT_FOUND.
  absl::Status DeleteDevice(const std::string& name);

  // Inserts the job row (the request is stored with it). NOT_FOUND, and no
  // row, when job.device() is not registered.
  absl::Status PutJob(const v1::Job& job, const v1::CreateVariantRequest& request);
  absl::Status UpdateJob(const v1::Job& job);
  absl::StatusOr<v1::Job> GetJob(const std::string& id);
  // The request stored with the job, as received (a live calibration table
  // included). Job rows alone are read to list and watch jobs, so a table's
  // bytes never travel with them.
  absl::StatusOr<v1::CreateVariantRequest> GetJobRequest(const std::string& id);
  absl::StatusOr<std::vector<v1::Job>> ListJobs();
  // Marks every QUEUED or RUNNING job FAILED with `reason`; returns how many.
  // Called at start-up: such jobs belonged to a process that died.
  absl::StatusOr<int> FailUnfinishedJobs(const std::string& reason, const std::string& now);

  // A finished job and its variant in one transaction.
  absl::Status CommitVariant(const v1::VariantManifest& variant, const v1::Job& job);
  absl::Status PutVariant(const v1::VariantManifest& variant);
  absl::StatusOr<v1::VariantManifest> GetVariant(const std::string& id);
  absl::StatusOr<std::vector<v1::VariantManifest>> ListVariants(const std::string& device,
                                                                const std::string& model);
  absl::Status DeleteVariant(const std::string& id);

 private:
  explicit StateStore(sqlite3* db) : db_(db) {}
  absl::Status Exec(const std::string& sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace hapi
