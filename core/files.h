// Filesystem helpers for the repository: atomic writes, names, text protos.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace hapi {

// Repository object names: [a-z0-9][a-z0-9._-]{0,63}, and never "." or "..".
// Anything else is INVALID_ARGUMENT naming `what` (e.g. "model name").
absl::Status ValidateName(absl::string_view name, absl::string_view what);

absl::StatusOr<std::string> ReadFile(const std::string& path);

// Writes `contents` to `path` so that readers see either the old file or the
// complete new one: temp file in the same directory, fsync, rename, fsync dir.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents);

// Generated text inside a hand-written document: replaces what lies between
// the lines kGeneratedBegin and kGeneratedEnd of the file at `path` with
// `generated`, keeping everything around them. A file that does not exist is
// created holding just the markers and `generated`. A file without both
// markers (in order) is FAILED_PRECONDITION and left untouched.
inline constexpr char kGeneratedBegin[] = "<!-- generated: begin -->";
inline constexpr char kGeneratedEnd[] = "<!-- generated: end -->";
absl::Status WriteGeneratedSection(const std::string& path, absl::string_view generated);

// Temporary names of atomic writes and staging directories start with this
// prefix. It begins with '.', which ValidateName refuses, so no repository
// object can be mistaken for one; a crash can leave them behind, and restart
// recovery removes them (IsStagingName).
inline constexpr char kStagingPrefix[] = ".tmp-";
bool IsStagingName(absl::string_view name);

// Moves the fully written directory `staging` to `final_dir` in one rename. An
// existing `final_dir` is replaced (moved aside first, then removed).
absl::Status PublishDirectory(const std::string& staging, const std::string& final_dir);

// Creates a fresh staging directory beside `final_dir` (same filesystem, so
// the publishing rename is atomic). Its name starts with kStagingPrefix.
absl::StatusOr<std::string> MakeStagingDirectory(const std::string& final_dir);

absl::Status MakeDirectories(const std::string& path);

absl::Status ReadTextProto(const std::string& path, google::protobuf::Message* message);
absl::Status WriteTextProtoAtomically(const std::string& path,
                                      const google::protobuf::Message& message);

}  // namespace hapi
