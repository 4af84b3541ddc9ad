// TLS for the gRPC ports of hapi-server and hapi-optimizer, built in one place
// from PEM files. The /metrics HTTP endpoints are not covered: they stay plain
// HTTP (keep them on a private network, or put a proxy in front).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace hapi {

struct ServerTlsOptions {
  // PEM certificate chain presented to clients (leaf first) and its private
  // key: both or neither. Neither: the port is plaintext.
  std::string cert_file;
  std::string key_file;
  // PEM CA certificates. Set: mutual TLS, a client must present a
  // certificate signed by one of them or the handshake fails. Needs
  // cert_file and key_file.
  std::string client_ca_file;

  bool enabled() const {
    return !cert_file.empty() || !key_file.empty() || !client_ca_file.empty();
  }
};

// Insecure credentials when no option is set; otherwise TLS credentials from
// the files, read now. INVALID_ARGUMENT for a certificate without a key (or
// the reverse) or a client CA without them; a file that cannot be read, or
// that holds no PEM block of the expected kind, is an error naming the option
// and the file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& tls);

// One line for the start-up log: "plaintext", "TLS" or "mutual TLS".
std::string DescribeTls(const ServerTlsOptions& tls);

// The error when a gRPC port could not be opened: UNAVAILABLE "cannot listen
// on <address>", with a hint under TLS, where gRPC reports a key that does not
// match the certificate, or a file that is not valid PEM, only this way.
absl::Status ListenError(const std::string& address, const ServerTlsOptions& tls);

}  // namespace hapi
