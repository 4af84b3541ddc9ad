#include "core/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"
#include "google/protobuf/text_format.h"

namespace hapi {
namespace fs = std::filesystem;

namespace {

absl::Status ErrnoError(absl::string_view op, const std::string& path) {
  int err = errno;
  std::string message = absl::StrCat(op, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return ErrnoError("open", path);
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync", path);
  return absl::OkStatus();
}

std::string RandomSuffix() {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  return absl::StrCat(::getpid(), "-", rng() % 1000000007ULL);
}

}  // namespace

absl::Status ValidateName(absl::string_view name, absl::string_view what) {
  // Quoted as printable ASCII (\xNN for other bytes, so the message is valid
  // UTF-8 whatever the name holds) and cut after 64 bytes.
  auto bad = [&](absl::string_view why) {
    const std::string shown =
        absl::StrCat(absl::CHexEscape(name.substr(0, 64)), name.size() > 64 ? "..." : "");
    return absl::InvalidArgumentError(absl::StrCat("invalid ", what, " '", shown, "': ", why,
                                                   " (names match [a-z0-9][a-z0-9._-]{0,63})"));
  };
  if (name.empty()) return bad("empty");
  if (name.size() > 64) return bad("longer than 64 characters");
  auto lower_or_digit = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!lower_or_digit(name[0])) return bad("must start with a lowercase letter or digit");
  for (char c : name) {
    if (!lower_or_digit(c) && c != '.' && c != '_' && c != '-') {
      return bad(
          absl::StrCat("character '", absl::CHexEscape(absl::string_view(&c, 1)), "' not allowed"));
    }
  }
  return absl::OkStatus();
}

bool IsStagingName(absl::string_view name) { return absl::StartsWith(name, kStagingPrefix); }

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoError("open", path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return ErrnoError("read", path);
  return buffer.str();
}

absl::Status WriteFileAtomically(const std::string& path, absl::string_view contents) {
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string tmp =
      (dir / absl::StrCat(kStagingPrefix, target.filename().string(), "-", RandomSuffix()))
          .string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoError("create", tmp);
  const char* data = contents.data();
  size_t left = contents.size();
  while (left > 0) {
    ssize_t n = ::write(fd, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status st = ErrnoError("write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return st;
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    absl::Status st = ErrnoError("fsync", tmp);
    ::unlink(tmp.c_str());
    return st;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status st = ErrnoError("rename", tmp);
    ::unlink(tmp.c_str());
    return st;
  }
  return FsyncPath(dir.string(), /*directory=*/true);
}

absl::Status MakeDirectories(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("mkdir ", path, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<std::string> MakeStagingDirectory(const std::string& final_dir) {
  fs::path target(final_dir);
  fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  absl::Status st = MakeDirectories(parent.string());
  if (!st.ok()) return st;
  std::string staging =
      (parent / absl::StrCat(kStagingPrefix, target.filename().string(), "-", RandomSuffix()))
          .string();
  if (::mkdir(staging.c_str(), 0755) != 0) return ErrnoError("mkdir", staging);
  return staging;
}

absl::Status WriteGeneratedSection(const std::string& path, absl::string_view generated) {
  std::string body(generated);
  if (!body.empty() && body.back() != '\n') body += '\n';
  const std::string section = absl::StrCat(kGeneratedBegin, "\n", body, kGeneratedEnd);
  if (!fs::exists(path)) return WriteFileAtomically(path, section + "\n");
  HAPI_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  const size_t begin = text.find(kGeneratedBegin);
  const size_t end =
      begin == std::string::npos ? std::string::npos : text.find(kGeneratedEnd, begin);
  if (end == std::string::npos) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " has no generated section: put the lines ", kGeneratedBegin, " and ",
                     kGeneratedEnd, " where the generated text belongs, or write to a new file"));
  }
  text.replace(begin, end + std::strlen(kGeneratedEnd) - begin, section);
  return WriteFileAtomically(path, text);
}

absl::Status PublishDirectory(const std::string& staging, const std::string& final_dir) {
  // Every file inside was written and fsynced by WriteFileAtomically or by the
  // caller; flush the directory entries before it becomes visible.
  absl::Status st = FsyncPath(staging, /*directory=*/true);
  if (!st.ok()) return st;
  std::error_code ec;
  std::string old;
  if (fs::exists(final_dir, ec)) {
    old = absl::StrCat(staging, ".old");
    if (::rename(final_dir.c_str(), old.c_str()) != 0) return ErrnoError("rename", final_dir);
  }
  if (::rename(staging.c_str(), final_dir.c_str()) != 0) {
    absl::Status err = ErrnoError("rename", staging);
    if (!old.empty()) ::rename(old.c_str(), final_dir.c_str());
    return err;
  }
  if (!old.empty()) fs::remove_all(old, ec);
  fs::path parent =
      fs::path(final_dir).has_parent_path() ? fs::path(final_dir).parent_path() : fs::path(".");
  return FsyncPath(parent.string(), /*directory=*/true);
}

absl::Status ReadTextProto(const std::string& path, google::protobuf::Message* message) {
  absl::StatusOr<std::string> text = ReadFile(path);
  if (!text.ok()) return text.status();
  google::protobuf::TextFormat::Parser parser;
  if (!parser.ParseFromString(*text, message)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a valid ", message->GetTypeName(), " text proto"));
  }
  return absl::OkStatus();
}

absl::Status WriteTextProtoAtomically(const std::string& path,
                                      const google::protobuf::Message& message) {
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(message, &text)) {
    return absl::InternalError(absl::StrCat("cannot print ", message.GetTypeName()));
  }
  return WriteFileAtomically(path, text);
}

}  // namespace hapi
