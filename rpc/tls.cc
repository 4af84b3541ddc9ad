#include "rpc/tls.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/files.h"

namespace hapi {
namespace {

// The contents of `path`, given as option `option`, which must hold a PEM
// block whose BEGIN line contains `marker` (for example "CERTIFICATE").
absl::StatusOr<std::string> ReadPem(const std::string& option, const std::string& path,
                                    const std::string& marker) {
  absl::StatusOr<std::string> pem = ReadFile(path);
  if (!pem.ok()) {
    return absl::Status(pem.status().code(), absl::StrCat(option, ": ", pem.status().message()));
  }
  const size_t begin = pem->find("-----BEGIN ");
  const size_t end = begin == std::string::npos ? begin : pem->find("-----", begin + 11);
  if (end == std::string::npos ||
      !absl::StrContains(absl::string_view(*pem).substr(begin, end - begin), marker)) {
    return absl::InvalidArgumentError(
        absl::StrCat(option, ": ", path, " holds no PEM ", marker, " block"));
  }
  return pem;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError("tls_cert and tls_key go together: give both or neither");
  }
  if (tls.cert_file.empty()) {
    return absl::InvalidArgumentError("tls_client_ca needs tls_cert and tls_key");
  }
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  auto cert = ReadPem("tls_cert", tls.cert_file, "CERTIFICATE");
  if (!cert.ok()) return cert.status();
  auto key = ReadPem("tls_key", tls.key_file, "PRIVATE KEY");
  if (!key.ok()) return key.status();
  pair.cert_chain = *std::move(cert);
  pair.private_key = *std::move(key);

  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!tls.client_ca_file.empty()) {
    auto ca = ReadPem("tls_client_ca", tls.client_ca_file, "CERTIFICATE");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

std::string DescribeTls(const ServerTlsOptions& tls) {
  if (!tls.enabled()) return "plaintext";
  return tls.client_ca_file.empty() ? "TLS" : "mutual TLS";
}

absl::Status ListenError(const std::string& address, const ServerTlsOptions& tls) {
  if (!tls.enabled()) return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  return absl::UnavailableError(
      absl::StrCat("cannot listen on ", address, " with TLS (is the address free, is ",
                   tls.key_file, " the key of ", tls.cert_file, ", and are both valid PEM?)"));
}

}  // namespace hapi
