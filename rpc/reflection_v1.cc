#include "rpc/reflection_v1.h"

#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/impl/server_initializer.h"

namespace hapi {
namespace {

namespace reflection = ::grpc::reflection::v1;
using ::google::protobuf::Descriptor;
using ::google::protobuf::DescriptorPool;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::FileDescriptor;

class ReflectionV1Service final : public reflection::ServerReflection::Service {
 public:
  // The services of the server this one is registered on, once it started.
  void SetServices(std::vector<std::string> services) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    services_ = std::move(services);
  }

  // One response per request, in order, until the client half-closes.
  grpc::Status ServerReflectionInfo(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<reflection::ServerReflectionResponse,
                               reflection::ServerReflectionRequest>* stream) override {
    reflection::ServerReflectionRequest request;
    while (stream->Read(&request)) {
      if (!stream->Write(Answer(request))) break;
    }
    return grpc::Status::OK;
  }

 private:
  reflection::ServerReflectionResponse Answer(const reflection::ServerReflectionRequest& request)
      ABSL_LOCKS_EXCLUDED(mu_) {
    using Request = reflection::ServerReflectionRequest;
    reflection::ServerReflectionResponse response;
    response.set_valid_host(request.host());
    *response.mutable_original_request() = request;
    const DescriptorPool& pool = *DescriptorPool::generated_pool();
    grpc::Status status;
    switch (request.message_request_case()) {
      case Request::kFileByFilename: {
        const std::string& name = request.file_by_filename();
        status = AddFile(pool.FindFileByName(name), absl::StrCat("file ", name), &response);
        break;
      }
      case Request::kFileContainingSymbol: {
        const std::string& symbol = request.file_containing_symbol();
        status = AddFile(pool.FindFileContainingSymbol(symbol), absl::StrCat("symbol ", symbol),
                         &response);
        break;
      }
      case Request::kFileContainingExtension:
        status = FileContainingExtension(pool, request.file_containing_extension(), &response);
        break;
      case Request::kAllExtensionNumbersOfType:
        status = AllExtensionNumbers(pool, request.all_extension_numbers_of_type(), &response);
        break;
      case Request::kListServices: {
        reflection::ListServiceResponse* list = response.mutable_list_services_response();
        absl::MutexLock lock(&mu_);
        for (const std::string& name : services_) list->add_service()->set_name(name);
        break;
      }
      default:
        status = grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                              "the reflection request sets no message_request this server knows");
    }
    if (!status.ok()) {
      reflection::ErrorResponse* error = response.mutable_error_response();
      error->set_error_code(status.error_code());
      error->set_error_message(status.error_message());
    }
    return response;
  }

  static grpc::Status FileContainingExtension(const DescriptorPool& pool,
                                              const reflection::ExtensionRequest& ext,
                                              reflection::ServerReflectionResponse* response) {
    const Descriptor* type = pool.FindMessageTypeByName(ext.containing_type());
    if (type == nullptr) return TypeNotFound(ext.containing_type());
    const FieldDescriptor* field = pool.FindExtensionByNumber(type, ext.extension_number());
    return AddFile(
        field == nullptr ? nullptr : field->file(),
        absl::StrCat("extension ", ext.extension_number(), " of ", ext.containing_type()),
        response);
  }

  static grpc::Status AllExtensionNumbers(const DescriptorPool& pool, const std::string& name,
                                          reflection::ServerReflectionResponse* response) {
    const Descriptor* type = pool.FindMessageTypeByName(name);
    if (type == nullptr) return TypeNotFound(name);
    std::vector<const FieldDescriptor*> extensions;
    pool.FindAllExtensions(type, &extensions);
    reflection::ExtensionNumberResponse* numbers =
        response->mutable_all_extension_numbers_response();
    numbers->set_base_type_name(type->full_name());
    for (const FieldDescriptor* e : extensions) numbers->add_extension_number(e->number());
    return grpc::Status::OK;
  }

  static grpc::Status TypeNotFound(const std::string& name) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("message type ", name, " not found"));
  }

  // `file` and the files it imports, directly or not, each once, `file`
  // first; NOT_FOUND naming `what` when `file` is null.
  static grpc::Status AddFile(const FileDescriptor* file, const std::string& what,
                              reflection::ServerReflectionResponse* response) {
    if (file == nullptr) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat(what, " not found"));
    }
    reflection::FileDescriptorResponse* files = response->mutable_file_descriptor_response();
    std::set<std::string> seen = {file->name()};
    std::vector<const FileDescriptor*> pending = {file};
    while (!pending.empty()) {
      const FileDescriptor* f = pending.back();
      pending.pop_back();
      google::protobuf::FileDescriptorProto proto;
      f->CopyTo(&proto);
      proto.SerializeToString(files->add_file_descriptor_proto());
      for (int i = 0; i < f->dependency_count(); ++i) {
        if (seen.insert(f->dependency(i)->name()).second) pending.push_back(f->dependency(i));
      }
    }
    return grpc::Status::OK;
  }

  absl::Mutex mu_;
  std::vector<std::string> services_ ABSL_GUARDED_BY(mu_);
};

// Registers the service when the server is created and tells it the
// server's services once the server has started (the health service is
// registered only then).
class ReflectionV1Plugin final : public grpc::ServerBuilderPlugin {
 public:
  std::string name() override { return "hapi_reflection_v1"; }
  void InitServer(grpc::ServerInitializer* si) override { si->RegisterService(service_); }
  void Finish(grpc::ServerInitializer* si) override {
    service_->SetServices(*si->GetServiceList());
  }
  void ChangeArguments(const std::string& /*name*/, void* /*value*/) override {}
  bool has_sync_methods() const override { return service_->has_synchronous_methods(); }
  bool has_async_methods() const override { return service_->has_async_methods(); }

 private:
  const std::shared_ptr<ReflectionV1Service> service_ = std::make_shared<ReflectionV1Service>();
};

class ReflectionV1Option final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->push_back(std::make_unique<ReflectionV1Plugin>());
  }
};

}  // namespace

void AddReflectionV1(grpc::ServerBuilder* builder) {
  builder->SetOption(std::make_unique<ReflectionV1Option>());
}

}  // namespace hapi
