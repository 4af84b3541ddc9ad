#include "client/cli.h"

#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/files.h"

namespace hapi::client {

void Die(const std::string& message, int code) { throw CliError{message, code}; }

void DieUnlessOk(const absl::Status& status) {
  if (!status.ok()) Die(std::string(status.message()));
}

void Check(const grpc::Status& status, const std::string& what) {
  if (status.ok()) return;
  // gRPC's status codes are absl's, names and all.
  std::string code = absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code()));
  if (code.empty()) code = "UNKNOWN";
  std::string hint;
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    hint = " (is the server running at --target?)";
  }
  Die(absl::StrCat(what, ": ", code, ": ", status.error_message(), hint));
}

namespace {

// The contents of the file given as `flag`; dies naming both when unreadable.
std::string ReadFlagFile(const std::string& flag, const std::string& path) {
  auto contents = ReadFile(path);
  if (!contents.ok()) Die(absl::StrCat(flag, ": ", contents.status().message()));
  return *std::move(contents);
}

}  // namespace

bool Connection::UsesTls() const {
  return tls || !ca_cert.empty() || !client_cert.empty() || !client_key.empty() ||
         !tls_server_name.empty();
}

std::shared_ptr<grpc::Channel> Connection::Channel() const {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  if (UsesTls()) {
    grpc::SslCredentialsOptions ssl;
    if (!ca_cert.empty()) ssl.pem_root_certs = ReadFlagFile("--ca_cert", ca_cert);
    if (client_cert.empty() != client_key.empty()) {
      Die("--client_cert and --client_key go together: give both or neither", 2);
    }
    if (!client_cert.empty()) {
      ssl.pem_cert_chain = ReadFlagFile("--client_cert", client_cert);
      ssl.pem_private_key = ReadFlagFile("--client_key", client_key);
    }
    creds = grpc::SslCredentials(ssl);
    if (!tls_server_name.empty()) args.SetSslTargetNameOverride(tls_server_name);
  }
  args.SetMaxReceiveMessageSize(16 << 20);
  if (!lb_policy.empty()) args.SetLoadBalancingPolicyName(lb_policy);
  return grpc::CreateCustomChannel(target, creds, args);
}

std::string Connection::Token() const {
  if (!token_file.empty()) {
    auto t = ReadFile(token_file);
    if (!t.ok()) Die(absl::StrCat("--token_file: ", t.status().message()));
    return std::string(absl::StripAsciiWhitespace(*t));
  }
  return token;
}

void Connection::Prepare(grpc::ClientContext* ctx, double timeout) const {
  double t = timeout >= 0 ? timeout : timeout_s;
  if (t > 0) {
    ctx->set_deadline(std::chrono::system_clock::now() +
                      std::chrono::microseconds(static_cast<int64_t>(t * 1e6)));
  }
  std::string tok = Token();
  if (!tok.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", tok));
}

}  // namespace hapi::client
