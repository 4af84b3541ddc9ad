#!/usr/bin/env bash
# The sanitizer and static-analysis part of the test command, on the torch-free
# part of HAPI Serve (LibTorch is not instrumented; the server and optimizer
# libraries know models only through the model seam, and the server tests use
# the fake model). Two clang builds:
#
#   build-asan  AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer),
#               and -Wthread-safety -Werror: every ABSL_GUARDED_BY annotation is
#               checked while compiling. Runs every torch-free test and the
#               libFuzzer targets' short runs over their seed corpora.
#   build-tsan  ThreadSanitizer. Runs the concurrency tests: the batcher,
#               servables and hot swap, the streams (server_test), the Open
#               Inference Protocol's batched calls (oip_test), the live
#               monitor's shadow and repair threads (live_monitor_test), and the
#               optimizer's job manager (optimizer_service_test,
#               optimizer_state_test). Debian's libraries are not instrumented:
#               tests/sanitizers/ says what that takes (an LD_PRELOADed shim that
#               shows absl::Mutex to TSan, and suppressions for gRPC internals).
#
# Usage: scripts/check-sanitizers.sh [asan|tsan]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
CTEST_JOBS=${CTEST_JOBS:-1}
export CCACHE_BASEDIR="$PWD"
export CCACHE_NOHASHDIR=1
SUPP="$PWD/tests/sanitizers"

configure() {  # dir, sanitize list, extra cmake args...
  local dir=$1 sanitize=$2
  shift 2
  if [[ ! -f "$dir/build.ninja" ]]; then
    cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DHAPI_WITH_TORCH=OFF -DHAPI_BUILD_BENCH=OFF -DHAPI_WERROR=ON \
      -DHAPI_SANITIZE="$sanitize" "$@"
  fi
}

run_asan() {
  local dir=${ASAN_BUILD_DIR:-build-asan}
  configure "$dir" address,undefined -DHAPI_FUZZ=ON
  ninja -C "$dir" -j "$JOBS"
  echo "thread-safety analysis: clean"
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1"
  export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  (cd "$dir" && ctest --output-on-failure --timeout 900 -j "$CTEST_JOBS")
  echo "asan+ubsan: clean"
}

run_tsan() {
  local dir=${TSAN_BUILD_DIR:-build-tsan}
  configure "$dir" thread
  ninja -C "$dir" -j "$JOBS" server_test oip_test live_monitor_test optimizer_service_test \
    optimizer_state_test hapi_tsan_absl
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$SUPP/tsan.supp"
  # Debian's Abseil is not instrumented: this shows its Mutex and CondVar to
  # TSan (tests/sanitizers/absl_mutex_tsan.cc).
  export LD_PRELOAD="$PWD/$dir/libhapi_tsan_absl.so"
  local t
  for t in tests/server/server_test tests/server/oip_test tests/server/live_monitor_test \
    tests/optimizer/optimizer_service_test tests/optimizer/optimizer_state_test; do
    echo "tsan: $t"
    (cd "$dir/$(dirname "$t")" && "./$(basename "$t")" --gtest_brief=1)
  done
  unset LD_PRELOAD
  echo "tsan: clean"
}

stages=("$@")
((${#stages[@]})) || stages=(asan tsan)
for s in "${stages[@]}"; do
  case "$s" in
    asan) run_asan ;;
    tsan) run_tsan ;;
    *)
      echo "usage: $0 [asan|tsan]..." >&2
      exit 2
      ;;
  esac
done
