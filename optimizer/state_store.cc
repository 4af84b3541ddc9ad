#include "optimizer/state_store.h"

#include <sqlite3.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace hapi {
namespace {

// A prepared statement, finalised on scope exit.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  bool ok() const { return rc_ == SQLITE_OK; }
  absl::Status Error(absl::string_view what) const {
    return absl::InternalError(absl::StrCat("state database: ", what, ": ", sqlite3_errmsg(db_)));
  }
  void Bind(int i, const std::string& text) {
    sqlite3_bind_text(stmt_, i, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void BindBlob(int i, const std::string& blob) {
    sqlite3_bind_blob(stmt_, i, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
  }
  void Bind(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  int Step() { return sqlite3_step(stmt_); }
  std::string Text(int col) {
    const unsigned char* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p)) : std::string();
  }
  std::string Blob(int col) {
    const void* p = sqlite3_column_blob(stmt_, col);
    int n = sqlite3_column_bytes(stmt_, col);
    return p ? std::string(static_cast<const char*>(p), n) : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
};

template <typename Proto>
absl::StatusOr<Proto> ParseRow(const std::string& blob, absl::string_view table) {
  Proto p;
  if (!p.ParseFromString(blob)) {
    return absl::DataLossError(absl::StrCat("state database: corrupt row in ", table));
  }
  return p;
}

// "a, b, c and 4 more": enough names to act on, never a wall of them.
std::string FewOf(const std::vector<std::string>& names) {
  constexpr size_t kNamed = 3;
  const size_t shown = std::min(names.size(), kNamed);
  std::string out = absl::StrJoin(names.begin(), names.begin() + shown, ", ");
  if (names.size() > shown) absl::StrAppend(&out, " and ", names.size() - shown, " more");
  return out;
}

constexpr char kSchema[] = R"sql(
PRAGMA journal_mode=WAL;
PRAGMA synchronous=FULL;
CREATE TABLE IF NOT EXISTS devices(
  name TEXT PRIMARY KEY, model TEXT NOT NULL, profile BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS jobs(
  id TEXT PRIMARY KEY, state INTEGER NOT NULL, job BLOB NOT NULL, request BLOB NOT NULL,
  seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS variants(
  id TEXT PRIMARY KEY, model TEXT NOT NULL, device TEXT NOT NULL, manifest BLOB NOT NULL,
  seq INTEGER NOT NULL);
)sql";

}  // namespace

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::UnavailableError(absl::StrCat("cannot open state database ", path, ": ", msg));
  }
  sqlite3_busy_timeout(db, 5000);
  std::unique_ptr<StateStore> store(new StateStore(db));
  absl::MutexLock lock(&store->mu_);
  if (absl::Status st = store->Exec(kSchema); !st.ok()) {
    return absl::UnavailableError(absl::StrCat("state database ", path, ": ", st.message()));
  }
  return store;
}

StateStore::~StateStore() {
  absl::MutexLock lock(&mu_);
  sqlite3_close(db_);
}

absl::Status StateStore::Exec(const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return absl::InternalError(absl::StrCat("state database: ", msg));
  }
  return absl::OkStatus();
}

absl::Status StateStore::PutDevice(const v1::DeviceProfile& profile, bool overwrite) {
  absl::MutexLock lock(&mu_);
  Statement st(db_, overwrite ? "INSERT OR REPLACE INTO devices(name, model, profile) VALUES(?,?,?)"
                              : "INSERT INTO devices(name, model, profile) VALUES(?,?,?)");
  if (!st.ok()) return st.Error("prepare");
  st.Bind(1, profile.name());
  st.Bind(2, profile.model());
  st.BindBlob(3, profile.SerializeAsString());
  int rc = st.Step();
  if (rc == SQLITE_CONSTRAINT) {
    return absl::AlreadyExistsError(absl::StrCat(
        "device '", profile.name(), "' is already registered (set overwrite to replace it)"));
  }
  if (rc != SQLITE_DONE) return st.Error("insert device");
  return absl::OkStatus();
}

absl::StatusOr<v1::DeviceProfile> StateStore::GetDevice(const std::string& name) {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "SELECT profile FROM devices WHERE name = ?");
  if (!st.ok()) return st.Error("prepare");
  st.Bind(1, name);
  if (st.Step() != SQLITE_ROW) {
    return absl::NotFoundError(absl::StrCat("unknown device '", name, "'"));
  }
  return ParseRow<v1::DeviceProfile>(st.Blob(0), "devices");
}

absl::StatusOr<std::vector<v1::DeviceProfile>> StateStore::ListDevices() {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "SELECT profile FROM devices ORDER BY name");
  if (!st.ok()) return st.Error("prepare");
  std::vector<v1::DeviceProfile> out;
  while (st.Step() == SQLITE_ROW) {
    absl::StatusOr<v1::DeviceProfile> p = ParseRow<v1::DeviceProfile>(st.Blob(0), "devices");
    if (!p.ok()) return p.status();
    out.push_back(*std::move(p));
  }
  return out;
}

absl::Status StateStore::DeleteDevice(const std::string& name) {
  absl::MutexLock lock(&mu_);
  // IMMEDIATE: the write lock is taken before the check, so no other
  // connection can add a dependant between the check and the delete.
  if (absl::Status st = Exec("BEGIN IMMEDIATE"); !st.ok()) return st;
  // The analysis cannot see that a lambda runs under the caller's lock.
  auto rollback = [&](absl::Status st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  std::vector<std::string> variants;
  {
    Statement st(db_, "SELECT id FROM variants WHERE device = ? ORDER BY seq");
    if (!st.ok()) return rollback(st.Error("prepare"));
    st.Bind(1, name);
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) variants.push_back(st.Text(0));
    if (rc != SQLITE_DONE) return rollback(st.Error("list variants"));
  }
  std::vector<std::string> jobs;
  {
    // Unfinished jobs are few (the queue is bounded): filter on the blob.
    Statement st(db_, "SELECT job FROM jobs WHERE state IN (?, ?) ORDER BY seq");
    if (!st.ok()) return rollback(st.Error("prepare"));
    st.Bind(1, static_cast<int64_t>(v1::QUEUED));
    st.Bind(2, static_cast<int64_t>(v1::RUNNING));
    int rc;
    while ((rc = st.Step()) == SQLITE_ROW) {
      absl::StatusOr<v1::Job> j = ParseRow<v1::Job>(st.Blob(0), "jobs");
      if (!j.ok()) return rollback(j.status());
      if (j->device() == name) jobs.push_back(j->id());
    }
    if (rc != SQLITE_DONE) return rollback(st.Error("list jobs"));
  }
  if (!variants.empty() || !jobs.empty()) {
    std::vector<std::string> users, remedies;
    if (!variants.empty()) {
      users.push_back(absl::StrCat("variants ", FewOf(variants)));
      remedies.push_back("delete those variants");
    }
    if (!jobs.empty()) {
      users.push_back(absl::StrCat("queued or running jobs ", FewOf(jobs)));
      remedies.push_back("cancel those jobs");
    }
    return rollback(absl::FailedPreconditionError(
        absl::StrCat("device '", name, "' is in use by ", absl::StrJoin(users, " and by "), "; ",
                     absl::StrJoin(remedies, " and "), " first")));
  }
  {
    Statement st(db_, "DELETE FROM devices WHERE name = ?");
    if (!st.ok()) return rollback(st.Error("prepare"));
    st.Bind(1, name);
    if (st.Step() != SQLITE_DONE) return rollback(st.Error("delete device"));
    if (sqlite3_changes(db_) == 0) {
      return rollback(absl::NotFoundError(absl::StrCat("unknown device '", name, "'")));
    }
  }
  return Exec("COMMIT");
}

absl::Status StateStore::PutJob(const v1::Job& job, const v1::CreateVariantRequest& request) {
  absl::MutexLock lock(&mu_);
  // One statement: the device check and the insert cannot be split by a
  // DeleteDevice (see there).
  Statement st(db_,
               "INSERT INTO jobs(id, state, job, request, seq) SELECT ?1, ?2, ?3, ?4, "
               "(SELECT IFNULL(MAX(seq), 0) + 1 FROM jobs) "
               "WHERE EXISTS (SELECT 1 FROM devices WHERE name = ?5)");
  if (!st.ok()) return st.Error("prepare");
  st.Bind(1, job.id());
  st.Bind(2, static_cast<int64_t>(job.state()));
  st.BindBlob(3, job.SerializeAsString());
  st.BindBlob(4, request.SerializeAsString());
  st.Bind(5, job.device());
  if (st.Step() != SQLITE_DONE) return st.Error("insert job");
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(absl::StrCat("unknown device '", job.device(), "'"));
  }
  return absl::OkStatus();
}

absl::Status StateStore::UpdateJob(const v1::Job& job) {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "UPDATE jobs SET state = ?, job = ? WHERE id = ?");
  if (!st.ok()) return st.Error("prepare");
  st.Bind(1, static_cast<int64_t>(job.state()));
  st.BindBlob(2, job.SerializeAsString());
  st.Bind(3, job.id());
  if (st.Step() != SQLITE_DONE) return st.Error("update job");
  return absl::OkStatus();
}

absl::StatusOr<v1::Job> StateStore::GetJob(const std::string& id) {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "SELECT job FROM jobs WHERE id = ?");
  if (!st.ok()) return st.Error("prepare");
  st.Bind(1, id);
  if (st.Step() != SQLITE_ROW) return absl::NotFoundError(absl::StrCat("unknown job '", id, "'"));
  return ParseRow<v1::Job>(st.Blob(0), "jobs");
}

absl::StatusOr<v1::CreateVariantRequest> StateStore::GetJobRequest(const std::string& id) {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "SELECT request FROM jobs WHERE id = ?");
  if (!st.ok()) return st.Error("prepare");
  st.Bind(1, id);
  if (st.Step() != SQLITE_ROW) return absl::NotFoundError(absl::StrCat("unknown job '", id, "'"));
  return ParseRow<v1::CreateVariantRequest>(st.Blob(0), "jobs");
}

absl::StatusOr<std::vector<v1::Job>> StateStore::ListJobs() {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "SELECT job FROM jobs ORDER BY seq");
  if (!st.ok()) return st.Error("prepare");
  std::vector<v1::Job> out;
  while (st.Step() == SQLITE_ROW) {
    absl::StatusOr<v1::Job> j = ParseRow<v1::Job>(st.Blob(0), "jobs");
    if (!j.ok()) return j.status();
    out.push_back(*std::move(j));
  }
  return out;
}

absl::StatusOr<int> StateStore::FailUnfinishedJobs(const std::string& reason,
                                                   const std::string& now) {
  std::vector<v1::Job> unfinished;
  {
    absl::MutexLock lock(&mu_);
    Statement st(db_, "SELECT job FROM jobs WHERE state IN (?, ?)");
    if (!st.ok()) return st.Error("prepare");
    st.Bind(1, static_cast<int64_t>(v1::QUEUED));
    st.Bind(2, static_cast<int64_t>(v1::RUNNING));
    while (st.Step() == SQLITE_ROW) {
      absl::StatusOr<v1::Job> j = ParseRow<v1::Job>(st.Blob(0), "jobs");
      if (!j.ok()) return j.status();
      unfinished.push_back(*std::move(j));
    }
  }
  for (v1::Job& job : unfinished) {
    job.set_state(v1::FAILED);
    job.set_phase("failed");
    job.set_error(reason);
    job.set_error_code(static_cast<int>(absl::StatusCode::kAborted));
    job.set_updated_at(now);
    if (absl::Status st = UpdateJob(job); !st.ok()) return st;
  }
  return static_cast<int>(unfinished.size());
}

absl::Status StateStore::CommitVariant(const v1::VariantManifest& variant, const v1::Job& job) {
  absl::MutexLock lock(&mu_);
  if (absl::Status st = Exec("BEGIN IMMEDIATE"); !st.ok()) return st;
  // The analysis cannot see that a lambda runs under the caller's lock.
  auto rollback = [&](absl::Status st) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Exec("ROLLBACK").IgnoreError();
    return st;
  };
  {
    Statement st(db_,
                 "INSERT OR REPLACE INTO variants(id, model, device, manifest, seq) "
                 "VALUES(?,?,?,?,(SELECT IFNULL(MAX(seq), 0) + 1 FROM variants))");
    if (!st.ok()) return rollback(st.Error("prepare"));
    st.Bind(1, variant.id());
    st.Bind(2, variant.model());
    st.Bind(3, variant.device());
    st.BindBlob(4, variant.SerializeAsString());
    if (st.Step() != SQLITE_DONE) return rollback(st.Error("insert variant"));
  }
  if (!job.id().empty()) {
    Statement st(db_, "UPDATE jobs SET state = ?, job = ? WHERE id = ?");
    if (!st.ok()) return rollback(st.Error("prepare"));
    st.Bind(1, static_cast<int64_t>(job.state()));
    st.BindBlob(2, job.SerializeAsString());
    st.Bind(3, job.id());
    if (st.Step() != SQLITE_DONE) return rollback(st.Error("update job"));
  }
  return Exec("COMMIT");
}

absl::Status StateStore::PutVariant(const v1::VariantManifest& variant) {
  return CommitVariant(variant, v1::Job());
}

absl::StatusOr<v1::VariantManifest> StateStore::GetVariant(const std::string& id) {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "SELECT manifest FROM variants WHERE id = ?");
  if (!st.ok()) return st.Error("prepare");
  st.Bind(1, id);
  if (st.Step() != SQLITE_ROW) {
    return absl::NotFoundError(absl::StrCat("unknown variant '", id, "'"));
  }
  return ParseRow<v1::VariantManifest>(st.Blob(0), "variants");
}

absl::StatusOr<std::vector<v1::VariantManifest>> StateStore::ListVariants(
    const std::string& device, const std::string& model) {
  absl::MutexLock lock(&mu_);
  Statement st(db_,
               "SELECT manifest FROM variants WHERE (?1 = '' OR device = ?1) AND "
               "(?2 = '' OR model = ?2) ORDER BY seq");
  if (!st.ok()) return st.Error("prepare");
  st.Bind(1, device);
  st.Bind(2, model);
  std::vector<v1::VariantManifest> out;
  while (st.Step() == SQLITE_ROW) {
    absl::StatusOr<v1::VariantManifest> v = ParseRow<v1::VariantManifest>(st.Blob(0), "variants");
    if (!v.ok()) return v.status();
    out.push_back(*std::move(v));
  }
  return out;
}

absl::Status StateStore::DeleteVariant(const std::string& id) {
  absl::MutexLock lock(&mu_);
  Statement st(db_, "DELETE FROM variants WHERE id = ?");
  if (!st.ok()) return st.Error("prepare");
  st.Bind(1, id);
  if (st.Step() != SQLITE_DONE) return st.Error("delete variant");
  if (sqlite3_changes(db_) == 0) {
    return absl::NotFoundError(absl::StrCat("unknown variant '", id, "'"));
  }
  return absl::OkStatus();
}

}  // namespace hapi
