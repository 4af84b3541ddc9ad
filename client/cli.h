// What every hapi-client subcommand shares: the connection options given
// before the subcommand, and the one way a command fails.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"

namespace hapi::client {

// One-line error, non-zero exit: what every failure of the CLI looks like.
// Commands throw it; main prints it and exits with `code`.
struct CliError {
  std::string message;
  int code = 1;
};
[[noreturn]] void Die(const std::string& message, int code = 1);

// Dies with the status's message unless it is OK.
void DieUnlessOk(const absl::Status& status);

// Dies naming `what` and the code, with a hint when the server is not there.
void Check(const grpc::Status& status, const std::string& what);

// The options before the subcommand that say how to reach a server.
struct Connection {
  std::string target = "localhost:50051";
  std::string token;
  std::string token_file;  // wins over `token`
  // TLS: on with `tls` or any of the four files/names below.
  bool tls = false;
  std::string ca_cert;          // PEM roots the server must chain to; empty: the system's
  std::string client_cert;      // PEM certificate chain for mutual TLS (with client_key)
  std::string client_key;       // PEM private key of client_cert
  std::string tls_server_name;  // name checked against the server certificate instead of
                                // the target's host (e.g. when dialling an IP address)
  double timeout_s = 30;        // per RPC; 0: none
  std::string lb_policy;        // empty: gRPC's default

  bool UsesTls() const;
  std::shared_ptr<grpc::Channel> Channel() const;
  std::string Token() const;
  // Sets the deadline (`timeout_s` unless `timeout` >= 0, in seconds; 0:
  // none) and the bearer token.
  void Prepare(grpc::ClientContext* ctx, double timeout = -1) const;
};

// The stub and context of one call to `Service`. The channel is made before
// the context reads the token, so a bad --ca_cert is reported before a bad
// --token_file.
template <typename Service>
struct Rpc {
  explicit Rpc(const Connection& conn, double timeout = -1)
      : stub(Service::NewStub(conn.Channel())) {
    conn.Prepare(&context, timeout);
  }
  std::unique_ptr<typename Service::Stub> stub;
  grpc::ClientContext context;
};

}  // namespace hapi::client
