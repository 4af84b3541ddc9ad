// Makes absl::Mutex and absl::CondVar visible to ThreadSanitizer.
//
// The project links Debian's shared Abseil, which is not built with
// -fsanitize=thread: TSan sees neither its locks nor the atomics inside them,
// and reports every access guarded by an absl::Mutex as a race. This library
// is LD_PRELOADed into the TSan test runs (scripts/check-sanitizers.sh). It
// interposes the Mutex and CondVar entry points, calls Abseil's own
// implementation (dlsym RTLD_NEXT), and tells TSan about the happens-before
// edges each one makes: a release of the mutex before it is given up, an
// acquire once it is held again. Conditions are evaluated by Abseil while the
// mutex is held, sometimes on another thread, so each Condition is wrapped to
// acquire the mutex before it runs and release it after.
//
// Debian 12's Abseil only (inline namespace debian3): another Abseil build
// makes dlsym fail, and the library says so and aborts.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"

// TSan's interface, weak: a child process without the TSan runtime (a tool a
// test starts) inherits LD_PRELOAD and must still run.
extern "C" {
void __tsan_acquire(void* addr) __attribute__((weak));
void __tsan_release(void* addr) __attribute__((weak));
}

#pragma clang diagnostic ignored "-Wthread-safety-analysis"

namespace {

void Acquire(const void* mu) {
  if (__tsan_acquire) __tsan_acquire(const_cast<void*>(mu));
}
void Release(const void* mu) {
  if (__tsan_release) __tsan_release(const_cast<void*>(mu));
}

template <typename F>
F Real(const char* symbol) {
  void* f = dlsym(RTLD_NEXT, symbol);
  if (f == nullptr) {
    std::fprintf(stderr, "absl_mutex_tsan: %s not found in Abseil: %s\n", symbol, dlerror());
    std::abort();
  }
  return reinterpret_cast<F>(f);
}

#define HAPI_REAL(type, symbol) static const auto real = Real<type>(symbol);

// A Condition that acquires `mu` for TSan around the original's evaluation.
struct Wrapped {
  const absl::Mutex* mu;
  const absl::Condition* cond;
  static bool Eval(Wrapped* w) {
    // Held while it runs; whoever takes the mutex next comes after it.
    Acquire(w->mu);
    const bool result = w->cond->Eval();
    Release(w->mu);
    return result;
  }
};

using M = absl::Mutex;
using C = absl::Condition;

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  HAPI_REAL(void (*)(M*), "_ZN4absl7debian35Mutex4LockEv");
  real(this);
  Acquire(this);
}
void Mutex::ReaderLock() {
  HAPI_REAL(void (*)(M*), "_ZN4absl7debian35Mutex10ReaderLockEv");
  real(this);
  Acquire(this);
}
bool Mutex::TryLock() {
  HAPI_REAL(bool (*)(M*), "_ZN4absl7debian35Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}
bool Mutex::ReaderTryLock() {
  HAPI_REAL(bool (*)(M*), "_ZN4absl7debian35Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}
void Mutex::Unlock() {
  HAPI_REAL(void (*)(M*), "_ZN4absl7debian35Mutex6UnlockEv");
  Release(this);
  real(this);
}
void Mutex::ReaderUnlock() {
  HAPI_REAL(void (*)(M*), "_ZN4absl7debian35Mutex12ReaderUnlockEv");
  Release(this);
  real(this);
}

void Mutex::Await(const Condition& cond) {
  HAPI_REAL(void (*)(M*, const C&), "_ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE");
  Wrapped w{this, &cond};
  Release(this);
  real(this, Condition(&Wrapped::Eval, &w));
  Acquire(this);
}
bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  HAPI_REAL(bool (*)(M*, const C&, absl::Time),
            "_ZN4absl7debian35Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Wrapped w{this, &cond};
  Release(this);
  const bool ok = real(this, Condition(&Wrapped::Eval, &w), deadline);
  Acquire(this);
  return ok;
}
bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  HAPI_REAL(bool (*)(M*, const C&, absl::Duration),
            "_ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Wrapped w{this, &cond};
  Release(this);
  const bool ok = real(this, Condition(&Wrapped::Eval, &w), timeout);
  Acquire(this);
  return ok;
}

void Mutex::LockWhen(const Condition& cond) {
  HAPI_REAL(void (*)(M*, const C&), "_ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE");
  Wrapped w{this, &cond};
  real(this, Condition(&Wrapped::Eval, &w));
  Acquire(this);
}
void Mutex::ReaderLockWhen(const Condition& cond) {
  HAPI_REAL(void (*)(M*, const C&), "_ZN4absl7debian35Mutex14ReaderLockWhenERKNS0_9ConditionE");
  Wrapped w{this, &cond};
  real(this, Condition(&Wrapped::Eval, &w));
  Acquire(this);
}
bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  HAPI_REAL(bool (*)(M*, const C&, absl::Time),
            "_ZN4absl7debian35Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Wrapped w{this, &cond};
  const bool ok = real(this, Condition(&Wrapped::Eval, &w), deadline);
  Acquire(this);
  return ok;
}
bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  HAPI_REAL(bool (*)(M*, const C&, absl::Duration),
            "_ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Wrapped w{this, &cond};
  const bool ok = real(this, Condition(&Wrapped::Eval, &w), timeout);
  Acquire(this);
  return ok;
}
bool Mutex::ReaderLockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  HAPI_REAL(bool (*)(M*, const C&, absl::Time),
            "_ZN4absl7debian35Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Wrapped w{this, &cond};
  const bool ok = real(this, Condition(&Wrapped::Eval, &w), deadline);
  Acquire(this);
  return ok;
}
bool Mutex::ReaderLockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  HAPI_REAL(bool (*)(M*, const C&, absl::Duration),
            "_ZN4absl7debian35Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Wrapped w{this, &cond};
  const bool ok = real(this, Condition(&Wrapped::Eval, &w), timeout);
  Acquire(this);
  return ok;
}

void CondVar::Wait(Mutex* mu) {
  HAPI_REAL(void (*)(CondVar*, M*), "_ZN4absl7debian37CondVar4WaitEPNS0_5MutexE");
  Release(mu);
  real(this, mu);
  Acquire(mu);
}
bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  HAPI_REAL(bool (*)(CondVar*, M*, absl::Time),
            "_ZN4absl7debian37CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Release(mu);
  const bool timed_out = real(this, mu, deadline);
  Acquire(mu);
  return timed_out;
}
bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  HAPI_REAL(bool (*)(CondVar*, M*, absl::Duration),
            "_ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Release(mu);
  const bool timed_out = real(this, mu, timeout);
  Acquire(mu);
  return timed_out;
}

// BlockingCounter counts down with an atomic inside the library: every
// DecrementCount comes before Wait returns.
bool BlockingCounter::DecrementCount() {
  HAPI_REAL(bool (*)(BlockingCounter*), "_ZN4absl7debian315BlockingCounter14DecrementCountEv");
  Release(this);
  return real(this);
}
void BlockingCounter::Wait() {
  HAPI_REAL(void (*)(BlockingCounter*), "_ZN4absl7debian315BlockingCounter4WaitEv");
  real(this);
  Acquire(this);
}

ABSL_NAMESPACE_END
}  // namespace absl
