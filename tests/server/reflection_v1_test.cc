// grpc.reflection.v1.ServerReflection on both servers, over a real channel
// to 127.0.0.1 through the generated stub, as grpcurl and Postman use it:
// list the services, fetch the file defining a symbol with its imports, build
// a descriptor pool from the answer, and get error_response for unknown
// names.
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/fake_model.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/descriptor_database.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "optimizer/optimizer_process.h"
#include "server/inference_server.h"
#include "tests/status_matchers.h"
#include "tests/test_util.h"

namespace hapi {
namespace testing {
namespace {

namespace reflection = ::grpc::reflection::v1;
using ::google::protobuf::FileDescriptorProto;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsSupersetOf;

// Which server, and the service it exists for.
struct Target {
  std::string name;
  std::string service;
};

class ReflectionV1Test : public ::testing::TestWithParam<Target> {
 protected:
  void SetUp() override {
    if (GetParam().name == "inference") {
      InferenceServerOptions o;
      o.listen = "127.0.0.1:0";
      o.servables.repository = tmp_.Join("repository");
      o.servables.load_model = FakeModelLoader(absl::ZeroDuration());
      // No variant: NOT_SERVING, but reflection answers all the same.
      ASSERT_OK_AND_ASSIGN(inference_, InferenceServer::Start(std::move(o)));
      port_ = inference_->port();
    } else {
      OptimizerOptions o;
      o.listen = "127.0.0.1:0";
      o.repository = tmp_.Join("repository");
      o.metrics_address = "";
      o.gnuplot = "";
      o.profiler = "";
      ASSERT_OK_AND_ASSIGN(optimizer_, OptimizerProcess::Create(std::move(o)));
      port_ = optimizer_->port();
    }
    stub_ = reflection::ServerReflection::NewStub(
        grpc::CreateChannel(absl::StrCat("127.0.0.1:", port_), grpc::InsecureChannelCredentials()));
  }

  // Sends `requests` on one stream and returns the answers, in order.
  std::vector<reflection::ServerReflectionResponse> Ask(
      const std::vector<reflection::ServerReflectionRequest>& requests) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    auto stream = stub_->ServerReflectionInfo(&ctx);
    for (const auto& r : requests) EXPECT_TRUE(stream->Write(r));
    EXPECT_TRUE(stream->WritesDone());
    std::vector<reflection::ServerReflectionResponse> responses;
    reflection::ServerReflectionResponse response;
    while (stream->Read(&response)) responses.push_back(response);
    grpc::Status st = stream->Finish();
    EXPECT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(responses.size(), requests.size());
    return responses;
  }
  reflection::ServerReflectionResponse AskOne(const reflection::ServerReflectionRequest& request) {
    std::vector<reflection::ServerReflectionResponse> r = Ask({request});
    return r.empty() ? reflection::ServerReflectionResponse() : r[0];
  }

  static reflection::ServerReflectionRequest Symbol(const std::string& symbol) {
    reflection::ServerReflectionRequest r;
    r.set_host("localhost");
    r.set_file_containing_symbol(symbol);
    return r;
  }

  // The answer's files, parsed, by name; the first one's name in `first`.
  static std::map<std::string, FileDescriptorProto> Files(
      const reflection::ServerReflectionResponse& response, std::string* first = nullptr) {
    std::map<std::string, FileDescriptorProto> files;
    EXPECT_TRUE(response.has_file_descriptor_response()) << response.DebugString();
    for (const std::string& bytes : response.file_descriptor_response().file_descriptor_proto()) {
      FileDescriptorProto file;
      EXPECT_TRUE(file.ParseFromString(bytes));
      if (first != nullptr && files.empty()) *first = file.name();
      EXPECT_TRUE(files.emplace(file.name(), file).second) << "sent twice: " << file.name();
    }
    return files;
  }

  static void ExpectNotFound(const reflection::ServerReflectionResponse& response,
                             const std::string& name) {
    ASSERT_TRUE(response.has_error_response()) << response.DebugString();
    EXPECT_EQ(response.error_response().error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(response.error_response().error_message(), HasSubstr(name));
  }

  ScopedTempDir tmp_;
  std::unique_ptr<InferenceServer> inference_;
  std::unique_ptr<OptimizerProcess> optimizer_;
  int port_ = 0;
  std::unique_ptr<reflection::ServerReflection::Stub> stub_;
};

TEST_P(ReflectionV1Test, ListsTheServicesOfThisServer) {
  reflection::ServerReflectionRequest request;
  request.set_list_services("*");
  reflection::ServerReflectionResponse response = AskOne(request);
  ASSERT_TRUE(response.has_list_services_response()) << response.DebugString();
  std::vector<std::string> names;
  for (const auto& s : response.list_services_response().service()) names.push_back(s.name());
  EXPECT_THAT(names, IsSupersetOf({GetParam().service, std::string("grpc.health.v1.Health"),
                                   std::string("grpc.reflection.v1.ServerReflection"),
                                   std::string("grpc.reflection.v1alpha.ServerReflection")}));
  // Only this server's: the other hapi service is not listed.
  const std::string other =
      GetParam().service == "hapi.v1.Inference" ? "hapi.v1.Optimizer" : "hapi.v1.Inference";
  EXPECT_THAT(names, ::testing::Not(Contains(other)));
  // The request is echoed, as the protocol says.
  EXPECT_EQ(response.original_request().list_services(), "*");
}

TEST_P(ReflectionV1Test, FileContainingTheServiceDescribesItWithItsImports) {
  const std::string& service = GetParam().service;
  reflection::ServerReflectionResponse response = AskOne(Symbol(service));
  EXPECT_EQ(response.valid_host(), "localhost");
  EXPECT_EQ(response.original_request().file_containing_symbol(), service);
  std::string first;
  std::map<std::string, FileDescriptorProto> files = Files(response, &first);
  ASSERT_TRUE(files.count(first));
  const FileDescriptorProto& file = files[first];
  EXPECT_EQ(file.package(), "hapi.v1");
  bool found = false;
  for (const auto& s : file.service()) found |= absl::StrCat("hapi.v1.", s.name()) == service;
  EXPECT_TRUE(found) << file.DebugString();

  // Enough to work with, as a client would: every import is in the answer,
  // and a pool built from it alone resolves the service and its methods.
  google::protobuf::SimpleDescriptorDatabase db;
  for (const auto& [name, f] : files) {
    for (const std::string& dep : f.dependency()) EXPECT_TRUE(files.count(dep)) << dep;
    ASSERT_TRUE(db.Add(f));
  }
  google::protobuf::DescriptorPool pool(&db);
  const google::protobuf::ServiceDescriptor* descriptor = pool.FindServiceByName(service);
  ASSERT_NE(descriptor, nullptr);
  EXPECT_GT(descriptor->method_count(), 0);
  const google::protobuf::MethodDescriptor* method = descriptor->method(0);
  EXPECT_NE(method->input_type(), nullptr);

  // The same file by method name and by file name.
  reflection::ServerReflectionRequest by_file;
  by_file.set_file_by_filename(first);
  std::vector<reflection::ServerReflectionResponse> more =
      Ask({Symbol(method->full_name()), by_file});
  ASSERT_EQ(more.size(), 2u);
  for (const auto& r : more) {
    std::string name;
    Files(r, &name);
    EXPECT_EQ(name, first);
  }
}

TEST_P(ReflectionV1Test, UnknownNamesGetNotFound) {
  reflection::ServerReflectionRequest file;
  file.set_file_by_filename("hapi/v1/nothing.proto");
  reflection::ServerReflectionRequest type;
  type.set_all_extension_numbers_of_type("hapi.v1.NoSuchMessage");
  reflection::ServerReflectionRequest ext;
  ext.mutable_file_containing_extension()->set_containing_type("hapi.v1.NoSuchMessage");
  ext.mutable_file_containing_extension()->set_extension_number(100);
  reflection::ServerReflectionRequest no_ext;
  no_ext.mutable_file_containing_extension()->set_containing_type("google.protobuf.FieldOptions");
  no_ext.mutable_file_containing_extension()->set_extension_number(536870000);
  // One stream: an error answers its request and the stream goes on.
  std::vector<reflection::ServerReflectionResponse> r =
      Ask({Symbol("hapi.v1.NoSuchService"), file, type, ext, no_ext, Symbol(GetParam().service)});
  ASSERT_EQ(r.size(), 6u);
  ExpectNotFound(r[0], "hapi.v1.NoSuchService");
  ExpectNotFound(r[1], "hapi/v1/nothing.proto");
  ExpectNotFound(r[2], "hapi.v1.NoSuchMessage");
  ExpectNotFound(r[3], "hapi.v1.NoSuchMessage");
  ExpectNotFound(r[4], "536870000");
  EXPECT_TRUE(r[5].has_file_descriptor_response());

  reflection::ServerReflectionRequest empty;  // no message_request
  EXPECT_EQ(AskOne(empty).error_response().error_code(), grpc::StatusCode::UNIMPLEMENTED);
}

TEST_P(ReflectionV1Test, ExtensionNumbersOfAKnownType) {
  reflection::ServerReflectionRequest request;
  request.set_all_extension_numbers_of_type("google.protobuf.FileDescriptorProto");
  reflection::ServerReflectionResponse response = AskOne(request);
  ASSERT_TRUE(response.has_all_extension_numbers_response()) << response.DebugString();
  EXPECT_EQ(response.all_extension_numbers_response().base_type_name(),
            "google.protobuf.FileDescriptorProto");
}

INSTANTIATE_TEST_SUITE_P(BothServers, ReflectionV1Test,
                         ::testing::Values(Target{"inference", "hapi.v1.Inference"},
                                           Target{"optimizer", "hapi.v1.Optimizer"}),
                         [](const ::testing::TestParamInfo<Target>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace testing
}  // namespace hapi
