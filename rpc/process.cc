#include "rpc/process.h"

#include <pthread.h>
#include <signal.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/files.h"

namespace hapi {

absl::StatusOr<std::string> ResolveToken(const std::string& token, const std::string& token_file) {
  if (token_file.empty()) return token;
  absl::StatusOr<std::string> t = ReadFile(token_file);
  if (!t.ok())
    return absl::Status(t.status().code(), absl::StrCat("admin token: ", t.status().message()));
  return std::string(absl::StripAsciiWhitespace(*t));
}

absl::StatusOr<std::unique_ptr<prometheus::Exposer>> StartMetrics(
    const std::string& address, const std::shared_ptr<prometheus::Registry>& registry) {
  if (address.empty()) return std::unique_ptr<prometheus::Exposer>();
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(address);
    exposer->RegisterCollectable(registry);
    return exposer;
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
}

namespace {
sigset_t TerminationSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}
}  // namespace

void BlockTerminationSignals() {
  sigset_t set = TerminationSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

int WaitForTerminationSignal() {
  sigset_t set = TerminationSignals();
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  return sig;
}

}  // namespace hapi
