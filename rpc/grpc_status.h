// The one place absl::Status becomes grpc::Status, and operator tokens are
// checked. Shared by every gRPC front end.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"

namespace hapi {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// OK when `token` is empty (no protection) or the call carries the metadata
// "authorization: Bearer <token>". UNAUTHENTICATED without the header,
// PERMISSION_DENIED with a wrong token.
absl::Status CheckToken(const grpc::ServerContextBase& context, const std::string& token);

}  // namespace hapi
