// gRPC's callback API hands a reactor between threads inside libgrpc: an
// operation started on one thread completes, and calls the reactor back, on
// another. Debian's libgrpc is not instrumented, so ThreadSanitizer cannot see
// that order and takes a reactor's own fields for racing. The project's
// reactors state it instead: HandOffReactor just before starting an operation
// (StartRead, StartWrite, Finish), TakeOverReactor first thing in every
// callback (OnReadDone, OnWriteDone, OnCancel, OnDone). Both are nothing
// without ThreadSanitizer.
#pragma once

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HAPI_TSAN_HANDOFF 1
#endif
#endif

#ifdef HAPI_TSAN_HANDOFF
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace hapi {

inline void HandOffReactor(const void* reactor) {
#ifdef HAPI_TSAN_HANDOFF
  __tsan_release(const_cast<void*>(reactor));
#else
  (void)reactor;
#endif
}

inline void TakeOverReactor(const void* reactor) {
#ifdef HAPI_TSAN_HANDOFF
  __tsan_acquire(const_cast<void*>(reactor));
#else
  (void)reactor;
#endif
}

}  // namespace hapi
