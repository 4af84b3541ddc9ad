// grpc.reflection.v1.ServerReflection, for both servers. Debian 12's gRPC
// 1.51 plugin (grpc::reflection::InitProtoReflectionServerBuilderPlugin)
// serves only grpc.reflection.v1alpha; current grpcurl and Postman ask for v1
// first. This answers v1 from the same source, the generated descriptor pool:
// the services registered on the server, and the .proto files (with their
// transitive dependencies) that define a file name, symbol or extension.
// Keep the v1alpha plugin as well, for older clients.
#pragma once

#include "grpcpp/grpcpp.h"

namespace hapi {

// Adds grpc.reflection.v1.ServerReflection to the server `builder` builds. Its
// list_services answer names every service registered on that server
// (including health and both reflection versions), as of BuildAndStart.
void AddReflectionV1(grpc::ServerBuilder* builder);

}  // namespace hapi
