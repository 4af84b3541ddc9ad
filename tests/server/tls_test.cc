// TLS on the gRPC ports of hapi-server (InferenceServer) and hapi-optimizer
// (OptimizerProcess), both in-process on 127.0.0.1, with certificates this
// test makes with the openssl command line: a CA, a server certificate for
// localhost and 127.0.0.1, a client certificate from the same CA, and a
// second, unrelated CA with a client certificate of its own. Also drives the
// hapi-client binary over (mutual) TLS.
#include "rpc/tls.h"

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/files.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "hapi/v1/inference.grpc.pb.h"
#include "hapi/v1/optimizer.grpc.pb.h"
#include "optimizer/optimizer_process.h"
#include "server/inference_server.h"
#include "tests/server/server_fixture.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr auto kRpcTimeout = std::chrono::seconds(20);

// The PEM files, made once per process.
struct Pki {
  std::string ca, server_cert, server_key, client_cert, client_key;
  std::string other_ca, other_client_cert, other_client_key;
};

// Runs `command` with /bin/sh; its exit status, or -1 when it did not exit.
int Shell(const std::string& command) {
  const int rc = std::system(command.c_str());
  return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// EC P-256 keys (quick to make). The CA certificates are marked as CAs; the
// leaf certificates say what they are for, and the server's names localhost
// and 127.0.0.1.
constexpr char kMakePki[] = R"sh(set -eu
cd "$1"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
ca_ext="-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
for ca in ca other-ca; do
  openssl req -x509 $ec -keyout $ca.key -out $ca.pem -days 2 -subj "/CN=HAPI test $ca" $ca_ext
done
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > client.ext
leaf() {  # name, issuer, extensions
  openssl req $ec -keyout $1.key -out $1.csr -subj "/CN=HAPI test $1"
  openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial -days 2 \
    -extfile $3.ext -out $1.pem
}
leaf server ca server
leaf client ca client
leaf other-client other-ca client
)sh";

const Pki& Certificates() {
  static const Pki* pki = [] {
    static ScopedTempDir* dir = new ScopedTempDir();  // lives as long as the process
    const std::string script = dir->Join("make-pki.sh");
    WriteBytes(script, kMakePki);
    const std::string log = dir->Join("make-pki.log");
    if (Shell(absl::StrCat("command -v openssl > /dev/null")) != 0) {
      ADD_FAILURE() << "the openssl command is needed (scripts/install-deps.sh installs it)";
    } else if (Shell(absl::StrCat("sh ", script, " ", dir->path(), " > ", log, " 2>&1")) != 0) {
      ADD_FAILURE() << "making certificates failed:\n" << ReadBytes(log);
    }
    auto* p = new Pki();
    p->ca = dir->Join("ca.pem");
    p->server_cert = dir->Join("server.pem");
    p->server_key = dir->Join("server.key");
    p->client_cert = dir->Join("client.pem");
    p->client_key = dir->Join("client.key");
    p->other_ca = dir->Join("other-ca.pem");
    p->other_client_cert = dir->Join("other-client.pem");
    p->other_client_key = dir->Join("other-client.key");
    return p;
  }();
  return *pki;
}

std::string Pem(const std::string& path) {
  absl::StatusOr<std::string> pem = ReadFile(path);
  EXPECT_TRUE(pem.ok()) << pem.status();
  return pem.ok() ? *pem : "";
}

// How a test client connects: trusted roots (empty: plaintext) and an
// optional client certificate.
struct ClientTls {
  ClientTls(std::string roots = "", std::string cert = "", std::string key = "")
      : roots(std::move(roots)), cert(std::move(cert)), key(std::move(key)) {}
  std::string roots;
  std::string cert;
  std::string key;
};

std::shared_ptr<grpc::Channel> Channel(const std::string& host, int port, const ClientTls& tls) {
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (!tls.roots.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = Pem(tls.roots);
    if (!tls.cert.empty()) {
      ssl.pem_cert_chain = Pem(tls.cert);
      ssl.pem_private_key = Pem(tls.key);
    }
    creds = grpc::SslCredentials(ssl);
  }
  return grpc::CreateChannel(absl::StrCat(host, ":", port), creds);
}

ServerTlsOptions ServerTls(bool mutual) {
  const Pki& pki = Certificates();
  ServerTlsOptions tls;
  tls.cert_file = pki.server_cert;
  tls.key_file = pki.server_key;
  if (mutual) tls.client_ca_file = pki.ca;
  return tls;
}

// --- hapi-server -------------------------------------------------------------

absl::StatusOr<std::unique_ptr<InferenceServer>> StartInference(const ServerTlsOptions& tls) {
  InferenceServerOptions o;
  o.listen = "127.0.0.1:0";
  o.tls = tls;
  o.servables = Fixture().Servables();
  o.variant = "v1";
  return InferenceServer::Start(std::move(o));
}

// GetServingStatus, then one Classify; the first failure, else OK.
grpc::Status CallInference(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
  v1::ServingStatus status;
  grpc::Status st = stub->GetServingStatus(&ctx, v1::ServingStatusRequest(), &status);
  if (!st.ok()) return st;
  EXPECT_EQ(status.variant(), "v1");
  v1::ClassifyResponse response;
  st = Classify(*stub, RawRequest(Fixture().image(0), "tls"), &response,
                absl::FromChrono(kRpcTimeout));
  if (st.ok()) {
    EXPECT_EQ(response.label(), Expected("v1", 0).label);
  }
  return st;
}

TEST(InferenceTlsTest, ClientTrustingTheCaIsServed) {
  ASSERT_OK_AND_ASSIGN(auto server, StartInference(ServerTls(false)));
  const Pki& pki = Certificates();
  // The certificate names both: either may be dialled.
  for (const char* host : {"localhost", "127.0.0.1"}) {
    grpc::Status st = CallInference(Channel(host, server->port(), {pki.ca}));
    EXPECT_TRUE(st.ok()) << host << ": " << st.error_message();
  }
}

TEST(InferenceTlsTest, ClientTrustingAnotherCaIsRefused) {
  ASSERT_OK_AND_ASSIGN(auto server, StartInference(ServerTls(false)));
  grpc::Status st = CallInference(Channel("localhost", server->port(), {Certificates().other_ca}));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
}

TEST(InferenceTlsTest, PlaintextClientIsRefused) {
  ASSERT_OK_AND_ASSIGN(auto server, StartInference(ServerTls(false)));
  grpc::Status st = CallInference(Channel("localhost", server->port(), {}));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
}

TEST(InferenceTlsTest, MutualTlsNeedsAClientCertificateFromTheCa) {
  ASSERT_OK_AND_ASSIGN(auto server, StartInference(ServerTls(true)));
  const Pki& pki = Certificates();
  const int port = server->port();

  grpc::Status st = CallInference(Channel("localhost", port, {pki.ca}));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << "no client certificate";

  st = CallInference(
      Channel("localhost", port, {pki.ca, pki.other_client_cert, pki.other_client_key}));
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << "certificate from another CA";

  st = CallInference(Channel("localhost", port, {pki.ca, pki.client_cert, pki.client_key}));
  EXPECT_TRUE(st.ok()) << st.error_message();
}

TEST(InferenceTlsTest, BadFilesAreClearErrorsAtStart) {
  const Pki& pki = Certificates();
  ScopedTempDir tmp;
  const std::string missing = tmp.Join("missing.pem");
  const std::string not_pem = tmp.Join("not.pem");
  WriteBytes(not_pem, "hello\n");

  ServerTlsOptions tls = ServerTls(false);
  tls.cert_file = missing;
  EXPECT_THAT(
      StartInference(tls).status(),
      StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr("tls_cert"), HasSubstr(missing))));

  tls = ServerTls(false);
  tls.key_file = missing;
  EXPECT_THAT(
      StartInference(tls).status(),
      StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr("tls_key"), HasSubstr(missing))));

  tls = ServerTls(true);
  tls.client_ca_file = missing;
  EXPECT_THAT(
      StartInference(tls).status(),
      StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr("tls_client_ca"), HasSubstr(missing))));

  tls = ServerTls(false);
  tls.cert_file = not_pem;
  EXPECT_THAT(StartInference(tls).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr(not_pem), HasSubstr("no PEM CERTIFICATE"))));

  tls = ServerTls(false);
  tls.key_file = pki.server_cert;  // a certificate where the key belongs
  EXPECT_THAT(StartInference(tls).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no PEM PRIVATE KEY")));

  tls = ServerTls(false);
  tls.key_file = "";
  EXPECT_THAT(StartInference(tls).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("both or neither")));

  tls = ServerTls(true);
  tls.cert_file = tls.key_file = "";
  EXPECT_THAT(StartInference(tls).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tls_client_ca needs tls_cert and tls_key")));

  // Readable PEM, but the key of another certificate: gRPC cannot open the
  // port, and the error says what to check.
  tls = ServerTls(false);
  tls.key_file = pki.client_key;
  EXPECT_THAT(StartInference(tls).status(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("with TLS")));
}

// The hapi-client binary over mutual TLS: `status` with the CA and a client
// certificate; without the certificate, or checking for another server name,
// it fails.
TEST(InferenceTlsTest, HapiClientOverMutualTls) {
  ASSERT_OK_AND_ASSIGN(auto server, StartInference(ServerTls(true)));
  const Pki& pki = Certificates();
  ScopedTempDir tmp;
  const std::string out = tmp.Join("out.txt");
  const std::string base = absl::StrCat(HAPI_CLIENT_BINARY, " --target 127.0.0.1:", server->port(),
                                        " --timeout 20 --ca_cert ", pki.ca);
  const std::string with_cert =
      absl::StrCat(base, " --client_cert ", pki.client_cert, " --client_key ", pki.client_key);

  EXPECT_EQ(Shell(absl::StrCat(with_cert, " status > ", out, " 2>&1")), 0) << ReadBytes(out);
  EXPECT_THAT(ReadBytes(out), HasSubstr("v1"));
  EXPECT_EQ(Shell(absl::StrCat(with_cert, " --tls_server_name localhost health > ", out, " 2>&1")),
            0)
      << ReadBytes(out);

  EXPECT_NE(Shell(absl::StrCat(base, " status > ", out, " 2>&1")), 0);
  EXPECT_THAT(ReadBytes(out), HasSubstr("UNAVAILABLE"));
  EXPECT_NE(
      Shell(absl::StrCat(with_cert, " --tls_server_name elsewhere.test status > ", out, " 2>&1")),
      0);
  EXPECT_THAT(ReadBytes(out), HasSubstr("UNAVAILABLE"));
  EXPECT_NE(
      Shell(absl::StrCat(base, " --client_cert ", pki.client_cert, " status > ", out, " 2>&1")), 0);
  EXPECT_THAT(ReadBytes(out), HasSubstr("--client_cert and --client_key go together"));
}

// --- hapi-optimizer ----------------------------------------------------------

class OptimizerTlsTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::unique_ptr<OptimizerProcess>> Create(const ServerTlsOptions& tls) {
    OptimizerOptions options;
    options.listen = "127.0.0.1:0";
    options.tls = tls;
    options.repository = tmp_.Join("repository");
    options.metrics_address = "";
    options.gnuplot = "";
    options.profiler = "";
    return OptimizerProcess::Create(options);
  }

  // ListDevices, then a grpc.health.v1 check; the first failure, else OK.
  static grpc::Status Call(const std::shared_ptr<grpc::Channel>& channel) {
    auto stub = v1::Optimizer::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    v1::ListDevicesResponse devices;
    grpc::Status st = stub->ListDevices(&ctx, v1::ListDevicesRequest(), &devices);
    if (!st.ok()) return st;
    EXPECT_EQ(devices.devices_size(), 0);
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext health_ctx;
    health_ctx.set_deadline(std::chrono::system_clock::now() + kRpcTimeout);
    grpc::health::v1::HealthCheckRequest request;
    request.set_service("hapi.v1.Optimizer");
    grpc::health::v1::HealthCheckResponse response;
    st = health->Check(&health_ctx, request, &response);
    if (st.ok()) {
      EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    }
    return st;
  }

  ScopedTempDir tmp_;
};

TEST_F(OptimizerTlsTest, ServesTlsClientsOnly) {
  ASSERT_OK_AND_ASSIGN(auto optimizer, Create(ServerTls(false)));
  const Pki& pki = Certificates();
  const int port = optimizer->port();
  grpc::Status st = Call(Channel("localhost", port, {pki.ca}));
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(Call(Channel("localhost", port, {pki.other_ca})).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Call(Channel("localhost", port, {})).error_code(), grpc::StatusCode::UNAVAILABLE);
  // The in-process channel (tests, tools in the process) is not TLS.
  EXPECT_TRUE(Call(optimizer->InProcessChannel()).ok());
}

TEST_F(OptimizerTlsTest, MutualTls) {
  ASSERT_OK_AND_ASSIGN(auto optimizer, Create(ServerTls(true)));
  const Pki& pki = Certificates();
  const int port = optimizer->port();
  EXPECT_EQ(Call(Channel("localhost", port, {pki.ca})).error_code(), grpc::StatusCode::UNAVAILABLE);
  grpc::Status st = Call(Channel("localhost", port, {pki.ca, pki.client_cert, pki.client_key}));
  EXPECT_TRUE(st.ok()) << st.error_message();

  // hapi-client's health check against it.
  const std::string out = tmp_.Join("out.txt");
  EXPECT_EQ(
      Shell(absl::StrCat(HAPI_CLIENT_BINARY, " --target localhost:", port, " --ca_cert ", pki.ca,
                         " --client_cert ", pki.client_cert, " --client_key ", pki.client_key,
                         " health --service hapi.v1.Optimizer > ", out, " 2>&1")),
      0)
      << ReadBytes(out);
}

TEST_F(OptimizerTlsTest, BadFilesAreClearErrorsAtCreate) {
  ServerTlsOptions tls = ServerTls(false);
  tls.cert_file = tmp_.Join("missing.pem");
  EXPECT_THAT(Create(tls).status(),
              StatusIs(absl::StatusCode::kNotFound,
                       AllOf(HasSubstr("tls_cert"), HasSubstr(tls.cert_file))));
  tls = ServerTls(false);
  tls.cert_file = "";
  EXPECT_THAT(Create(tls).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("both or neither")));
}

}  // namespace
}  // namespace testing
}  // namespace hapi
