// Start-up pieces shared by the service binaries.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace hapi {

// The operator token: `token_file`'s contents (trimmed) when given, else `token`.
absl::StatusOr<std::string> ResolveToken(const std::string& token, const std::string& token_file);

// Serves `registry` on http://<address>/metrics; nullptr when `address` is
// empty. UNAVAILABLE when the address cannot be bound.
absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetrics(
    const std::string& address, const std::shared_ptr<prometheus::Registry>& registry);

// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts
// afterwards; call first thing in main. WaitForTerminationSignal then takes
// them synchronously (no async-signal-safety traps).
void BlockTerminationSignals();
// Blocks until SIGINT or SIGTERM arrives; returns it.
int WaitForTerminationSignal();

}  // namespace hapi
